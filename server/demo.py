"""Demo mode: the coordinator takes a plaintext image and plays the client itself.

It runs exactly the client's steps (``mpcvit.client``: preprocess, fixed-point
encode, share, seal to each party, queue, open, add) through the same queue and
parties as private requests. Its responses say ``coordinator_saw_image: true``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from mpcvit.client import ImageError, ImageLike, ImplausibleOutput, decode_image, open_indices, open_output, preprocess, seal_input, softmax
from mpcvit.output_policy import OutputPolicy
from mpcvit.sealing import SealError
from server.catalog import ModelEntry
from server.coordinator import Coordinator, PendingItem
from server.errors import BadRequest, PartyFailed, UnsupportedMedia, from_validation_errors
from server.schemas import MAX_COMPARE_MODELS, CompareJsonRequest, CostsOut, DemoClassifyResponse, DemoJsonRequest

log = logging.getLogger(__name__)

def request_body(json_model: type[BaseModel], multipart_fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of a demo route: multipart with an image file, or the JSON model's schema."""
    image = {
        "type": "string", "format": "binary",
        "description": "PNG or JPEG, each side at least the model's patch grid (input side / patch size; 'x-min-side' is "
                       "the largest grid among the served models), at most the server's max_image_pixels pixels in all",
        "x-image": True,
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["image", *required], "properties": {"image": image, **multipart_fields},
                           "additionalProperties": False},
                "encoding": {"image": {"contentType": "image/png, image/jpeg"}},
            },
            "application/json": {"schema": json_model.model_json_schema()},
        },
    }


_MODEL_FIELD = {"type": "string", "minLength": 1, "maxLength": 200, "x-model-name": True}
DEMO_REQUEST_BODY = request_body(DemoJsonRequest, {"model": _MODEL_FIELD}, ["model"])
COMPARE_REQUEST_BODY = request_body(CompareJsonRequest, {"models": {
    "type": "string", "minLength": 1, "maxLength": 201 * MAX_COMPARE_MODELS,
    "description": f"comma-separated model names, at most {MAX_COMPARE_MODELS}; default: GET /v1/models' compare_default",
    "x-model-names": True,
}}, [])


@dataclass
class ImageInput:
    """A plaintext image from a demo request, with the model field(s) it came with."""

    image: ImageLike
    model: str | None
    models: list[str] | None


async def read_image_input(request: Request, json_model: type[BaseModel], max_pixels: int) -> ImageInput:
    """Parse a multipart upload (field ``image``) or a JSON body (field ``pixels``); 4xx on anything else."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _read_multipart(request, max_pixels, {"image", *json_model.model_fields} - {"pixels"})
    if ctype == "application/json":
        raw = await request.body()
        if not raw.strip():  # as FastAPI says of a missing JSON body on /v1/classify
            raise from_validation_errors([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
        try:
            body = json_model.model_validate_json(raw)
        except ValidationError as exc:
            raise from_validation_errors(exc.errors(include_url=False)) from None
        return ImageInput(body.pixels, getattr(body, "model", None), getattr(body, "models", None))  # type: ignore[attr-defined]
    raise UnsupportedMedia(f"send multipart/form-data with an 'image' file or application/json with 'pixels', not {ctype or 'no content type'!r}")


async def _read_multipart(request: Request, max_pixels: int, fields: set[str]) -> ImageInput:
    form = await request.form(max_files=1, max_fields=8)
    unknown = sorted(set(form.keys()) - fields)
    if unknown:  # as the JSON body's extra="forbid"
        raise from_validation_errors([{"loc": (name,), "msg": "Extra inputs are not permitted"} for name in unknown])
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise from_validation_errors([{"loc": ("image",), "msg": "Field required (a file field named 'image')"}])
    data = await upload.read()
    if not data:
        raise BadRequest("the uploaded image is empty")
    try:
        image = decode_image(data, max_pixels)
    except ImageError as exc:
        raise BadRequest(str(exc)) from exc
    model = form.get("model")
    models = form.get("models")
    names = [m.strip() for m in models.split(",") if m.strip()] if isinstance(models, str) else None
    if names is not None and not 1 <= len(names) <= MAX_COMPARE_MODELS:
        raise from_validation_errors([{"loc": ("models",), "msg": f"give 1 to {MAX_COMPARE_MODELS} model names, got {len(names)}"}])
    return ImageInput(image, model if isinstance(model, str) and model else None, names)


def image_side(image: ImageLike) -> tuple[int, int]:
    """(H, W) of a PIL image or an array shaped (H, W), (H, W, C) or (C, H, W)."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    shape = tuple(np.asarray(image).shape)
    if len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3):
        return shape[1], shape[2]
    if len(shape) == 3 and shape[0] not in (1, 3):
        return shape[0], shape[1]
    return (shape[-2], shape[-1]) if len(shape) == 3 else (shape[0], shape[1])


