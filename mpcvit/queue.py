"""A resumable training queue: one plan (JSON), many ``mpcvit train`` runs, several at a time.

A plan names a dataset, a checkpoint root, one recipe (``TrainConfig`` fields)
and a list of runs, most important first::

    {"dataset": "fashion-mnist", "root": "checkpoints/fashion-mnist",
     "recipe": {"epochs": 40, "batch_size": 512, "lr": 0.003, ...},
     "runs": [{"name": "vit_4_4_28", "model": "vit_4_4_28", "seed": 0},
              {"name": "mpcvit_4_4_28_mu0.1", "arch": "results/search/arch/mpcvit_mu0.1.json",
               "teacher": "vit_4_4_28", "seed": 0},
              {"name": "vit_4_4_28_e80", "model": "vit_4_4_28", "recipe": {"epochs": 80}, "tier": "probe"}]}

Each run is one ``mpcvit train`` process writing ``root/name`` (its exact command
lands in the checkpoint's ``meta.json``). A run whose ``teacher`` names another
run waits until that run's checkpoint exists. Up to ``jobs`` runs train at once
(on one GPU they share it). Running the queue again skips finished runs and
resumes the others from their last epoch (``resume.pt``); a stop time ends every
run cleanly between epochs and starts no run that its measured epoch time says
cannot finish. Progress (runs and epochs done, epochs per second, ETA) is
printed every ``status_every`` seconds and kept in ``root/queue_status.json``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpcvit.train import PROGRESS_FILE, TrainConfig

log = logging.getLogger(__name__)

STATUS_FILE = "queue_status.json"
EXIT_STOPPED = 3  # mpcvit train's status for "stopped at --stop-at, resumable"
MAX_ATTEMPTS = 2  # a run that fails is started once more (it resumes from its last epoch)

# TrainConfig field -> mpcvit train flag (flip is --flip / --no-flip)
_FLAGS: dict[str, str] = {
    "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "weight_decay": "--weight-decay",
    "warmup_epochs": "--warmup-epochs", "label_smoothing": "--label-smoothing", "pad": "--pad",
    "kd_alpha": "--kd-alpha", "kd_temperature": "--kd-temperature", "kd_feature_weight": "--kd-feature-weight",
}


@dataclass(frozen=True)
class Run:
    """One training run of a plan."""

    name: str
    recipe: dict[str, Any]
    seed: int = 0
    model: str | None = None
    arch: str | None = None
    teacher: str | None = None
    tier: str = "main"

    @property
    def epochs(self) -> int:
        return int(self.recipe["epochs"])


@dataclass(frozen=True)
class Plan:
    dataset: str
    root: Path
    runs: tuple[Run, ...]
    data_dir: str | None = None

    @classmethod
    def from_json(cls, text: str, epochs: int | None = None) -> "Plan":
        """Parse a plan; ``epochs`` replaces every run's epoch count (smoke tests)."""
        doc = json.loads(text)
        base = dict(doc.get("recipe", {}))
        known = {f for f in TrainConfig.__dataclass_fields__} - {"seed", "min_lr_ratio", "grad_clip"}
        runs = []
        for r in doc["runs"]:
            recipe = {**base, **r.get("recipe", {})}
            if epochs is not None:
                recipe["epochs"] = epochs
            unknown = set(recipe) - known
            if unknown:
                raise ValueError(f"run {r['name']}: unknown recipe option(s) {sorted(unknown)}")
            if "epochs" not in recipe:
                raise ValueError(f"run {r['name']}: no epochs in its recipe")
            if bool(r.get("model")) == bool(r.get("arch")):
                raise ValueError(f"run {r['name']}: give exactly one of model and arch")
            runs.append(Run(r["name"], recipe, int(r.get("seed", 0)), r.get("model"), r.get("arch"),
                            r.get("teacher"), r.get("tier", "main")))
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ValueError("run names must be unique")
        for r in runs:
            if r.teacher is not None and r.teacher not in names:
                raise ValueError(f"run {r.name}: teacher {r.teacher!r} is not a run of this plan")
        return cls(doc["dataset"], Path(doc["root"]), tuple(runs), doc.get("data_dir"))

    def out_dir(self, run: Run) -> Path:
        return self.root / run.name


