"""The OpenAPI document with what depends on the served catalog filled in, so that it states the whole contract.

The static schema marks three places with vendor keys; this fills them from the catalog at request time:

| mark | becomes |
|---|---|
| ``x-model-name`` (a string) | ``enum``: every model this coordinator serves by name (``Coordinator.served_names``) |
| ``x-model-names`` (a comma-separated string) | a ``pattern`` of 1 to 8 served names |
| ``x-min-side`` (a pixel array side) / ``x-image`` (an image file) | the largest patch grid among the served models |

and states what the served models fix: ``POST /v1/classify``'s share shape and ciphertext length per input shape.
Every error response is ``ErrorResponse`` (``{"detail": "..."}``), FastAPI's 422 model included.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from server.schemas import MAX_COMPARE_MODELS


def _fill(node: Any, names: list[str], grid: int) -> None:
    if isinstance(node, list):
        for item in node:
            _fill(item, names, grid)
        return
    if not isinstance(node, dict):
        return
    if node.get("x-model-name") and names:
        node["enum"] = names
    if node.get("x-model-names") and names:
        one = "|".join(re.escape(n) for n in names)
        node["pattern"] = f"^(?:{one})(?:,(?:{one})){{0,{MAX_COMPARE_MODELS - 1}}}$"
    if node.get("x-min-side"):
        node["minItems"] = max(int(node.get("minItems", 1)), grid)
        node["x-min-side"] = grid
    if node.get("x-image"):
        node["x-min-side"] = grid
    for value in node.values():
        _fill(value, names, grid)


ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
BODY_ERRORS = {
    400: "malformed JSON, or bad input no schema states (see the route's description)",
    408: "the request body did not all arrive within the server's body_timeout_s (the connection is then closed)",
    413: "the request body is larger than the server's max_body_bytes",
    415: "a Content-Type this route does not take",
    422: "the body breaks the schema",
}


def _errors_as_served(schema: dict[str, Any]) -> None:
    """Every error is ``{"detail": "<one line>"}`` (``server.errors``): FastAPI's own 422 model (a list of objects) is
    replaced by ``ErrorResponse``, and every route with a body or parameters states the 4xx that any such request can get."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorResponse", {"title": "ErrorResponse", "type": "object", "required": ["detail"],
                                            "properties": {"detail": {"type": "string", "title": "Detail"}}})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            wanted: dict[int, str] = {}
            if op.get("parameters"):
                wanted[422] = "a query parameter breaks the schema"
            if op.get("requestBody"):
                wanted.update(BODY_ERRORS)
            for code, why in wanted.items():
                op["responses"].setdefault(str(code), {"description": why})
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and code != "503" or code == "503" and "content" not in response:
                    response["content"] = {"application/json": {"schema": ERROR_REF}}


def _exact_shares(schema: dict[str, Any], coordinator: Any, names: list[str]) -> None:
    """``POST /v1/classify``'s shares, exactly: per served input shape, its models, the shape and the ciphertext length
    (8 * C * H * W + 16 bytes), so that a request the schema admits has a share the model takes."""
    from server.schemas import _exact_b64_pattern  # the same regex the nonce and key use

    components = schema.get("components", {}).get("schemas", {})
    request, share = components.get("PrivateClassifyRequest"), components.get("SealedTensorIn")
    if request is None or share is None or not names:
        return
    groups: dict[tuple[int, ...], list[str]] = {}
    for n in names:
        groups.setdefault(tuple(coordinator.catalog.entries[n].input_shape), []).append(n)
    variants = []
    for shape, models in sorted(groups.items()):
        n = 8 * shape[0] * shape[1] * shape[2] + 16
        length = 4 * ((n + 2) // 3)
        exact_share = copy.deepcopy(share)
        exact_share["properties"]["shape"] = {"type": "array", "items": {"type": "integer"}, "const": list(shape),
                                              "description": f"(C, H, W) = {list(shape)}: the input shape of these models"}
        exact_share["properties"]["ciphertext"] = {**share["properties"]["ciphertext"], "minLength": length, "maxLength": length,
                                                   "pattern": _exact_b64_pattern(n)}
        variant = copy.deepcopy(request)
        variant["properties"]["model"] = {**request["properties"]["model"], "enum": models}
        variant["properties"]["shares"] = {**request["properties"]["shares"], "items": exact_share}
        variant["title"] = f"PrivateClassifyRequest {'x'.join(map(str, shape))}"
        variants.append(variant)
    components["PrivateClassifyRequest"] = variants[0] if len(variants) == 1 else {
        "title": "PrivateClassifyRequest", "description": request.get("description", ""), "oneOf": variants}


def catalog_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` replaced: FastAPI's document (built once) plus the current catalog's names and bounds."""
    static = app.openapi

    def openapi() -> dict[str, Any]:
        schema = copy.deepcopy(static())
        _errors_as_served(schema)
        coordinator = getattr(app.state, "coordinator", None)
        if coordinator is not None:
            names = coordinator.served_names()
            grid = max((coordinator.catalog.entries[n].spec.grid for n in names), default=1)
            _fill(schema, names, grid)
            _exact_shares(schema, coordinator, names)
        return schema

    return openapi