def check_image_size(image: ImageLike, entry: ModelEntry) -> None:
    """400 for an image with fewer pixels per side than the model has patches: resizing would invent them."""
    height, width = image_side(image)
    grid = entry.spec.grid
    if height < grid or width < grid:
        raise BadRequest(
            f"the image is {width}x{height} pixels, smaller than model {entry.name}'s {grid}x{grid} patch grid: "
            f"send at least {grid}x{grid} (it is resized to {entry.input_shape[2]}x{entry.input_shape[1]})"
        )


async def classify_plaintext(coordinator: Coordinator, model: str, image: ImageLike, deadline: float) -> DemoClassifyResponse:
    """Play the client for one model: preprocess, share, seal, run the secure forward, open, add."""
    started = time.monotonic()
    entry = coordinator.model(model)
    check_image_size(image, entry)
    try:
        x = preprocess(image, entry.input_shape)
    except ImageError as exc:
        raise BadRequest(str(exc)) from exc
    keys = await coordinator.keys()
    await coordinator.ensure_loaded(entry)
    sealed = seal_input(x, keys, entry.precision_bits, model=model)
    item = PendingItem(model, sealed.request_id, sealed.keypair.public, sealed.shares, deadline)
    result = await coordinator.submit(item)
    policy = OutputPolicy.parse(result.output_policy)
    try:
        if not policy.reveals_logits:  # the owner's policy: the class (and top K) only, no logits to show
            indices = open_indices(sealed, result.output_shares, keys, entry.spec.num_classes, policy.indices)
        else:
            logits = open_output(sealed, result.output_shares, keys, result.precision_bits)
    except SealError as exc:
        raise PartyFailed(f"a party's output share does not open: {exc}") from exc
    except ImplausibleOutput as exc:  # the integrity net (mpcvit.client): counted, never returned
        coordinator.implausible_answers += 1
        coordinator.metrics.implausible.labels(model).inc()
        raise PartyFailed(f"the secure answer was garbage and was not returned: {exc}") from exc
    classes = entry.classes
    if not policy.reveals_logits:
        idx = indices[0]
        return DemoClassifyResponse(
            model=model, request_id=sealed.request_id, class_index=idx, class_name=classes[idx] if idx < len(classes) else str(idx),
            probabilities=[], logits=[], output_policy=str(policy), top_k=indices, costs=CostsOut.model_validate(result.costs.to_dict()),
            queue_seconds=result.queue_seconds, batch_size=result.batch_size, latency_seconds=time.monotonic() - started,
        )
    probs = softmax(logits)
    idx = int(np.argmax(probs))
    return DemoClassifyResponse(
        model=model, request_id=sealed.request_id, class_index=idx, class_name=classes[idx] if idx < len(classes) else str(idx),
        probabilities=probs, logits=[float(v) for v in logits], costs=CostsOut.model_validate(result.costs.to_dict()),
        queue_seconds=result.queue_seconds, batch_size=result.batch_size, latency_seconds=time.monotonic() - started,
    )
