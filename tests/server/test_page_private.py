"""The demo page's private mode in a real headless browser (Debian's chromium, driven by Playwright).

The page classifies privately by default: the JavaScript SDK, served by the coordinator, checks the parties'
keys against the fingerprints typed into the page, preprocesses the image, splits it into two additive shares
and seals each to its party in the browser; the coordinator relays sealed boxes to the fake parties
(fake_party.py), which open their own share only. Every request the page makes is recorded, and no body may
hold the image: neither its PNG bytes, nor its preprocessed floats, nor its fixed-point encoding, nor either
unsealed share (each share is recovered here with the party's own key, to show the boxes are real shares of
this very image and that neither appears in the clear).
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mpcvit.checkpoint import load_checkpoint
from mpcvit.client import preprocess
from mpcvit.pki import key_fingerprint
from mpcvit.sealing import BoxContext, Sealed, open_tensor
from parties import tls
from server.main import create_app
from server.routes import page as page_routes
from server.settings import Settings
from tests.server.conftest import SAMPLES_DIR, LiveServer
from tests.server.fake_party import PRECISION_BITS, FakeParties
from tests.server.test_page import CHROMIUM, chromium, expected_class, save_screenshot

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make chromium, or apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "digits_00009_2.png"
REQUEST_FIELDS = {"model", "request_id", "client_public_key", "shares", "deadline_unix_ms"}


def b64_forms(data: bytes) -> list[bytes]:
    """``data`` and its standard and URL-safe base64 forms (unpadded too), as they could appear in a body."""
    std = base64.b64encode(data)
    url = base64.urlsafe_b64encode(data)
    return [data, std, std.rstrip(b"="), url, url.rstrip(b"=")]


def fixed_point(model_dir: Path, model: str, image: Path) -> torch.Tensor:
    """The image as the model takes it, encoded round(x * 2^f) in int64: what the two shares must add up to."""
    net, _meta = load_checkpoint(model_dir / model)
    x = preprocess(image, net.spec.input_shape)
    return torch.round(x.double() * (1 << PRECISION_BITS)).to(torch.int64)


def record(page: Any, log: list[dict[str, Any]]) -> None:
    """Every request the page makes (documents, modules, images, fetches, the favicon), with its body."""
    page.on("request", lambda r: log.append({"url": r.url, "method": r.method, "body": r.post_data_buffer or b""}))


def test_page_classifies_privately_and_no_request_holds_the_image(
    parties: FakeParties, live: Callable[..., LiveServer], model_dir: Path, tmp_path: Path
) -> None:
    keys = parties.runtime.keys
    pins = [key_fingerprint(k.public) for k in keys]
    png = (SAMPLES_DIR / SAMPLE).read_bytes()
    with live() as server, chromium() as browser:
        page = browser.new_page()
        log: list[dict[str, Any]] = []
        record(page, log)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        page.goto(server.url + "/")
        page.wait_for_selector("#models input[type=checkbox]")
        # private by default: the demo toggle is off, its warning hidden, and no broken image before a pick
        assert not page.is_checked("#demo-mode")
        assert page.is_hidden("#demo-warning")
        assert page.is_hidden("#preview")
        assert "trusted code" in page.inner_text("#trust-note")
        assert page.inner_text("#run") == "Classify privately with each model"
        models = page.eval_on_selector_all("#models input:checked", "cs => cs.map(c => c.value)")
        assert len(models) == 3

        page.fill("#trust", "\n".join(pins))
        page.wait_for_selector("#samples button")
        page.click(f"#samples button[data-file='{SAMPLE}']")
        page.wait_for_selector("#preview", state="visible")  # the sample is fetched, then shown
        page.wait_for_selector("#run:not([disabled])")
        page.click("#run")
        page.wait_for_selector("#status[data-state=done]", timeout=60_000)

        assert page.get_attribute("#results", "data-mode") == "private"
        assert page.get_attribute("#key-check", "data-check") == "pins"
        rows = page.locator("#results tbody tr")
        assert rows.count() == 3
        for i in range(3):
            model = rows.nth(i).get_attribute("data-model")
            assert model in models
            assert rows.nth(i).locator("td.class").inner_text() == expected_class(model_dir, model, SAMPLES_DIR / SAMPLE)
        save_screenshot(page, tmp_path / "page-private.png")
        favicon = page.request.get(server.url + "/favicon.ico")
        assert favicon.status == 200 and favicon.headers["content-type"] == "image/x-icon"
        assert not errors, errors
        assert not failed, failed

    assert all(r["url"].startswith(server.url + "/") for r in log), [r["url"] for r in log]  # nothing from elsewhere
    posts = [r for r in log if r["method"] != "GET"]
    assert sorted(r["url"][len(server.url):] for r in posts) == ["/v1/classify"] * 3, [r["url"] for r in posts]
    assert parties.runtime.forwards == 3

    # what must appear in no body, raw or in base64: the PNG, and per model the preprocessed floats, the fixed-point
    # input and (collected below) both shares
    forbidden: list[bytes] = [png]
    opened = 0
    for r in posts:
        body = json.loads(r["body"])
        assert set(body) <= REQUEST_FIELDS and {"model", "request_id", "client_public_key", "shares"} <= set(body), set(body)
        model, request_id = body["model"], body["request_id"]
        enc = fixed_point(model_dir, model, SAMPLES_DIR / SAMPLE)
        x = enc.double() / (1 << PRECISION_BITS)
        forbidden += [enc.numpy().tobytes(), x.float().numpy().tobytes(), x.numpy().tobytes()]
        assert len(body["shares"]) == 2
        shares = []
        for rank, box in enumerate(body["shares"]):
            assert set(box) == {"shape", "dtype", "nonce", "ciphertext"} and box["dtype"] == "int64"
            assert tuple(box["shape"]) == tuple(enc.shape)
            ciphertext = base64.b64decode(box["ciphertext"], validate=True)
            assert len(ciphertext) == 8 * enc.numel() + 16  # the int64 values and the GCM tag, nothing else
            sealed = Sealed(tuple(box["shape"]), box["dtype"], base64.b64decode(box["nonce"], validate=True), ciphertext)
            share = open_tensor(sealed, keys[rank].private, base64.b64decode(body["client_public_key"]),
                                BoxContext(request_id, model, rank, "input"))
            opened += 1
            assert not torch.equal(share, enc)  # a share alone is not the image
            assert ciphertext[:-16] not in (share.numpy().tobytes(), enc.numpy().tobytes())
            shares.append(share)
        assert torch.equal(shares[0] + shares[1], enc)  # the two boxes are shares of this very image
        forbidden += [s.numpy().tobytes() for s in shares]
    assert opened == 6
    for r in log:
        for secret in forbidden:
            for form in b64_forms(secret):
                assert form not in r["body"], f"{r['method']} {r['url']} carries the image or a share ({len(secret)} bytes)"
    # nor any 8-byte fixed-point value of a pixel that is not 0 (the digit's strokes): not even one in the clear
    enc = fixed_point(model_dir, models[0], SAMPLES_DIR / SAMPLE)
    strokes = {v.tobytes() for v in np.unique(enc.numpy()) if v != 0}
    assert strokes
    for r in posts:
        ciphertexts = b"".join(base64.b64decode(b["ciphertext"]) for b in json.loads(r["body"])["shares"])
        assert all(v not in r["body"] for v in strokes)
        assert sum(ciphertexts.count(v) for v in strokes) <= 1  # chance only (each 8 random bytes: ~2^-50)


def test_page_refuses_wrong_pins_before_sealing_anything(parties: FakeParties, live: Callable[..., LiveServer]) -> None:
    pins = [key_fingerprint(k.public) for k in parties.runtime.keys][::-1]
    with live() as server, chromium() as browser:
        page = browser.new_page()
        log: list[dict[str, Any]] = []
        record(page, log)
        page.goto(server.url + "/")
        page.wait_for_selector("#samples button")
        page.fill("#trust", "\n".join(pins))
        page.click(f"#samples button[data-file='{SAMPLE}']")
        page.click("#run")
        page.wait_for_selector("#status[data-state=error]", timeout=30_000)
        assert page.get_attribute("#key-check", "data-check") == "refused"
        assert "Nothing was sent" in page.inner_text("#status")
    assert [r for r in log if r["method"] != "GET"] == []
    assert parties.runtime.forwards == 0


def test_demo_mode_is_an_explicit_labelled_choice(parties: FakeParties, live: Callable[..., LiveServer], model_dir: Path) -> None:
    with live() as server, chromium() as browser:
        page = browser.new_page()
        log: list[dict[str, Any]] = []
        record(page, log)
        page.goto(server.url + "/")
        page.wait_for_selector("#samples button")
        page.check("#demo-mode")
        assert page.is_visible("#demo-warning") and "sees the image" in page.inner_text("#run")
        page.click(f"#samples button[data-file='{SAMPLE}']")
        page.click("#run")
        page.wait_for_selector("#status[data-state=done]", timeout=60_000)
        assert page.get_attribute("#results", "data-mode") == "demo"
        model = page.locator("#results tbody tr").first.get_attribute("data-model")
        assert model is not None
        assert page.locator("#results tbody tr td.class").first.inner_text() == expected_class(model_dir, model, SAMPLES_DIR / SAMPLE)
    assert [r["url"][len(server.url):] for r in log if r["method"] != "GET"] == ["/v1/compare"]


def test_page_checks_the_party_keys_against_a_pasted_ca(model_dir: Path, tmp_path: Path) -> None:
    """PKI.js, served from clients/js/node_modules through the page's import map, checks the parties' certificates
    in the browser against the CA certificate pasted into the page; another CA is refused before anything is sent."""
    if not (ROOT / "clients" / "js" / "node_modules" / "pkijs").is_dir():
        pytest.skip("clients/js/node_modules is missing: run `make js-deps` (npm ci in clients/js) for the page's CA check")
    certs, other = tmp_path / "certs", tmp_path / "other"
    tls.write_certs(certs)
    tls.write_certs(other)
    fp = FakeParties(model_dir, certs=certs).start()
    try:
        settings = Settings(_env_file=None, party0=fp.addresses[0], party1=fp.addresses[1], cert_dir=certs,  # type: ignore[call-arg]
                            model_dir=model_dir, connect_timeout_s=1.0, health_timeout_s=1.0)
        with LiveServer(create_app(settings)) as server, chromium() as browser:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_selector("#samples button")
            page.click(f"#samples button[data-file='{SAMPLE}']")
            page.fill("#trust", (other / "ca" / "ca.pem").read_text())
            page.click("#run")
            page.wait_for_selector("#status[data-state=error]", timeout=30_000)
            assert page.get_attribute("#key-check", "data-check") == "refused"
            assert "not issued by the given CA" in page.inner_text("#key-check")
            assert fp.runtime.forwards == 0
            page.fill("#trust", (certs / "ca" / "ca.pem").read_text())
            page.click("#run")
            page.wait_for_selector("#status[data-state=done]", timeout=60_000)
            assert page.get_attribute("#key-check", "data-check") == "ca"
            rows = page.locator("#results tbody tr")
            for i in range(rows.count()):
                model = rows.nth(i).get_attribute("data-model")
                assert model is not None
                assert rows.nth(i).locator("td.class").inner_text() == expected_class(model_dir, model, SAMPLES_DIR / SAMPLE)
            assert fp.runtime.forwards == rows.count() == 3
            assert not errors, errors
    finally:
        fp.stop()


def test_an_app_serving_the_sdk_itself_with_integrity_refuses_a_modified_module(tmp_path: Path) -> None:
    """clients/js/README.md, "Serving the SDK yourself": the import map made by scripts/integrity.mjs pins every
    module by its sha384 hash; chromium loads the SDK as it is and refuses it once one module is modified."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: scripts/integrity.mjs makes the import map")
    done = subprocess.run([node, "clients/js/scripts/integrity.mjs", "--importmap", "/js/mpcvit/"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    importmap = json.loads(done.stdout)
    assert set(importmap["integrity"]) == {f"/js/mpcvit/src/{f.name}" for f in (ROOT / "clients" / "js" / "src").glob("*.js")}
    app = tmp_path / "app"
    shutil.copytree(ROOT / "clients" / "js" / "src", app / "js" / "mpcvit" / "src")
    (app / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<script type="importmap">{json.dumps(importmap)}</script>'
        '<script type="module">import("/js/mpcvit/src/index.js")'
        '.then(m => { document.title = typeof m.PrivateClient === "function" ? "loaded" : "no SDK"; })'
        '.catch(e => { document.title = "refused"; });</script></head><body></body></html>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(app))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.title !== ''", timeout=30_000)
            assert page.title() == "loaded"
            sealing = app / "js" / "mpcvit" / "src" / "sealing.js"
            sealing.write_text(sealing.read_text() + "\n// one changed byte is enough\n")
            page = browser.new_context().new_page()  # no cached module
            page.goto(url)
            page.wait_for_function("document.title !== ''", timeout=30_000)
            assert page.title() == "refused"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_without_the_sdk_the_page_says_why_and_demo_mode_still_works(
    parties: FakeParties, live: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator installed without the SDK's files (a wheel built without the copy the container image makes)."""
    monkeypatch.setattr(page_routes, "sdk_dir", lambda: None)
    with live() as server, chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector("#samples button")
        page.click(f"#samples button[data-file='{SAMPLE}']")
        page.click("#run")
        page.wait_for_selector("#status[data-state=error]", timeout=30_000)
        assert "does not serve the JavaScript SDK" in page.inner_text("#status")
        page.check("#demo-mode")
        page.click("#run")
        page.wait_for_selector("#status[data-state=done]", timeout=60_000)
        assert not errors, errors
    assert parties.runtime.forwards == 3  # demo mode's three models; nothing in private mode
