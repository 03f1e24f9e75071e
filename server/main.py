"""The coordinator app: wiring only (settings, lifespan, middleware, error handlers, routers, static files).

Run it with ``mpcvit serve`` or ``uvicorn server.main:app --factory`` style
``create_app()`` (with ``uvicorn_options(settings)``); OpenAPI lives at ``/docs``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from server.coordinator import Coordinator
from server.errors import CoordinatorError, from_validation_errors
from server.metrics import Metrics, model_label
from server.middleware import BodyReadTimeout, BodySizeLimit
from server.openapi import catalog_openapi
from server.routes import classify, compare, docs, metrics, models, page, parties
from server.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the coordinator app; ``settings`` overrides ``get_settings()`` (tests, ``mpcvit serve``)."""
    settings = settings or get_settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        coordinator = Coordinator(settings, app_metrics)
        app.state.coordinator = coordinator
        await coordinator.start()
        try:
            yield
        finally:
            await coordinator.stop()

    app = FastAPI(
        title="mpcvit coordinator",
        version="1",
        summary="Private image classification with MPC-friendly ViTs over two-party computation",
        lifespan=lifespan,
        docs_url=None if docs.DOCS_DIR else "/docs",  # Swagger UI from the swagger-ui-bundle package, not a CDN
        redoc_url=None,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    app.state.metrics = app_metrics

    @app.exception_handler(CoordinatorError)
    async def coordinator_error(request: Request, exc: CoordinatorError) -> JSONResponse:
        app_metrics.errors.labels(exc.kind).inc()
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await coordinator_error(request, from_validation_errors(exc.errors()))

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        coordinator = getattr(request.app.state, "coordinator", None)
        known = coordinator.catalog.entries if coordinator is not None else ()
        model = model_label(str(getattr(request.state, "model", "")), known)
        app_metrics.requests.labels(endpoint, model, str(response.status_code)).inc()
        app_metrics.latency.labels(endpoint, model).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyReadTimeout, timeout_s=settings.body_timeout_s)  # outermost: it also times BodySizeLimit's reads
    for module in (classify, compare, models, parties, metrics, page):
        app.include_router(module.router)
    if docs.DOCS_DIR:
        app.include_router(docs.router)
        app.mount(docs.DOCS_STATIC, StaticFiles(directory=docs.DOCS_DIR), name="swagger")
    # the JavaScript SDK the page imports (clients/js/src), and PKI.js for its CA check where npm ci installed it
    if (sdk := page.sdk_dir()) is not None:
        app.mount(page.SDK_URL, StaticFiles(directory=sdk), name="sdk")
    if (deps := page.sdk_deps_dir()) is not None:
        app.mount(page.SDK_DEPS_URL, StaticFiles(directory=deps), name="sdk-deps")
    app.mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static")
    app.openapi = catalog_openapi(app)  # type: ignore[method-assign]
    return app


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """What uvicorn itself is told from the settings: the cap on connections (503 beyond it)."""
    return {"limit_concurrency": settings.max_connections}
