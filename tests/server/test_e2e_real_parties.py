"""End to end with real processes on loopback: dealer, two parties (real 2PC), coordinator, mutual TLS.

``mpcvit classify`` (a separate process) on real digits test images must give
the plaintext model's class. Skipped only when the party process or the
trained digits checkpoint is not in this checkout.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import PrivateClient, preprocess

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "checkpoints" / "digits"
MODEL = "vit_2_4_8"
SAMPLES = ROOT / "server" / "static" / "samples"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(importlib.util.find_spec("parties.party") is None, reason="parties/party.py (the real party process) is not here"),
    pytest.mark.skipif(not (CHECKPOINTS / MODEL / "arch.json").is_file(), reason=f"no trained checkpoint {CHECKPOINTS / MODEL}"),
]


def test_mpcvit_classify_through_real_parties_gives_the_plaintext_class(tmp_path: Path) -> None:
    from mpcvit.localstack import LocalStack, StackConfig

    net, meta = load_checkpoint(CHECKPOINTS / MODEL)
    images = sorted(SAMPLES.glob("digits_*.png"))[:3]
    with torch.no_grad():
        expected = [int(net(normalise_input(preprocess(p, net.spec.input_shape)[None], meta)).argmax()) for p in images]

    with LocalStack(StackConfig(models_dir=CHECKPOINTS, model=MODEL, workdir=tmp_path / "stack")) as stack:
        assert stack.endpoints is not None
        url = stack.endpoints.coordinator_url
        for image, want in zip(images, expected):
            done = subprocess.run(
                [sys.executable, "-m", "mpcvit.cli", "classify", str(image), "--server", url, "--model", MODEL, "--json",
                 "--ca", str(stack.certs_dir / "ca" / "ca.pem")],
                capture_output=True, text=True, timeout=180, check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            out = json.loads(done.stdout)
            assert out["class_index"] == want, (image.name, out["logits"])
            assert out["costs"]["total"]["rounds"] > 0 and out["costs"]["total"]["bytes"] > 0
            assert [p["rank"] for p in out["costs"]["parties"]] == [0, 1]
        with PrivateClient(url, **stack.client_trust()) as client:  # the SDK too, and the logits are close to the plaintext ones
            r = client.classify(images[0], model=MODEL)
            with torch.no_grad():
                ref = net(normalise_input(preprocess(images[0], net.spec.input_shape)[None], meta))[0].double()
            assert torch.allclose(torch.tensor(r.logits, dtype=torch.float64), ref, atol=0.1), (r.logits, ref.tolist())


def test_an_imported_timm_vit_is_served_by_real_parties(tmp_path: Path) -> None:
    """``mpcvit import`` -> a models folder -> dealer, parties, coordinator: the private class is timm's."""
    from mpcvit.checkpoint import save_checkpoint
    from mpcvit.localstack import LocalStack, StackConfig
    from mpcvit.timm_import import build_timm, import_timm_model

    torch.manual_seed(5)
    timm_model = build_timm("deit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=4, num_classes=10)
    with torch.no_grad():
        for p in timm_model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    imported = import_timm_model(timm_model, "deit_tiny_patch16_224")
    save_checkpoint(tmp_path / "models" / "byo_deit", imported.model, imported.meta)
    image = sorted(SAMPLES.glob("fashion-mnist_*.png"))[0]
    with torch.no_grad():
        want = int(timm_model(normalise_input(preprocess(image, (3, 16, 16))[None], imported.meta)).argmax())
    with LocalStack(StackConfig(models_dir=tmp_path / "models", model="byo_deit", workdir=tmp_path / "stack")) as stack:
        assert stack.endpoints is not None
        with PrivateClient(stack.endpoints.coordinator_url, **stack.client_trust()) as client:
            r = client.classify(image, model="byo_deit")
    assert r.class_index == want, r.logits
