"""``POST /v1/compare``: one image (demo mode) through several models, costs and predictions side by side."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from server.deps import AuthDep, CoordinatorDep, SettingsDep
from server.demo import COMPARE_REQUEST_BODY, check_image_size, classify_plaintext, read_image_input
from server.errors import BadRequest, CoordinatorError
from server.routes.classify import ERRORS, request_deadline
from server.schemas import MAX_COMPARE_MODELS, CompareEntry, CompareJsonRequest, CompareResponse

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["compare"])


@router.post(
    "/compare", response_model=CompareResponse, responses=ERRORS, openapi_extra={"requestBody": COMPARE_REQUEST_BODY},
    summary="one image through several models (demo mode): rounds, bytes, latency, predictions",
)
async def compare(request: Request, coordinator: CoordinatorDep, settings: SettingsDep, _auth: AuthDep) -> CompareResponse:
    """Models run one after another so each latency is its own; a model that fails is reported, not fatal.

    Default models: one listed model per variant, softmax ViT, MPCFormer, THE-X, MPCViT, MPCViT+ (``GET /v1/models``'
    ``compare_default``).
    """
    parsed = await read_image_input(request, CompareJsonRequest, settings.max_image_pixels)
    names = parsed.models or coordinator.catalog.compare_defaults()
    if not names:
        raise BadRequest("no models to compare: pass 'models' or put checkpoints in the model directory")
    if len(names) > MAX_COMPARE_MODELS:
        raise BadRequest(f"at most {MAX_COMPARE_MODELS} models per comparison, got {len(names)}")
    entries = [coordinator.model(n) for n in names]  # unknown names -> 404 before any work
    for entry in entries:  # an image too small for any of them -> 400 before any model is loaded
        check_image_size(parsed.image, entry)
    request.state.model = "compare"
    results: list[CompareEntry] = []
    for entry in entries:
        base = dict(model=entry.name, variant=entry.variant, accuracy=entry.accuracy)
        try:
            r = await classify_plaintext(coordinator, entry.name, parsed.image, request_deadline(settings, None))
        except BadRequest:
            raise
        except CoordinatorError as exc:
            log.warning("compare: %s failed: %s", entry.name, exc)
            results.append(CompareEntry(**base, ok=False, error=str(exc)))
            continue
        results.append(CompareEntry(
            **base, ok=True, class_index=r.class_index, class_name=r.class_name, probabilities=r.probabilities,
            costs=r.costs, latency_seconds=r.latency_seconds,
        ))
    return CompareResponse(results=results)
