"""The JavaScript client SDK (clients/js) against the real coordinator and the fake parties (fake_party.py).

The coordinator validates the JavaScript request as it validates any (server/schemas.py), the parties open
the boxes it sealed, and its answer is the Python SDK's: same class, same logits. With certificates, the
JavaScript SDK checks the parties' keys against the deployment's CA. Skipped without node.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from PIL import Image

from mpcvit.pki import key_fingerprint
from parties import tls
from server.main import create_app
from server.settings import Settings
from tests.server.conftest import SAMPLES_DIR, LiveServer, sdk
from tests.server.fake_party import FakeParties

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(NODE is None, reason="node is not on PATH: the JavaScript SDK needs Node 20+")]
IMAGE = SAMPLES_DIR / "digits_00004_5.png"


def js_classify(**arg: object) -> dict:
    with Image.open(IMAGE) as img:
        rgba = img.convert("RGBA")
        arg["image"] = {"width": rgba.width, "height": rgba.height, "rgba": base64.b64encode(rgba.tobytes()).decode()}
    done = subprocess.run([NODE, "clients/js/scripts/classify.mjs"], input=json.dumps(arg), capture_output=True, text=True,  # type: ignore[list-item]
                          timeout=60, cwd=ROOT)
    out = json.loads(done.stdout or "{}")
    assert done.returncode == 0 or "error" in out, done.stderr
    return out


def test_js_client_with_pinned_keys_gets_the_python_answer(parties: FakeParties, live: Callable[..., LiveServer]) -> None:
    pins = [key_fingerprint(k.public) for k in parties.runtime.keys]
    with live() as server:
        got = js_classify(url=server.url, model="vit_2_4_8", pins=pins)
        assert "error" not in got, got
        want = sdk(parties, server.url).classify(IMAGE, model="vit_2_4_8")
        assert (got["classIndex"], got["className"]) == (want.class_index, want.class_name)
        assert got["logits"] == pytest.approx(want.logits, abs=1e-9)
        assert got["confidence"] == pytest.approx(max(want.probabilities), abs=1e-12)
        assert got["costs"]["total"]["rounds"] > 0 and got["batchSize"] == 1
        refused = js_classify(url=server.url, model="vit_2_4_8", pins=pins[::-1])
        assert refused["error"] == "PartyKeyError"
        assert parties.runtime.forwards == 2  # the refused request never reached the parties


def test_js_client_checks_the_party_keys_against_the_ca(model_dir: Path, tmp_path: Path) -> None:
    if not (ROOT / "clients" / "js" / "node_modules" / "pkijs").is_dir():
        pytest.skip("clients/js/node_modules is missing: run `npm ci` in clients/js (make test does) for the CA check")
    certs = tmp_path / "certs"
    tls.write_certs(certs)
    other = tmp_path / "other"
    tls.write_certs(other)
    fp = FakeParties(model_dir, certs=certs).start()
    try:
        settings = Settings(_env_file=None, party0=fp.addresses[0], party1=fp.addresses[1], cert_dir=certs,  # type: ignore[call-arg]
                            model_dir=model_dir, connect_timeout_s=1.0, health_timeout_s=1.0)
        app: FastAPI = create_app(settings)
        with LiveServer(app) as server:
            got = js_classify(url=server.url, model="vit_2_4_8", ca=(certs / "ca" / "ca.pem").read_text())
            assert "error" not in got, got
            assert got["className"] in [str(i) for i in range(10)]
            refused = js_classify(url=server.url, model="vit_2_4_8", ca=(other / "ca" / "ca.pem").read_text())
            assert refused["error"] == "PartyKeyError" and "not issued by the given CA" in refused["message"]
    finally:
        fp.stop()
