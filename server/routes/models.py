"""``GET /v1/models``: what a client needs to know per model (input shape, classes, precision) and what it costs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.catalog import ModelEntry
from server.deps import AuthDep, CoordinatorDep
from server.routes.classify import ERRORS
from server.schemas import ModelInfo, ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"])


def model_info(entry: ModelEntry) -> ModelInfo:
    measured = entry.measured or entry.meta.get("mpc_costs") or entry.meta.get("costs")
    dataset = entry.meta.get("dataset")
    return ModelInfo(
        name=entry.name, label=entry.label or entry.name, variant=entry.variant, arch=entry.spec.summary(), attention=entry.spec.count_heads(),
        input_shape=list(entry.input_shape), classes=entry.classes, precision_bits=entry.precision_bits,
        accuracy=entry.accuracy, dataset=dataset if isinstance(dataset, str) else None, loaded=entry.loaded, output_policy=entry.policy,
        measured_cost={k: float(v) for k, v in measured.items() if isinstance(v, (int, float))} if isinstance(measured, dict) else None,
    )


@router.get("/models", response_model=ModelsResponse, responses={code: ERRORS[code] for code in (401, 422)},
            summary="the models this coordinator serves")
async def list_models(
    coordinator: CoordinatorDep, _auth: AuthDep,
    include_all: Annotated[bool, Query(alias="all", description="list every model this server serves by name, not only the curated set")] = False,
) -> ModelsResponse:
    """The curated set (one model per variant). ``?all=true``: every model a request may name (the preloads too, and every
    checkpoint when the server runs with serve_unlisted)."""
    catalog = coordinator.catalog
    catalog.refresh()
    names = coordinator.served_names() if include_all else catalog.listed()
    return ModelsResponse(
        models=[model_info(catalog.entries[n]) for n in names], default=catalog.default, compare_default=catalog.compare_defaults(),
    )
