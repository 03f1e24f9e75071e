"""``mpcvit train-queue``: run a plan of ``mpcvit train`` runs, several at a time, resumable.

The plan format and the scheduling are described in ``mpcvit/queue.py``. Run the
same command again after an interruption: finished runs are skipped and the
others continue from their last epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "run a plan of training runs, several at once, resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="plan JSON (e.g. results/fashion_mnist_plan.json)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default 1)")
    parser.add_argument("--device", default="cpu", help="device of every run: cpu (default) or cuda")
    parser.add_argument("--stop-after-minutes", type=float,
                        help="end every run cleanly (between epochs) by then; start none that cannot finish")
    parser.add_argument("--root", help="checkpoint root (default: the plan's)")
    parser.add_argument("--data-dir", help="dataset directory (default: the plan's; required for cifar10)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these runs (their teachers must exist)")
    parser.add_argument("--epochs", type=int, help="replace every run's epochs (smoke tests)")
    parser.add_argument("--limit", type=int, help="train and test on the first N images only (smoke tests)")
    parser.add_argument("--status-every", type=float, default=20.0, help="seconds between progress lines")
    parser.add_argument("--dry-run", action="store_true", help="print each run's mpcvit train command and stop")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mpcvit.queue import Plan, is_finished, run_queue, train_argv

    plan = Plan.from_json(Path(args.plan).read_text(), epochs=args.epochs)
    if args.root:
        plan = replace(plan, root=Path(args.root))
    if args.data_dir:
        plan = replace(plan, data_dir=args.data_dir)
    if args.only:
        unknown = set(args.only) - {r.name for r in plan.runs}
        if unknown:
            raise ValueError(f"no run(s) {sorted(unknown)} in {args.plan}")
        plan = replace(plan, runs=tuple(r for r in plan.runs if r.name in args.only or
                                        any(o.teacher == r.name for o in plan.runs if o.name in args.only)))
    if args.dry_run:
        for r in plan.runs:
            state = "done" if is_finished(plan, r) else "todo"
            print(f"# {r.name} [{r.tier}, {state}]\nmpcvit {' '.join(train_argv(plan, r, device=args.device, limit=args.limit))}")
        return 0
    stop_at = time.time() + 60 * args.stop_after_minutes if args.stop_after_minutes else None
    state = run_queue(plan, jobs=args.jobs, device=args.device, stop_at=stop_at, limit=args.limit,
                      status_every=args.status_every)
    print(json.dumps(state.status, indent=1))
    return 0 if all(v == "done" for v in state.status.values()) else 3
