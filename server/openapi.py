"""The OpenAPI document with what depends on the served catalog filled in, so that it states the whole contract.

The static schema marks three places with vendor keys; this fills them from the catalog at request time:

| mark | becomes |
|---|---|
| ``x-model-name`` (a string) | ``enum``: every model this coordinator serves by name (``Coordinator.served_names``) |
| ``x-model-names`` (a comma-separated string) | a ``pattern`` of 1 to 8 served names |
| ``x-min-side`` (a pixel array side) / ``x-image`` (an image file) | the largest patch grid among the served models |
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


def catalog_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` replaced: FastAPI's document (built once) plus the current catalog's names and bounds."""
    static = app.openapi

    def openapi() -> dict[str, Any]:
        schema = copy.deepcopy(static())
        coordinator = getattr(app.state, "coordinator", None)
        if coordinator is not None:
            names = coordinator.served_names()
            grid = max((coordinator.catalog.entries[n].spec.grid for n in names), default=1)
            _fill(schema, names, grid)
        return schema

    return openapi