def train_argv(plan: Plan, run: Run, *, device: str, limit: int | None = None) -> list[str]:
    """The ``mpcvit train`` arguments of ``run`` (what its meta.json's command will read)."""
    argv = ["train", "--model", run.model] if run.model else ["train", "--arch", str(run.arch)]
    argv += ["--dataset", plan.dataset, "--out", str(plan.out_dir(run)), "--seed", str(run.seed)]
    for key, value in sorted(run.recipe.items()):
        if key == "flip":
            argv.append("--flip" if value else "--no-flip")
        elif not (key.startswith("kd_") and run.teacher is None):
            argv += [_FLAGS[key], str(value)]
    if run.teacher:
        argv += ["--teacher", str(plan.root / run.teacher)]
    if plan.data_dir:
        argv += ["--data-dir", plan.data_dir]
    argv += ["--device", device, "--eval-each-epoch"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    return argv


def is_finished(plan: Plan, run: Run) -> bool:
    """A checkpoint of this run's length and seed exists."""
    meta_path = plan.out_dir(run) / "meta.json"
    if not (meta_path.is_file() and (plan.out_dir(run) / "model.safetensors").is_file()):
        return False
    meta = json.loads(meta_path.read_text())
    return meta.get("epochs") == run.epochs and meta.get("train", {}).get("seed") == run.seed


def read_progress(plan: Plan, run: Run) -> dict[str, Any]:
    path = plan.out_dir(run) / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class _Slot:
    run: Run
    proc: subprocess.Popen[bytes]
    started: float


@dataclass
class QueueState:
    status: dict[str, str] = field(default_factory=dict)  # name -> pending/running/done/stopped/failed/deferred
    attempts: dict[str, int] = field(default_factory=dict)
    epochs_at_start: int = 0


def _epochs_done(plan: Plan, run: Run) -> int:
    if is_finished(plan, run):
        return run.epochs
    return int(read_progress(plan, run).get("epoch", 0))


def _epoch_seconds(plan: Plan, runs: list[Run]) -> float | None:
    """Median measured seconds per epoch over runs that reported one (None before any has)."""
    seen = [read_progress(plan, r).get("seconds_per_epoch") for r in runs]
    seen = [s for s in seen if s]
    return statistics.median(seen) if seen else None


def _status_line(plan: Plan, state: QueueState, slots: list[_Slot], t0: float) -> dict[str, Any]:
    total = sum(r.epochs for r in plan.runs)
    done = sum(_epochs_done(plan, r) for r in plan.runs)
    elapsed = time.time() - t0
    rate = (done - state.epochs_at_start) / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    running = {s.run.name: f"{_epochs_done(plan, s.run)}/{s.run.epochs}" for s in slots}
    counts = {k: sum(1 for v in state.status.values() if v == k) for k in set(state.status.values())}
    doc = {
        "elapsed_s": round(elapsed, 1), "epochs_done": done, "epochs_total": total,
        "epochs_per_s": round(rate, 3), "eta_s": None if eta is None else round(eta), "runs": counts,
        "running": running, "status": state.status, "updated": time.time(),
    }
    eta_text = "?" if eta is None else f"{int(eta) // 60}m{int(eta) % 60:02d}s"
    print(
        f"[{elapsed:6.0f}s] runs {counts.get('done', 0)}/{len(plan.runs)} done, {len(slots)} running; "
        f"epochs {done}/{total} ({rate:.2f}/s), ETA {eta_text} | "
        + " ".join(f"{k} {v}" for k, v in running.items()),
        flush=True,
    )
    return doc


def run_queue(
    plan: Plan,
    *,
    jobs: int = 1,
    device: str = "cpu",
    stop_at: float | None = None,
    limit: int | None = None,
    status_every: float = 20.0,
    python: str = sys.executable,
) -> QueueState:
    """Run every unfinished run of ``plan`` (see the module docstring); returns each run's final status."""
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    plan.root.mkdir(parents=True, exist_ok=True)
    state = QueueState()
    for r in plan.runs:
        state.status[r.name] = "done" if is_finished(plan, r) else "pending"
    state.epochs_at_start = sum(_epochs_done(plan, r) for r in plan.runs)
    slots: list[_Slot] = []
    t0 = last_status = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def ready(r: Run) -> bool:
        waiting = state.status[r.name] in ("pending", "deferred")  # deferred: re-checked as epoch times change
        return waiting and (r.teacher is None or state.status[r.teacher] == "done")

    try:
        while True:
            for s in list(slots):
                rc = s.proc.poll()
                if rc is None:
                    continue
                slots.remove(s)
                name = s.run.name
                if rc == 0 and is_finished(plan, s.run):
                    state.status[name] = "done"
                elif rc == EXIT_STOPPED:
                    state.status[name] = "stopped"
                elif state.attempts[name] < MAX_ATTEMPTS and (stop_at is None or time.time() < stop_at):
                    log.warning("%s exited with %s; starting it again (it resumes)", name, rc)
                    state.status[name] = "pending"
                else:
                    state.status[name] = "failed"
                print(f"{name}: {state.status[name]} (exit {rc}, {time.time() - s.started:.0f}s)", flush=True)
            per_epoch = _epoch_seconds(plan, list(plan.runs))
            for r in plan.runs:
                if len(slots) >= jobs:
                    break
                if not ready(r):
                    continue
                left = r.epochs - _epochs_done(plan, r)
                if stop_at is not None and per_epoch is not None and time.time() + 1.15 * per_epoch * left > stop_at:
                    state.status[r.name] = "deferred"  # cannot finish by the stop time; the next queue run starts it
                    continue
                argv = [python, "-m", "mpcvit", "train", *train_argv(plan, r, device=device, limit=limit)[1:],
                        "--no-progress", "--threads", "1"]
                if stop_at is not None:
                    argv += ["--stop-at", f"{stop_at:.0f}"]
                plan.out_dir(r).mkdir(parents=True, exist_ok=True)
                logf = open(plan.out_dir(r) / "train.log", "ab")
                proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
                logf.close()
                state.attempts[r.name] = state.attempts.get(r.name, 0) + 1
                state.status[r.name] = "running"
                slots.append(_Slot(r, proc, time.time()))
                print(f"start {r.name} ({r.tier}, {left} epochs left)", flush=True)
            if not slots:
                break
            if time.time() - last_status >= status_every:
                doc = _status_line(plan, state, slots, t0)
                (plan.root / STATUS_FILE).write_text(json.dumps(doc, indent=1))
                last_status = time.time()
            time.sleep(1.0)
    finally:
        for s in slots:  # interrupted: each child loses at most its current epoch
            s.proc.terminate()
        for s in slots:
            s.proc.wait()
    for r in plan.runs:
        if state.status[r.name] == "pending":  # waited on a teacher that did not finish
            state.status[r.name] = "deferred"
    doc = _status_line(plan, state, [], t0)
    (plan.root / STATUS_FILE).write_text(json.dumps(doc, indent=1))
    return state
