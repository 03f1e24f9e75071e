"""What the coordinator serves for the demo page, without a browser: the JavaScript SDK's modules (byte for byte
clients/js/src), the page's import map (clients/js/importmap.json under /sdk/) allowed by its hash in the CSP,
and the favicon."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.routes import page

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "js"


def import_map(html: str) -> tuple[str, dict[str, str]]:
    (text,) = re.findall(r"<script type=\"importmap\">(.*?)</script>", html, flags=re.S)
    return text, json.loads(text)["imports"]


def test_the_page_imports_the_sdk_the_coordinator_serves(client: TestClient) -> None:
    for f in sorted((SDK / "src").glob("*.js")):
        r = client.get(f"/sdk/src/{f.name}")
        assert r.status_code == 200 and r.content == f.read_bytes(), f.name
        assert r.headers["content-type"].startswith("text/javascript")
    assert "import(\"/sdk/src/index.js\")" in client.get("/static/app.js").text


def test_the_page_import_map_is_the_sdk_import_map_under_sdk(client: TestClient) -> None:
    r = client.get("/")
    text, imports = import_map(r.text)
    sdk_map = json.loads((SDK / "importmap.json").read_text())["imports"]
    under = {k.replace("./", "/sdk/", 1): v.replace("./", "/sdk/", 1) for k, v in sdk_map.items()}
    assert imports == under
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    csp = r.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()
    assert script_src == ["script-src", "'self'", f"'sha256-{digest}'"]  # the import map and nothing else inline
    if page.sdk_deps_dir() is not None:  # PKI.js is served where npm ci installed it (the page's CA check)
        for target in imports.values():
            assert client.get(target).status_code == 200, target


def test_favicon(client: TestClient) -> None:
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").text


def test_a_packaged_copy_of_the_sdk_wins_over_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container image copies clients/js/src to server/static/sdk; a checkout serves clients/js/src itself."""
    static = tmp_path / "static"
    (static / "sdk").mkdir(parents=True)
    (static / "sdk" / "index.js").write_text("export {};\n")
    monkeypatch.setattr(page, "STATIC_DIR", static)
    assert page.sdk_dir() == static / "sdk"
    monkeypatch.setattr(page, "STATIC_DIR", tmp_path / "nothing")
    assert page.sdk_dir() == SDK / "src"
    monkeypatch.setattr(page, "JS_CLIENT_DIR", tmp_path / "nothing")
    assert page.sdk_dir() is None
