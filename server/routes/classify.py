"""``POST /v1/classify`` (private mode) and ``POST /v1/classify/demo`` (the coordinator plays the client)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from server.coordinator import Coordinator, PendingItem
from server.deps import AuthDep, CoordinatorDep, SettingsDep
from server.demo import DEMO_REQUEST_BODY, classify_plaintext, read_image_input
from server.errors import BadRequest, from_validation_errors
from server.schemas import (
    CostsOut,
    DemoClassifyResponse,
    DemoJsonRequest,
    ErrorResponse,
    PrivateClassifyRequest,
    PrivateClassifyResponse,
    SealedTensorOut,
)
from server.settings import Settings

router = APIRouter(prefix="/v1", tags=["classify"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 415, 422, 502, 503, 504)}
AES_GCM_TAG = 16


def request_deadline(settings: Settings, deadline_unix_ms: int | None) -> float:
    """The client's deadline, capped at now + request_timeout_s; 400 if it has already passed."""
    now = time.time()
    cap = now + settings.request_timeout_s
    if deadline_unix_ms is None:
        return cap
    deadline = deadline_unix_ms / 1000
    if deadline <= now:
        raise BadRequest(f"the request's deadline ({deadline_unix_ms} ms since the epoch) has already expired")
    return min(deadline, cap)


def check_private_request(body: PrivateClassifyRequest, coordinator: Coordinator) -> None:
    """Checks against the model that the schema cannot state: its input shape, the ciphertext length.

    (Key and nonce lengths are in the schema: 422.)
    """
    entry = coordinator.model(body.model)
    expected = list(entry.input_shape)
    for rank, share in enumerate(body.shares):
        if share.shape != expected:
            raise BadRequest(f"share {rank} has shape {share.shape}; model {body.model} takes {expected} (C, H, W)")
        need = 8 * entry.input_shape[0] * entry.input_shape[1] * entry.input_shape[2] + AES_GCM_TAG
        if len(share.ciphertext) != need:
            raise BadRequest(f"share {rank}: ciphertext is {len(share.ciphertext)} bytes, shape {expected} of int64 needs {need}")


@router.post("/classify", response_model=PrivateClassifyResponse, responses=ERRORS, summary="private classification of sealed shares")
async def classify_private(
    body: PrivateClassifyRequest, request: Request, coordinator: CoordinatorDep, settings: SettingsDep, _auth: AuthDep
) -> PrivateClassifyResponse:
    """Relay each party its sealed input share; return each party's sealed logit share and the costs.

    The coordinator holds no key that opens a share: it never sees the image or the logits.
    """
    request.state.model = body.model
    check_private_request(body, coordinator)
    deadline = request_deadline(settings, body.deadline_unix_ms)
    item = PendingItem(
        body.model, body.request_id, body.client_public_key, (body.shares[0].to_sealed(), body.shares[1].to_sealed()), deadline
    )
    result = await coordinator.submit(item)
    return PrivateClassifyResponse(
        model=body.model, request_id=body.request_id, session_id=result.session_id,
        output_shares=[SealedTensorOut.from_sealed(s) for s in result.output_shares],
        precision_bits=result.precision_bits, costs=CostsOut.model_validate(result.costs.to_dict()),
        queue_seconds=result.queue_seconds, batch_size=result.batch_size,
    )


@router.post(
    "/classify/demo", response_model=DemoClassifyResponse, responses=ERRORS, openapi_extra={"requestBody": DEMO_REQUEST_BODY},
    summary="demo mode: the coordinator sees the image and plays the client",
)
async def classify_demo(request: Request, coordinator: CoordinatorDep, settings: SettingsDep, _auth: AuthDep) -> DemoClassifyResponse:
    """Take a plaintext image (multipart ``image`` + ``model``, or JSON ``{model, pixels}``) and classify it securely.

    The response says ``coordinator_saw_image: true``.
    """
    parsed = await read_image_input(request, DemoJsonRequest, settings.max_image_pixels)
    if not parsed.model:
        raise from_validation_errors([{"loc": ("model",), "msg": "Field required"}])
    request.state.model = parsed.model
    return await classify_plaintext(coordinator, parsed.model, parsed.image, request_deadline(settings, None))
