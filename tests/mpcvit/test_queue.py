"""The training queue: plan parsing, the exact train commands, a run end to end (teacher, then a distilled
student), skipping finished runs, and the clean stop between epochs that a later run resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import mpcvit
from mpcvit.queue import Plan, is_finished, run_queue, train_argv
from mpcvit.train import PROGRESS_FILE, RESUME_FILE, train_model


def _plan(tmp_path: Path, **recipe: object) -> Plan:
    doc = {
        "dataset": "digits", "root": str(tmp_path / "ck"),
        "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.004, "warmup_epochs": 0.5, "pad": 0, "flip": False,
                   "kd_alpha": 0.5, **recipe},
        "runs": [
            {"name": "vit_2_4_8", "model": "vit_2_4_8"},
            {"name": "scale_2_4_8_kd", "model": "scale_2_4_8", "teacher": "vit_2_4_8", "seed": 1},
            {"name": "vit_2_4_8_e3", "model": "vit_2_4_8", "recipe": {"epochs": 3}, "tier": "probe"},
        ],
    }
    return Plan.from_json(json.dumps(doc))


def test_plan_parses_and_builds_train_commands(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert [r.epochs for r in plan.runs] == [2, 2, 3]
    student = train_argv(plan, plan.runs[1], device="cuda")
    assert student[:3] == ["train", "--model", "scale_2_4_8"]
    assert student[student.index("--teacher") + 1] == str(plan.root / "vit_2_4_8")
    assert student[student.index("--seed") + 1] == "1" and "--kd-alpha" in student and "--no-flip" in student
    assert student[-3:] == ["--device", "cuda", "--eval-each-epoch"]
    assert "--kd-alpha" not in train_argv(plan, plan.runs[0], device="cpu")  # no teacher, no KD options
    with pytest.raises(ValueError, match="unknown recipe"):
        _plan(tmp_path, momentum=0.9)
    bad = {"dataset": "digits", "root": "x", "recipe": {"epochs": 1},
           "runs": [{"name": "a", "model": "vit_2_4_8", "teacher": "nobody"}]}
    with pytest.raises(ValueError, match="not a run"):
        Plan.from_json(json.dumps(bad))


def test_queue_trains_teacher_then_student_and_skips_finished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(tmp_path)
    state = run_queue(plan, jobs=2, limit=200, status_every=0.0)
    assert set(state.status.values()) == {"done"}, state.status
    meta = json.loads((plan.root / "scale_2_4_8_kd" / "meta.json").read_text())
    assert meta["distilled"] and meta["teacher"] == str(plan.root / "vit_2_4_8") and meta["train"]["seed"] == 1
    assert "--eval-each-epoch" in meta["command"] and len(meta["history"]) == 2
    assert all("test_accuracy" in h for h in meta["history"])
    assert json.loads((plan.root / "vit_2_4_8_e3" / PROGRESS_FILE).read_text())["epoch"] == 3
    out = capsys.readouterr().out
    assert "ETA" in out and "start vit_2_4_8 " in out
    mtime = (plan.root / "vit_2_4_8" / "model.safetensors").stat().st_mtime
    again = run_queue(plan, jobs=2, limit=200)  # everything is finished: nothing runs again
    assert set(again.status.values()) == {"done"}
    assert (plan.root / "vit_2_4_8" / "model.safetensors").stat().st_mtime == mtime
    assert all(is_finished(plan, r) for r in plan.runs)


def test_stop_at_ends_between_epochs_and_resume_finishes(tmp_path: Path) -> None:
    from mpcvit.data import load_dataset

    torch.manual_seed(0)
    model = mpcvit.create_model("vit_2_4_8")
    opts = dict(epochs=3, progress=False, batch_size=64, lr=4e-3, out_dir=tmp_path, limit=300, eval_each_epoch=True)
    first = train_model(model, "digits", stop_at=time.time() - 1, **opts)  # one epoch always runs, then it stops
    assert first["completed"] is False and first["epochs_done"] == 1 and "test_accuracy" not in first
    assert (tmp_path / RESUME_FILE).is_file()
    torch.manual_seed(0)
    resumed = train_model(mpcvit.create_model("vit_2_4_8"), "digits", **opts)
    assert resumed["completed"] and [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert 0.0 <= resumed["test_accuracy"] <= 1.0 and load_dataset("digits", "test").tensors[0].shape[0] > 300
