"""An imported timm ViT under 2PC: the secure class is timm's plaintext class (in-process parties, the dealer path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mpcvit import cli
from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.timm_import import build_timm, import_timm_model
from protocols.config import DEFAULT_CONFIG
from protocols.evaluate import evaluate_private

SMALL: dict[str, Any] = dict(img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=4, num_classes=10)


def _timm(seed: int, **options: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_timm("vit_tiny_patch16_224", **{**SMALL, **options})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("options", [{}, dict(global_pool="avg", init_values=0.5, qkv_bias=False)], ids=["token", "avg-layerscale"])
def test_imported_timm_vit_under_2pc_gives_timms_class(options: dict[str, Any]) -> None:
    t = _timm(0, **options)
    imported = import_timm_model(t, class_names=[f"c{i}" for i in range(10)])
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        timm_logits = t(normalise_input(images, imported.meta))  # timm's own forward, on the normalised image
    result = evaluate_private(imported.model, imported.meta, images, timm_logits.argmax(1), batch_size=12,
                              config=DEFAULT_CONFIG.with_(provider="dealer"), timeout=280)
    assert result["private_accuracy"] == 1.0, result  # the secure class is timm's class on every image
    assert result["max_abs_logit_error"] < 0.05
    assert result["rounds"] > 0 and result["dealer_bytes"] > 0


@pytest.mark.timeout(300)
def test_cli_import_then_eval_private_on_an_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "byo"
    assert cli.main(["import", "--timm", "vit_tiny_patch16_224", "--random-init", "--seed", "3", "--out", str(ckpt),
                     *[f"--timm-arg={k}={v}" for k, v in SMALL.items()]]) == 0
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    capsys.readouterr()
    assert cli.main(["eval-private", "--checkpoint", str(ckpt), "--images", str(folder), "--limit", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 3 and out["agreement"] == 1.0 and "private_accuracy" not in out
    model, _ = load_checkpoint(ckpt)
    assert out["rounds"] > 0 and model.spec.img_size == 16
    assert cli.main(["eval-private", "--checkpoint", str(ckpt)]) == 1
    assert "names no dataset; pass --dataset or --images DIR" in capsys.readouterr().err


@pytest.mark.timeout(200)
def test_the_plan_knows_the_forwards_rounds_and_bytes() -> None:
    """``SecureViT.planned_costs`` (a dry run, nothing exchanged) equals a real forward's rounds and bytes, per party
    (a forward after the first: the first also opens the weights' masks, once per load)."""
    from benchmarks.large_vit import _party
    from mpcvit.prg import new_key
    from protocols.local import run_two_party

    spec = import_timm_model(_timm(1, global_pool="avg")).model.spec
    result = run_two_party(_party, spec.to_dict(), {"normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3}}, True, new_key(), timeout=180)
    for r in result:
        assert r["plan"]["rounds"] == r["forward"]["rounds"] > 0
        assert r["plan"]["bytes_sent"] == r["forward"]["bytes_sent"] > 0
        assert r["plan"]["dealer_bytes"] == result[0]["forward"]["dealer_bytes"] > 0
        assert r["peak_mib"] > 0
