"""The demo page in a real headless browser (Debian's chromium, driven by Playwright; nothing downloaded), in demo mode
(the coordinator plays the client); its default, private mode is test_page_private.py's."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import preprocess
from server.main import create_app
from server.settings import Settings
from tests.server.conftest import SAMPLES_DIR, LiveServer
from tests.server.fake_party import FakeParties

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")


FASHION = Path(__file__).resolve().parents[2] / "checkpoints" / "fashion-mnist"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright; closed on exit."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def expected_class(model_dir: Path, model: str, image: Path) -> str:
    """The plaintext model's class of ``image``, by name (the class index when meta.json names none)."""
    net, meta = load_checkpoint(model_dir / model)
    with torch.no_grad():
        k = int(net(normalise_input(preprocess(image, net.spec.input_shape)[None], meta)).argmax())
    classes = meta.get("classes") or meta.get("class_names")
    return str(classes[k]) if isinstance(classes, list) and len(classes) == net.spec.num_classes else str(k)


def save_screenshot(page: Any, path: Path) -> Path:
    """A full-page screenshot at ``path``; also copied into ``$MPCVIT_SCREENSHOT_DIR`` when that is set."""
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("MPCVIT_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["MPCVIT_SCREENSHOT_DIR"]) / path.name)
    return path


def overlapping_chart_elements(page: Any, chart: str) -> list[tuple[str, str]]:
    """Pairs of texts and bars in one SVG chart whose boxes intersect, or that leave the drawing."""
    boxes = page.eval_on_selector_all(
        f"#{chart} svg text, #{chart} svg rect",
        "els => els.map(e => { const b = e.getBBox(); const v = e.ownerSVGElement.viewBox.baseVal;"
        " return {what: e.tagName + ':' + (e.textContent || e.getAttribute('class')), x: b.x, y: b.y, w: b.width, h: b.height,"
        " W: v.width, H: v.height}; })",
    )
    bad = [(b["what"], "outside the chart") for b in boxes if b["x"] < 0 or b["x"] + b["w"] > b["W"] + 0.5 or b["y"] + b["h"] > b["H"] + 0.5]
    for a, b in combinations(boxes, 2):
        if a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]:
            bad.append((a["what"], b["what"]))
    return bad


def test_page_classifies_a_bundled_image_with_each_model_and_draws_the_costs(
    live: Callable[..., LiveServer], model_dir: Path, tmp_path: Path
) -> None:
    sample = "digits_00009_2.png"
    with live() as server, chromium() as browser:
        page = browser.new_page()
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.check("#demo-mode")  # the coordinator plays the client: an explicit choice (private is the default)
        page.wait_for_selector("#models input[type=checkbox]")
        assert page.locator("#models input:checked").count() == 3  # /v1/models' compare_default: one per variant
        page.wait_for_selector("#samples button")
        datasets = {f.split("_")[0] for f in page.eval_on_selector_all("#samples button", "bs => bs.map(b => b.dataset.file)")}
        assert datasets == {"digits"}  # only the served models' data set
        assert page.is_disabled("#run")
        page.click(f"#samples button[data-file='{sample}']")
        page.wait_for_selector("#run:not([disabled])")
        page.click("#run")
        page.wait_for_selector("#status[data-state=done]", timeout=60_000)
        rows = page.locator("#results tbody tr")
        assert rows.count() == 3
        for i in range(3):
            model = rows.nth(i).get_attribute("data-model")
            assert model is not None
            assert rows.nth(i).locator("td.class").inner_text() == expected_class(model_dir, model, SAMPLES_DIR / sample)
        for chart in ("chart-rounds", "chart-bytes", "chart-latency"):
            bars = page.locator(f"#{chart} svg rect.bar")
            assert bars.count() == 3
            assert all(float(bars.nth(i).get_attribute("width") or 0) > 0 for i in range(3))
        save_screenshot(page, tmp_path / "page-digits.png")
        page.goto(server.url + "/docs")  # Swagger UI, served locally too
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() >= 6
        assert not errors, errors
        assert not outside, outside  # no CDN, no download


@pytest.fixture
def fashion_server() -> Iterator[LiveServer]:
    """The coordinator over the committed Fashion-MNIST checkpoints (its manifest's curated set), fake parties."""
    if not (FASHION / "manifest.json").is_file():
        pytest.skip(f"no curated checkpoints in {FASHION}")
    parties = FakeParties(FASHION).start()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, insecure=True, party0=parties.addresses[0], party1=parties.addresses[1], model_dir=FASHION,
        batch_wait_ms=2.0, request_timeout_s=30.0,
    )
    try:
        with LiveServer(create_app(settings)) as server:
            yield server
    finally:
        parties.stop()


def test_page_defaults_to_one_model_per_variant_and_the_served_data_set(fashion_server: LiveServer, tmp_path: Path) -> None:
    """Against the Fashion-MNIST catalog: the default selection is one model per variant, MPCViT and MPCViT+
    among them, the samples are Fashion-MNIST test images, every class is the plaintext model's, and no bar
    label runs into a bar, a value or another label."""
    manifest = json.loads((FASHION / "manifest.json").read_text())
    curated = [m["name"] for m in manifest["models"]]
    labels = {m["name"]: m["label"] for m in manifest["models"]}
    sample = "fashion-mnist_00000_9.png"
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(fashion_server.url + "/")
        page.check("#demo-mode")  # the coordinator plays the client (private mode is test_page_private.py's)
        page.wait_for_selector("#models input[type=checkbox]")
        offered = page.eval_on_selector_all("#models input", "cs => cs.map(c => c.value)")
        assert sorted(offered) == sorted(curated)  # the manifest's models, not every experiment directory
        checked = page.eval_on_selector_all("#models input:checked", "cs => cs.map(c => c.value)")
        assert checked == ["vit_4_4_28", "mpcformer_4_4_28", "thex_4_4_28_kd", "mpcvit_4_4_28_mu0.1",
                           "mpcvitplus_4_4_28_mu0.3"], checked
        shown = page.locator("#models").inner_text()
        assert all(labels[name] in shown for name in curated), shown
        page.wait_for_selector("#samples button")
        files = page.eval_on_selector_all("#samples button", "bs => bs.map(b => b.dataset.file)")
        assert len(files) == 10 and all(f.startswith("fashion-mnist_") for f in files), files  # no digits here
        page.click(f"#samples button[data-file='{sample}']")
        page.wait_for_selector("#run:not([disabled])")
        page.click("#run")
        page.wait_for_selector("#status[data-state=done]", timeout=60_000)
        rows = page.locator("#results tbody tr")
        assert rows.count() == len(checked)
        for i in range(rows.count()):
            model = rows.nth(i).get_attribute("data-model")
            assert model in checked
            assert rows.nth(i).locator("td.class").inner_text() == expected_class(FASHION, model, SAMPLES_DIR / sample)
            assert rows.nth(i).locator("td").first.inner_text() == labels[model]
        for chart in ("chart-rounds", "chart-bytes", "chart-latency"):
            assert page.locator(f"#{chart} svg rect.bar").count() == len(checked)
            assert overlapping_chart_elements(page, chart) == [], chart
        shot = save_screenshot(page, tmp_path / "page-fashion-mnist.png")
        assert shot.stat().st_size > 10_000
        assert not errors, errors


def test_chromium_binary_is_what_the_page_test_uses() -> None:
    assert shutil.which("chromium") in (CHROMIUM, "/bin/chromium")
