"""``GET /metrics``: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.deps import CoordinatorDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(coordinator: CoordinatorDep) -> Response:
    coordinator.metrics.queue_length.set(coordinator.queue_length)
    return Response(coordinator.metrics.render(), media_type=CONTENT_TYPE_LATEST)
