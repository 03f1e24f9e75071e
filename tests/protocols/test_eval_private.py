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


def test_eval_private_rejects_bad_limit(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "ckpt", trained("mpcvit_2_4_8"), {"dataset": "digits", "normalisation": NORMALISATION})
    assert main(["eval-private", "--checkpoint", str(ckpt), "--limit", "0"]) == 1
