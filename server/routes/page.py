"""``GET /``: the demo page (static HTML + JS + CSS served from ``server/static``; nothing from a CDN), its favicon,
and where the JavaScript SDK's files that the page imports are found (mounted by ``server.main``).

The page imports the SDK (``clients/js/src``) from ``/sdk/src/`` and, for the CA check only, PKI.js from
``/sdk/node_modules/`` through the import map inlined in ``index.html`` (allowed by its hash in the CSP).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
JS_CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"  # in a source checkout (editable install)
SDK_URL = "/sdk/src"
SDK_DEPS_URL = "/sdk/node_modules"


def sdk_dir() -> Path | None:
    """The SDK's modules: ``server/static/sdk`` where a build copied them there (the container image does), else
    ``clients/js/src`` of the source checkout this package runs from; None when neither exists."""
    for d in (STATIC_DIR / "sdk", JS_CLIENT_DIR / "src"):
        if (d / "index.js").is_file():
            return d
    return None


def sdk_deps_dir() -> Path | None:
    """``clients/js/node_modules`` when ``npm ci`` filled it (PKI.js, for the page's CA check); else None."""
    d = JS_CLIENT_DIR / "node_modules"
    return d if (d / "pkijs" / "package.json").is_file() else None


def _inline_script_hashes(html: str) -> str:
    """CSP sources for the page's inline import map (the only inline script): 'sha256-<base64>' each."""
    bodies = re.findall(r"<script type=\"importmap\">(.*?)</script>", html, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)


CSP = (f"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
       f"script-src 'self' {_inline_script_hashes((STATIC_DIR / 'index.html').read_text(encoding='utf-8'))}; connect-src 'self'")

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"})
