"""Every preset builds, runs forward, and round-trips through a checkpoint with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

import mpcvit
from mpcvit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mpcvit.models import ArchSpec, model_spec

SMALL = [n for n in mpcvit.list_models() if not n.endswith("9_12_64")]


@pytest.mark.parametrize("name", mpcvit.list_models())
def test_every_preset_builds_and_runs(name: str) -> None:
    torch.manual_seed(0)
    spec = model_spec(name)
    # keep the big shapes cheap: one layer is enough to exercise the forward
    model = mpcvit.create_model(name, depth=1) if spec.img_size >= 32 else mpcvit.create_model(name)
    x = torch.randn(2, *model.spec.input_shape)
    y = model(x)
    assert y.shape == (2, model.spec.num_classes)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", SMALL)
def test_checkpoint_round_trip_identical(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    model = mpcvit.create_model(name, depth=2) if name.endswith("7_4_32") else mpcvit.create_model(name)
    model.eval()
    x = torch.randn(3, *model.spec.input_shape)
    save_checkpoint(tmp_path / "ck", model, {"dataset": "none"})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert loaded.spec == model.spec
    assert meta == {"dataset": "none"}
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_unknown_model_fails_loudly() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        mpcvit.create_model("vit_99_1_1")
    with pytest.raises(ValueError, match="unknown override"):
        mpcvit.create_model("vit_2_4_8", heads=3)


def test_spec_json_round_trip_and_validation() -> None:
    spec = model_spec("mpcvitplus_2_4_8", act_tokens=[[0, 1, 2], None])
    assert ArchSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="heads"):
        spec.with_(attn=[["relu"] * 3, ["relu"] * 4])
    with pytest.raises(ValueError, match="unknown kind"):
        spec.with_(attn=[["nope"] * 4, ["relu"] * 4])
    with pytest.raises(ValueError, match="not valid JSON"):
        ArchSpec.from_json("{")


def test_mixed_heads_equal_per_head_reference() -> None:
    """A layer with mixed kinds computes each head exactly as a uniform layer of that kind would."""
    torch.manual_seed(2)
    mixed = mpcvit.create_model("vit_2_4_8", attn=[["softmax", "relu", "scale", "2quad"]] * 2)
    attn = mixed.blocks[0].attn
    x = torch.randn(2, mixed.spec.num_tokens, mixed.spec.embed_dim)
    q, k, v = attn.split_heads(x)
    out = attn.mix_heads(q, k, v)
    for h, kind in enumerate(["softmax", "relu", "scale", "2quad"]):
        ref = mpcvit.models.ATTN_FUNCS[kind](q[:, [h]], k[:, [h]], v[:, [h]], mixed.spec)
        torch.testing.assert_close(out[:, [h]], ref)


def test_scale_attention_is_a_over_n_times_v() -> None:
    torch.manual_seed(3)
    spec = model_spec("scale_2_4_8")
    q, k, v = (torch.randn(1, 2, 17, 8) for _ in range(3))
    a = q @ k.transpose(-2, -1) / 8**0.5
    torch.testing.assert_close(mpcvit.models.ATTN_FUNCS["scale"](q, k, v, spec), (a / 17) @ v)


def test_per_token_identity_and_fused_mlp() -> None:
    torch.manual_seed(4)
    model = mpcvit.create_model("vit_2_4_8", act=["gelu", "identity"], act_tokens=[[0, 3], None])
    mlp0, mlp1 = model.blocks[0].mlp, model.blocks[1].mlp
    x = torch.randn(2, 17, 32)
    h = mlp0.fc1(x)
    expect = h.clone()
    expect[:, [0, 3]] = torch.nn.functional.gelu(h[:, [0, 3]])
    torch.testing.assert_close(mlp0(x), mlp0.fc2(expect))
    w, b = mlp1.fused_linear()
    torch.testing.assert_close(mlp1(x), x @ w.T + b, atol=1e-5, rtol=1e-5)
    assert model.spec.mlp_is_linear(1) and not model.spec.mlp_is_linear(0)


def test_corrupt_or_mismatched_checkpoint_is_a_clear_error(tmp_path) -> None:
    model = mpcvit.create_model("vit_2_4_8")
    save_checkpoint(tmp_path / "ck", model, {})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "ck")
    save_checkpoint(tmp_path / "ck2", model, {})
    arch = json.loads((tmp_path / "ck2" / "arch.json").read_text())
    arch["embed_dim"] = 64
    (tmp_path / "ck2" / "arch.json").write_text(json.dumps(arch))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(tmp_path / "ck2")


@pytest.mark.parametrize("name", ["vit_2_4_8", "mpcvitplus_2_4_8", "thex_2_4_8"])
def test_models_pickle(name: str) -> None:
    """Models travel to party processes by pickle (our own processes, never a peer)."""
    import pickle

    model = mpcvit.create_model(name).eval()
    x = torch.randn(1, *model.spec.input_shape)
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))
