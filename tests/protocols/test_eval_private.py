"""``mpcvit eval-private`` on a digits checkpoint: JSON with accuracies, agreement, errors and costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpcvit.checkpoint import save_checkpoint
from mpcvit.cli import main
from tests.protocols.helpers import NORMALISATION, trained


@pytest.mark.timeout(400)
def test_eval_private_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(tmp_path / "ckpt", trained("mpcvit_2_4_8"), {"dataset": "digits", "normalisation": NORMALISATION})
    assert main(["eval-private", "--checkpoint", str(ckpt), "--limit", "24", "--batch-size", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("plaintext_accuracy", "private_accuracy", "agreement", "max_abs_logit_error", "rounds", "bytes", "seconds", "per_op"):
        assert key in out
    assert out["provider"] == "dealer" and out["images"] == 24
    assert out["agreement"] >= 0.95 and out["max_abs_logit_error"] < 0.25
    assert out["rounds"] == 2 * out["per_batch"]["rounds"]  # two batches, same rounds each
    assert {"attention-relu", "attention-matmul", "norm", "linear"} <= set(out["per_op"])
    assert out["gate_fallbacks"] == 0  # every comparison of these batches ran on the DCF gate, as served


def test_eval_private_reports_comparisons_that_fell_back() -> None:
    """A batch whose GeLU is over ``fss_max_values`` runs it on the ring circuits: the result says so."""
    import torch

    from protocols.config import DEFAULT_CONFIG
    from protocols.evaluate import evaluate_private

    model = trained("mpcvit_2_4_8")
    images = torch.rand(4, *model.spec.input_shape, generator=torch.Generator().manual_seed(0))
    meta = {"dataset": "digits", "normalisation": NORMALISATION}
    small = evaluate_private(model, meta, images, batch_size=4, config=DEFAULT_CONFIG.with_(fss_max_values=100))
    assert small["gate_fallbacks"] > 0 and small["agreement"] == 1.0


def test_eval_private_rejects_bad_limit(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "ckpt", trained("mpcvit_2_4_8"), {"dataset": "digits", "normalisation": NORMALISATION})
    assert main(["eval-private", "--checkpoint", str(ckpt), "--limit", "0"]) == 1
