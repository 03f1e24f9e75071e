"""``GET /docs``: Swagger UI 5 served from this process (the ``swagger-ui-py`` package's files), never from a CDN.

FastAPI's default docs page loads Swagger UI from jsdelivr, which an offline
deployment cannot reach. Only the package's static files are used (Swagger UI
5.x, which reads FastAPI's OpenAPI 3.1). When the package is missing,
``DOCS_DIR`` is None and ``server.main`` keeps FastAPI's default page.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse



def _swagger_static() -> Path | None:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(list(spec.submodule_search_locations)[0]) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


DOCS_DIR: Path | None = _swagger_static()

DOCS_STATIC = "/static/swagger"
router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title}: API",
        swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_STATIC}/favicon-32x32.png",
    )
