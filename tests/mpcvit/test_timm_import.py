"""Importing timm Vision Transformers: plaintext logits equal timm's, unsupported parts are refused with the reason.

Every timm model here is randomly initialised (``pretrained=False``), its
weights perturbed so that no parameter keeps a trivial init (zero biases,
unit norms); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from mpcvit import cli
from mpcvit.checkpoint import load_checkpoint, save_checkpoint
from mpcvit.timm_import import ImportRefused, build_timm, import_timm_model, import_timm_weights, load_state_file

TOL = 1e-5
CIFAR: dict[str, Any] = dict(img_size=32, patch_size=4, depth=2, num_classes=10)


def _timm(name: str, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_timm(name, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _max_diff(timm_model: torch.nn.Module, ours: torch.nn.Module, batch: int = 2) -> float:
    size = ours.spec.img_size
    x = torch.randn(batch, ours.spec.in_chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((timm_model(x) - ours(x)).abs().max())


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "deit_tiny_patch16_224"])
def test_named_models_match_timm(name: str) -> None:
    t = _timm(name)
    imported = import_timm_model(t, name)
    spec = imported.model.spec
    assert (spec.img_size, spec.patch_size, spec.num_tokens, spec.num_classes) == (224, 16, 197, 1000)
    assert spec.norm_eps == 1e-6 and spec.pool == "token"
    assert _max_diff(t, imported.model, batch=1) < TOL
    # the same weights through the state-dict path (no timm needed: the preset gives the heads)
    again = import_timm_weights(t.state_dict(), name)
    assert again.model.spec == spec and _max_diff(t, again.model, batch=1) < TOL
    mean = [0.485, 0.456, 0.406] if name.startswith("deit") else [0.5, 0.5, 0.5]
    assert imported.meta["normalisation"]["mean"] == pytest.approx(mean)


OPTIONS: list[dict[str, Any]] = [
    {},
    dict(qkv_bias=False),
    dict(init_values=0.1),  # LayerScale, folded into proj / fc2
    dict(global_pool="avg"),  # fc_norm after pooling
    dict(global_pool="avg", fc_norm=False),  # the final norm before pooling
    dict(no_embed_class=True),
    dict(act_layer="relu", num_heads=4, embed_dim=64, mlp_ratio=2.0, in_chans=1, img_size=28),
    dict(class_token=True, proj_bias=False, pos_embed="none"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_cifar_sized_options_match_timm(options: dict[str, Any], tmp_path: Path) -> None:
    t = _timm("vit_tiny_patch16_224", **{**CIFAR, **options})
    imported = import_timm_model(t)
    assert _max_diff(t, imported.model, batch=3) < TOL
    save_checkpoint(tmp_path / "ckpt", imported.model, imported.meta)
    model, meta = load_checkpoint(tmp_path / "ckpt")
    assert model.spec == imported.model.spec and meta["normalisation"] == imported.meta["normalisation"]
    assert _max_diff(t, model, batch=3) < TOL


def test_state_dict_path_reads_pool_and_heads() -> None:
    t = _timm("vit_tiny_patch16_224", **CIFAR, global_pool="avg", init_values=0.5)
    imported = import_timm_weights(t.state_dict(), num_heads=3)
    assert imported.model.spec.pool == "avg" and imported.model.spec.norm_after_pool
    assert _max_diff(t, imported.model) < TOL
    with pytest.raises(ImportRefused, match="number of heads"):
        import_timm_weights(t.state_dict())


REFUSED: list[tuple[dict[str, Any], str]] = [
    (dict(global_pool="map"), "global_pool='map'"),
    (dict(global_pool="max"), "global_pool='max'"),
    (dict(reg_tokens=2), "register tokens"),
    (dict(class_token=False, global_pool="avg"), "no class token"),
    (dict(num_classes=0), "no classifier head"),
    (dict(qk_norm=True), "QK-norm"),
    (dict(pre_norm=True), "pre-norm"),
    (dict(act_layer="gelu_tanh"), "activation GELUTanh; only exact GeLU or ReLU"),
    (dict(act_layer="quick_gelu"), "activation QuickGELU"),
    (dict(final_norm=False), "no final norm"),
    (dict(global_pool="avg", pool_include_prefix=True), "pool_include_prefix"),
]


@pytest.mark.parametrize("options,reason", REFUSED, ids=[r for _, r in REFUSED])
def test_unsupported_models_are_refused_with_the_reason(options: dict[str, Any], reason: str) -> None:
    t = _timm("vit_tiny_patch16_224", **{**CIFAR, **options})
    with pytest.raises(ImportRefused, match=reason.replace("(", r"\(")):
        import_timm_model(t)


def test_distilled_and_foreign_weights_are_refused() -> None:
    distilled = _timm("deit_tiny_distilled_patch16_224", **CIFAR)
    with pytest.raises(ImportRefused, match="distilled"):
        import_timm_model(distilled)
    with pytest.raises(ImportRefused, match="distilled"):
        import_timm_weights(distilled.state_dict(), num_heads=3)
    small = _timm("vit_tiny_patch16_224", **CIFAR)
    with pytest.raises(ImportRefused, match="not vit_base_patch16_224's"):
        import_timm_weights(small.state_dict(), "vit_base_patch16_224")
    state = dict(small.state_dict(), extra_thing=torch.zeros(3))
    with pytest.raises(ImportRefused, match="no place for"):
        import_timm_weights(state, num_heads=3)


def test_cli_imports_weight_files_and_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = _timm("vit_tiny_patch16_224", **CIFAR)
    save_file({k: v.contiguous() for k, v in t.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": t.state_dict()}, tmp_path / "w.pth")
    (tmp_path / "classes.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    for i, weights in enumerate(("w.safetensors", "w.pth")):
        out = tmp_path / f"ckpt{i}"
        argv = ["import", "--weights", str(tmp_path / weights), "--num-heads", "3", "--classes", str(tmp_path / "classes.txt"),
                "--mean", "0.5", "--std", "0.25", "--dataset", "cifar10", "--out", str(out)]
        assert cli.main(argv) == 0
        model, meta = load_checkpoint(out)
        assert _max_diff(t, model) < TOL
        assert meta["class_names"][3] == "c3" and meta["dataset"] == "cifar10"
        assert meta["normalisation"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
        assert meta["imported"]["sha256"] and meta["imported"]["weights"] == weights
    capsys.readouterr()
    assert cli.main(["import", "--timm", "vit_tiny_patch16_224", "--random-init", "--timm-arg", "reg_tokens=1",
                     "--out", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "mpcvit import: error: the model has register tokens; not supported"
    assert not (tmp_path / "bad").exists()
    assert cli.main(["import", "--weights", str(tmp_path / "missing.safetensors"), "--num-heads", "3", "--out", str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a torch state-dict file"):
        load_state_file(tmp_path / "junk.pth")
