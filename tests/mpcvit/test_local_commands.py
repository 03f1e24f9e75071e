"""The local, plaintext commands a newcomer meets first: ``mpcvit eval``'s name line, ``mpcvit predict``, quiet logs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from mpcvit.checkpoint import checkpoint_label, load_checkpoint, normalise_input
from mpcvit.cli import QUIET_LOGGERS, main
from mpcvit.client import preprocess

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "checkpoints" / "digits" / "vit_2_4_8"
IMAGE = ROOT / "server" / "static" / "samples" / "digits_00008_3.png"


@pytest.fixture
def renamed(tmp_path: Path) -> Path:
    """The digits ViT in a folder of another name, as a run of a search or a seed would be."""
    d = tmp_path / "vit_2_4_8_seed1"
    shutil.copytree(DIGITS, d)
    return d


def test_eval_names_the_checkpoint_folder(renamed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--checkpoint", str(renamed), "--threads", "1"]) == 0
    assert capsys.readouterr().out.startswith("vit_2_4_8_seed1 (vit_2_4_8) on digits (test, 360 images): accuracy ")
    assert main(["eval", "--checkpoint", str(renamed), "--threads", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["name"] == "vit_2_4_8_seed1" and res["model"] == "vit_2_4_8"
    assert checkpoint_label(DIGITS, {"model": "vit_2_4_8"}) == "vit_2_4_8"  # no repetition when they agree


def test_predict_gives_the_plaintext_class_of_one_image(renamed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, meta = load_checkpoint(renamed)
    with torch.no_grad():
        expected = int(net(normalise_input(preprocess(IMAGE, (1, 8, 8))[None], meta)).argmax())
    assert main(["predict", str(IMAGE), "--checkpoint", str(renamed), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["class_index"] == expected and res["class_name"] == meta["class_names"][expected]
    assert res["name"] == "vit_2_4_8_seed1" and len(res["logits"]) == 10
    assert sum(res["probabilities"]) == pytest.approx(1.0)
    assert main(["predict", str(IMAGE), "--checkpoint", str(renamed)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"class: {meta['class_names'][expected]} (index {expected}, p=")
    assert "vit_2_4_8_seed1 (vit_2_4_8), plaintext" in text[0] and text[1].startswith("top: ")
    assert main(["predict", str(IMAGE.with_name("missing.png")), "--checkpoint", str(renamed)]) == 1
    assert "no such image file" in capsys.readouterr().err


@pytest.fixture
def restore_log_levels() -> object:
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield levels
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_httpx_request_lines_only_with_verbose(restore_log_levels: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert all(logging.getLogger(name).getEffectiveLevel() == logging.WARNING for name in QUIET_LOGGERS)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    assert main(["-v", "models"]) == 0
    assert logging.getLogger("httpx").level == logging.NOTSET  # -v: left as the root logger says
    capsys.readouterr()
