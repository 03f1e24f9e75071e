"""The demo page in a real headless browser (Debian's chromium, driven by Playwright; nothing downloaded)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import preprocess
from tests.server.conftest import SAMPLES_DIR, LiveServer

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")


def expected_class(model_dir: Path, model: str, image: Path) -> str:
    net, meta = load_checkpoint(model_dir / model)
    with torch.no_grad():
        return str(int(net(normalise_input(preprocess(image, (1, 8, 8))[None], meta)).argmax()))


def test_page_classifies_a_bundled_image_with_each_model_and_draws_the_costs(
    live: Callable[..., LiveServer], model_dir: Path, tmp_path: Path
) -> None:
    sample = "digits_00009_2.png"
    with live() as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page()
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
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
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            page.goto(server.url + "/docs")  # Swagger UI, served locally too
            page.wait_for_selector(".opblock", timeout=30_000)
            assert page.locator(".opblock").count() >= 6
            assert not errors, errors
            assert not outside, outside  # no CDN, no download
        finally:
            browser.close()


def test_chromium_binary_is_what_the_page_test_uses() -> None:
    assert shutil.which("chromium") in (CHROMIUM, "/bin/chromium")
