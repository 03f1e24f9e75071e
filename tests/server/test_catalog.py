"""The curated catalog: the committed demo folders' manifests, /v1/models, and /v1/compare's default on them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mpcvit.checkpoint import CheckpointError, load_manifest
from mpcvit.commands.demo import default_model
from server.catalog import COMPARE_VARIANTS, Catalog
from server.main import create_app
from server.routes.compare import MAX_COMPARE_MODELS
from server.settings import Settings
from tests.server.conftest import SAMPLES_DIR
from tests.server.fake_party import FakeParties

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
FASHION = CHECKPOINTS / "fashion-mnist"
needs_fashion = pytest.mark.skipif(not (FASHION / "manifest.json").is_file(), reason="no committed Fashion-MNIST checkpoints")


@pytest.mark.parametrize("folder", sorted(p.parent for p in CHECKPOINTS.glob("*/manifest.json")), ids=lambda p: p.name)
def test_committed_manifests_name_one_existing_checkpoint_per_variant(folder: Path) -> None:
    catalog = Catalog(folder)
    manifest = load_manifest(folder)
    assert manifest is not None and manifest.default in catalog.curated
    assert catalog.curated == list(manifest.models)  # every listed model exists
    variants = [catalog.entries[n].variant for n in catalog.curated]
    assert len(variants) == len(set(variants)), variants
    assert {"mpcvit", "mpcvitplus"} <= set(variants)
    defaults = catalog.compare_defaults()
    assert 0 < len(defaults) <= MAX_COMPARE_MODELS
    assert [catalog.entries[n].variant for n in defaults] == [v for v in COMPARE_VARIANTS if v in variants]
    # the default is the most accurate committed checkpoint of the folder
    best = max(catalog.entries.values(), key=lambda e: e.accuracy or 0.0)
    assert catalog.entries[manifest.default].accuracy == best.accuracy


@needs_fashion
def test_demo_serves_the_manifest_default() -> None:
    assert default_model(CHECKPOINTS) in (load_manifest(FASHION).default, load_manifest(CHECKPOINTS / "digits").default)  # type: ignore[union-attr]


def test_without_a_manifest_compare_takes_the_most_accurate_per_variant(model_dir: Path, tmp_path: Path) -> None:
    for name in ("vit_2_4_8", "mpcvit_2_4_8"):
        shutil.copytree(model_dir / name, tmp_path / name)
    shutil.copytree(model_dir / "mpcvit_2_4_8", tmp_path / "mpcvit_2_4_8_better")
    meta = json.loads((tmp_path / "mpcvit_2_4_8_better" / "meta.json").read_text())
    (tmp_path / "mpcvit_2_4_8_better" / "meta.json").write_text(json.dumps({**meta, "test_accuracy": 0.99}))
    catalog = Catalog(tmp_path)
    assert catalog.listed() == catalog.names() and catalog.default is None
    assert catalog.compare_defaults() == ["vit_2_4_8", "mpcvit_2_4_8_better"]
    (tmp_path / "manifest.json").write_text(json.dumps({"default": "mpcvit_2_4_8", "models": [{"name": "mpcvit_2_4_8", "label": "ours"}]}))
    catalog.refresh()
    assert catalog.listed() == ["mpcvit_2_4_8"] and catalog.default == "mpcvit_2_4_8" and catalog.entries["mpcvit_2_4_8"].label == "ours"
    assert catalog.get("vit_2_4_8") is not None  # not listed, still in the catalog's entries (served with serve_unlisted)
    (tmp_path / "manifest.json").write_text(json.dumps({"default": "gone", "models": [{"name": "mpcvit_2_4_8"}]}))
    with pytest.raises(CheckpointError, match="default"):
        load_manifest(tmp_path)


@pytest.fixture
def fashion_client() -> Iterator[TestClient]:
    """The committed Fashion-MNIST folder behind the fake parties (plaintext models: fast)."""
    parties = FakeParties(FASHION).start()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, insecure=True, party0=parties.addresses[0], party1=parties.addresses[1], model_dir=FASHION,
        batch_wait_ms=2.0, request_timeout_s=30.0, connect_timeout_s=1.5,
    )
    try:
        with TestClient(create_app(settings)) as c:
            yield c
    finally:
        parties.stop()


@needs_fashion
def test_compare_without_models_on_the_demo_catalog(fashion_client: TestClient) -> None:
    r = fashion_client.get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    manifest = load_manifest(FASHION)
    assert manifest is not None
    assert [m["name"] for m in body["models"]] == list(manifest.models) and body["default"] == manifest.default
    assert all(m["label"] and m["label"] != m["name"] for m in body["models"])
    every = fashion_client.get("/v1/models", params={"all": "true"})  # what a request may name: the curated set here
    assert every.status_code == 200 and sorted(m["name"] for m in every.json()["models"]) == sorted(manifest.models)

    sample = next(SAMPLES_DIR.glob("fashion-mnist_*.png"))
    r = fashion_client.post("/v1/compare", files={"image": (sample.name, sample.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [e["model"] for e in results] == body["compare_default"]
    assert [e["variant"] for e in results] == list(COMPARE_VARIANTS) and all(e["ok"] for e in results), results
    # a checkpoint outside the curated set is not served (the parties never load it) unless the operator allows it
    r = fashion_client.post("/v1/classify/demo", files={"image": (sample.name, sample.read_bytes(), "image/png")},
                            data={"model": "mpcvit_4_4_28_mu0.7"})
    assert r.status_code == 404, r.text
