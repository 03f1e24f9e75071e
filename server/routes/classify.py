"""``POST /v1/classify`` (private mode) and ``POST /v1/classify/demo`` (the coordinator plays the client)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from fastapi.routing import APIRoute

from server.coordinator import Coordinator, PendingItem
from server.deps import AuthDep, CoordinatorDep, SettingsDep
from server.demo import DEMO_REQUEST_BODY, classify_plaintext, read_image_input
from server.errors import BadRequest, UnsupportedMedia, from_validation_errors
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


def is_json(content_type: str | None) -> bool:
    """application/json or application/<anything>+json, any parameters (charset)."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodyRoute(APIRoute):
    """A route whose body model FastAPI parses as JSON: any other content type (or none) is 415 before the body is read.

    (Routes that read their body themselves, the demo routes, have no body field and check their own types.)
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            if not is_json(request.headers.get("content-type")):
                ctype = request.headers.get("content-type", "").split(";")[0].strip()
                raise UnsupportedMedia(f"send the body as application/json (Content-Type: application/json), "
                                       f"not {ctype or 'no content type'!r}")
            return await handler(request)

        return checked


router = APIRouter(prefix="/v1", tags=["classify"], route_class=JsonBodyRoute)

ERROR_REASONS = {
    400: "bad input the schema cannot state: malformed JSON, a share of another shape or size than the model takes, "
         "a share that does not open for its party, an expired deadline, not an image, an image smaller than the model's patch grid",
    401: "missing or wrong bearer token (when the server has one)",
    404: "unknown model, or a checkpoint this server does not serve",
    408: "the request body did not all arrive within the server's body_timeout_s (the connection is then closed)",
    409: "the request id is already in flight, or a party has seen this request id or client key",
    413: "the request body is larger than the server's max_body_bytes",
    415: "the body's Content-Type is not one this route takes (application/json; on the demo routes also multipart/form-data)",
    422: "the body breaks the schema (a field missing, out of range, of the wrong length)",
    502: "a party failed",
    503: "the queue is full or a party is down (Retry-After says when to retry)",
    504: "the deadline passed before the secure forward finished",
}
ERRORS = {code: {"model": ErrorResponse, "description": why} for code, why in ERROR_REASONS.items()}
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


_PROBE_KEY = X25519PrivateKey.generate()  # only to test a client key's order; never seals anything


def is_low_order(public_key: bytes) -> bool:
    """Whether an X25519 public key is a low-order point: its shared secret is all zeros, so no box sealed with it opens."""
    try:
        _PROBE_KEY.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        return True
    return False


def check_private_request(body: PrivateClassifyRequest, coordinator: Coordinator) -> None:
    """Checks that the schema cannot state: the model is one this server serves (404), the shares' shape and ciphertext
    length are the model's, the client key can seal at all (400). All of them come before anything reaches a party,
    so a request that fails them never makes the parties load a model.

    (Key and nonce lengths are in the schema: 422.)
    """
    entry = coordinator.model(body.model)
    if is_low_order(body.client_public_key):
        raise BadRequest("client_public_key is a low-order X25519 point: no box sealed with it opens")
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
        precision_bits=result.precision_bits, output_policy=result.output_policy, costs=CostsOut.model_validate(result.costs.to_dict()),
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
