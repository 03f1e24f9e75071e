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
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from mpcvit.client import ImageError, ImageLike, decode_image, open_output, preprocess, seal_input, softmax
from mpcvit.sealing import SealError
from server.coordinator import Coordinator, PendingItem
from server.errors import BadRequest, PartyFailed, UnsupportedMedia
from server.schemas import CostsOut, DemoClassifyResponse

log = logging.getLogger(__name__)

DEMO_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": "PNG or JPEG"},
                    "model": {"type": "string"},
                    "models": {"type": "string", "description": "compare only: comma-separated model names"},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["pixels"],
                "properties": {
                    "model": {"type": "string"},
                    "models": {"type": "array", "items": {"type": "string"}},
                    "pixels": {"type": "array", "description": "values in [0, 1]: (H, W), (H, W, C) or (C, H, W)"},
                },
            }
        },
    },
}


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
        return await _read_multipart(request, max_pixels)
    if ctype == "application/json":
        try:
            body = json_model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise BadRequest(f"invalid JSON body: {exc.errors(include_url=False)}") from exc
        try:
            pixels = np.asarray(body.pixels, dtype=np.float32)  # type: ignore[attr-defined]
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"'pixels' must be a rectangular array of numbers: {exc}") from exc
        return ImageInput(pixels, getattr(body, "model", None), getattr(body, "models", None))
    raise UnsupportedMedia(f"send multipart/form-data with an 'image' file or application/json with 'pixels', not {ctype or 'no content type'!r}")


async def _read_multipart(request: Request, max_pixels: int) -> ImageInput:
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise BadRequest("multipart body needs a file field named 'image'")
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
    return ImageInput(image, model if isinstance(model, str) and model else None, names)


async def classify_plaintext(coordinator: Coordinator, model: str, image: ImageLike, deadline: float) -> DemoClassifyResponse:
    """Play the client for one model: preprocess, share, seal, run the secure forward, open, add."""
    started = time.monotonic()
    entry = coordinator.model(model)
    try:
        x = preprocess(image, entry.input_shape)
    except ImageError as exc:
        raise BadRequest(str(exc)) from exc
    keys = await coordinator.keys()
    await coordinator.ensure_loaded(entry)
    sealed = seal_input(x, keys, entry.precision_bits, model=model)
    item = PendingItem(model, sealed.request_id, sealed.keypair.public, sealed.shares, deadline)
    result = await coordinator.submit(item)
    try:
        logits = open_output(sealed, result.output_shares, keys, result.precision_bits)
    except SealError as exc:
        raise PartyFailed(f"a party's output share does not open: {exc}") from exc
    probs = softmax(logits)
    idx = int(np.argmax(probs))
    classes = entry.classes
    return DemoClassifyResponse(
        model=model, request_id=sealed.request_id, class_index=idx, class_name=classes[idx] if idx < len(classes) else str(idx),
        probabilities=probs, logits=[float(v) for v in logits], costs=CostsOut.model_validate(result.costs.to_dict()),
        queue_seconds=result.queue_seconds, batch_size=result.batch_size, latency_seconds=time.monotonic() - started,
    )
