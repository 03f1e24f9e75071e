"""The JAX twin and the SPU runner (benchmarks/spu): skipped where the SPU environment is absent.

The SPU environment (``make spu-env``) is a separate virtual environment with
JAX and SecretFlow SPU; these tests call its python as a subprocess, so the
project's environment never imports either.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mpcvit.checkpoint import load_checkpoint
from mpcvit.models import build_model, model_spec

ROOT = Path(__file__).resolve().parents[2]
SPU_PYTHON = Path(os.environ.get("MPCVIT_SPU_PYTHON", ROOT / ".venv-spu" / "bin" / "python"))

needs_spu = pytest.mark.skipif(
    not SPU_PYTHON.is_file(),
    reason=f"the SPU environment is absent ({SPU_PYTHON}); 'make spu-env' creates it",
)


def _runner(tmp_path: Path, arch: Path, weights: Path, inputs: Path, *extra: str) -> dict:
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [str(SPU_PYTHON), "-m", "benchmarks.spu.runner", "--arch", str(arch), "--weights", str(weights),
           "--inputs", str(inputs), "--out", str(out), *extra]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text())


def _save(tmp_path: Path, model: torch.nn.Module, x: torch.Tensor) -> tuple[Path, Path, Path]:
    arch, weights, inputs = tmp_path / "arch.json", tmp_path / "model.safetensors", tmp_path / "x.npy"
    arch.write_text(model.spec.to_json())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    np.save(inputs, x.numpy())
    return arch, weights, inputs


TWIN_CASES = {
    "vit": {}, "mpcformer": {}, "thex": {}, "relu": {}, "scale": {},
    "mixed": dict(attn=(("softmax", "relu", "scale", "2quad"), ("thex", "scale", "relu", "softmax")), act=("relu", "identity")),
    "per-token": dict(attn=(("relu", "scale", "relu", "scale"),) * 2, act=("gelu", "quad"), act_tokens=((0, 3, 7), None)),
    "fused": dict(attn=(("relu", "scale", "scale", "scale"),) * 2, act=("gelu", "identity")),
}


@needs_spu
@pytest.mark.parametrize("case", sorted(TWIN_CASES))
def test_twin_plaintext_logits_equal_torch(tmp_path: Path, case: str) -> None:
    """Every attention kind, activation, per-token choice and norm: the JAX twin's logits equal torch's to 1e-4."""
    variant = case if case in ("vit", "mpcformer", "thex", "relu", "scale") else "mpcvit"
    torch.manual_seed(0)
    model = build_model(model_spec(f"{variant}_2_4_8", **TWIN_CASES[case])).eval()
    for p in model.parameters():  # non-trivial norms and biases, so every weight matters
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        want = model(x).numpy()
    doc = _runner(tmp_path, *_save(tmp_path, model, x), "--plain-only")
    np.testing.assert_allclose(np.asarray(doc["plain_logits"]), want, atol=1e-4, rtol=0)


@needs_spu
def test_spu_runner_logits_match_plaintext(tmp_path: Path) -> None:
    """One trained digits model through two SPU nodes on loopback: logits open close to torch's plaintext."""
    model, _ = load_checkpoint(ROOT / "checkpoints" / "digits" / "mpcvit_2_4_8")
    torch.manual_seed(1)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        want = model(x).numpy()
    doc = _runner(tmp_path, *_save(tmp_path, model, x), "--mode", "nodes", "--networks", "none")
    (run,) = doc["runs"]
    got = np.asarray(run["logits"])
    assert np.abs(got - want).max() < 0.05  # 18 fraction bits, SPU's approximations
    assert (got.argmax(-1) == want.argmax(-1)).all()
    for party in run["parties"]:
        assert party["send_actions"] > 0 and party["send_bytes"] > 0
        assert party["per_op"]["HLO"]


@needs_spu
def test_twin_tanh_gelu_is_opt_in(tmp_path: Path) -> None:
    """gelu_form=tanh (spu_bench's default, SPU's best setting) changes the twin's GeLU; without it the twin stays torch's erf."""
    torch.manual_seed(0)
    model = build_model(model_spec("vit_2_4_8")).eval()
    for p in model.parameters():
        p.data.add_(0.5 * torch.randn_like(p))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        want = model(x).numpy()
    arch, weights, inputs = _save(tmp_path, model, x)
    erf = np.asarray(_runner(tmp_path, arch, weights, inputs, "--plain-only")["plain_logits"])
    arch.write_text(json.dumps({**json.loads(arch.read_text()), "gelu_form": "tanh"}))
    tanh = np.asarray(_runner(tmp_path, arch, weights, inputs, "--plain-only")["plain_logits"])
    np.testing.assert_allclose(erf, want, atol=1e-4, rtol=0)
    assert 0 < np.abs(tanh - erf).max() < 0.05
