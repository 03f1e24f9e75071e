"""The hostile-coordinator bench's long tier: a random sequence of hostile calls and restarts, then every check.

    python -m tests.security.hostile_bench --steps 120 --seed 1 --out results/security/hostile_bench.json

Starts the real dealer and two recording parties (``tests/security/hostile.py``)
and plays a coordinator that, at each step, picks one of: a load (a public,
private or smaller model; a fresh session id, or one already used, before or
after a restart), an honest forward, a forward with swapped tickets, a
replayed ticket, a batch with a tampered box (then its valid members alone),
or a restart of the dealer, a party or both parties. Every answer is
compared with the plaintext model. At the end it checks, over everything the
recorders kept: no two loads' weight openings cancel a mask (for every pair
of loads party 1 saw), no dealer key was handed out twice, and the two
parties of a batch always held the same commitment. The JSON report lists
each step and the totals; the process exits 1 if any check fails or any
answer was wrong. The quick tier is ``tests/security/test_hostile_coordinator.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import torch

from tests.security.hostile import (
    Stack,
    _index,
    cancelled_entries,
    encoded_weights,
    failed,
    keys_received,
    loads_recorded,
)

ACTIONS = ("load", "load_same_session", "infer", "swap_tickets", "replay_ticket", "poison", "restart")
WEIGHTS = (2, 2, 5, 2, 1, 1, 2)


def _images(rng: random.Random, n: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(rng.randrange(1 << 30)))


class Bench:
    def __init__(self, stack: Stack, rng: random.Random) -> None:
        self.stack = stack
        self.rng = rng
        self.loads: list[tuple[str, str]] = []  # (model, session) of every load that succeeded, in order
        self.used_sessions: list[str] = []
        self.loaded: str | None = None
        self.series = "bench-" + uuid.uuid4().hex
        self.number = 0
        self.answers = self.wrong = 0
        self.errors: Counter[str] = Counter()

    def _check(self, model: str, replies: list, clients: list, images: torch.Tensor) -> str:
        if failed(replies):
            codes = sorted({e.code().name for e in failed(replies)})
            self.errors[",".join(codes)] += 1
            return "error " + ",".join(codes)
        logits = self.stack.open_logits(model, replies, clients)
        expected = self.stack.plaintext(model, images)
        self.answers += len(images)
        bad = int(((logits - expected).abs().amax(-1) > 0.05).sum())
        self.wrong += bad
        return f"answered {len(images)}, wrong {bad}"

    def _ensure_loaded(self) -> str:
        if self.loaded is None:
            self.do_load(fresh=True)
        return self.loaded or "private"

    def do_load(self, fresh: bool) -> str:
        model = self.rng.choice(("public", "private", "private2", "small"))
        session = uuid.uuid4().hex if fresh or not self.used_sessions else self.rng.choice(self.used_sessions)
        replies = self.stack.load(model, session)
        self.used_sessions.append(session)
        if failed(replies):
            return f"load {model} under {'a fresh' if fresh else 'a used'} session: refused ({failed(replies)[0].code().name})"
        self.loads.append((model, session))
        self.loaded = model
        return f"load {model} under {'a fresh' if fresh else 'a used'} session: loaded"

    def do_infer(self, tickets: str = "honest") -> str:
        model = self._ensure_loaded()
        images = _images(self.rng, self.rng.choice((1, 2)))
        n = self.number
        self.number += 3
        pair = {"honest": ((self.series, n), (self.series, n)), "swap": ((self.series, n), (self.series, n + 1)),
                "replay": ((self.series, max(0, n - 3)), (self.series, max(0, n - 3)))}[tickets]
        requests, clients = self.stack.infer_requests(model, images, tickets=pair, deadline_s=30)
        return f"infer ({tickets} tickets): " + self._check(model, self.stack.both("Infer", requests), clients, images)

    def do_poison(self) -> str:
        model = self._ensure_loaded()
        images = _images(self.rng, 3)
        requests, clients = self.stack.infer_requests(model, images, tamper={2}, deadline_s=30)
        first = self._check(model, self.stack.both("Infer", requests), clients, images)
        results = []
        for i in range(2):
            single = self.stack.item_alone(requests, i)
            results.append(self._check(model, self.stack.both("Infer", single), [clients[i]], images[i : i + 1]))
        return f"poisoned batch: {first}; its valid members alone: {'; '.join(results)}"

    def do_restart(self) -> str:
        roles = self.rng.choice((("dealer",), ("party0",), ("party1",), ("party0", "party1"), ("dealer", "party0")))
        self.stack.restart(*roles)
        if any(r.startswith("party") for r in roles):
            self.loaded = None  # a restarted party lost its models
        return f"restart {' and '.join(roles)}"

    def step(self, action: str) -> str:
        if action == "load":
            return self.do_load(fresh=True)
        if action == "load_same_session":
            return self.do_load(fresh=False)
        if action == "infer":
            return self.do_infer("honest")
        if action == "swap_tickets":
            return self.do_infer("swap")
        if action == "replay_ticket":
            return self.do_infer("replay")
        if action == "poison":
            return self.do_poison()
        return self.do_restart()

    def final_checks(self) -> dict:
        """Every weight-mask opening party 1 recorded (one per load that reached it, whatever became of the load),
        each pair compared under every labelling by the models of its shape: a pair of loads of models X and Y
        cancels a mask if D_B - D_A = W_Y - W_X on some entry, so no labelling may find one."""
        record = self.stack.record_dir(1)
        weights = {name: encoded_weights(model) for name, model in self.stack.models.items()}
        kinds = {}  # shape signature -> (weight names, the models of that shape)
        for name, model in self.stack.models.items():
            signature = tuple(tuple(w.shape) for w in weights[name].values())
            kinds.setdefault(signature, (list(weights[name]), []))[1].append(name)
        openings = []
        for session_openings in _index(record).values():
            for opened in session_openings:
                signature = tuple(tuple(t.shape) for t in opened)
                if signature in kinds:
                    names, models = kinds[signature]
                    openings.append((models, dict(zip(names, opened))))
        worst = compared = pairs = 0
        for i, (models_a, d_a) in enumerate(openings):
            for models_b, d_b in openings[i + 1:]:
                pairs += 1
                for a in models_a:
                    for b in models_b:
                        hit, total = cancelled_entries(d_a, d_b, weights[a], weights[b])
                        worst, compared = max(worst, hit), compared + total
        received = keys_received(self.stack.record_dir(0)) + keys_received(record)
        repeats = sum(c - 1 for c in Counter(e["key"] for e in received).values() if c > 1)
        by_name: dict[tuple[str, str], set[str]] = {}
        for entry in received:
            by_name.setdefault((entry["batch"], entry["instance"]), set()).add(entry["commitment"])
        load_ids = loads_recorded(record)
        return {
            "weight_openings_recorded": len(openings), "load_pairs_compared": pairs, "weight_entries_compared": compared, "most_entries_cancelled_in_a_pair": worst,
            "dealer_keys_received": len(received), "dealer_keys_repeated": repeats,
            "batches_with_two_commitments": sum(len(c) > 1 for c in by_name.values()),
            "load_ids": len(load_ids), "load_ids_repeated": len(load_ids) - len(set(load_ids)),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.hostile_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="hostile steps to run (default 120)")
    parser.add_argument("--seed", type=int, default=1, help="the sequence's seed (the bench's choices only; no mask)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    t0 = time.time()
    steps = []
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.start()
            bench = Bench(stack, rng)
            for i in range(args.steps):
                action = rng.choices(ACTIONS, WEIGHTS)[0]
                outcome = bench.step(action)
                steps.append({"step": i, "action": action, "outcome": outcome})
                print(f"[{i + 1}/{args.steps}] {outcome}", flush=True)
            checks = bench.final_checks()
        finally:
            stack.close()
    ok = (bench.wrong == 0 and checks["most_entries_cancelled_in_a_pair"] == 0 and checks["dealer_keys_repeated"] == 0
          and checks["batches_with_two_commitments"] == 0 and checks["load_ids_repeated"] == 0)
    report = {
        "command": "python -m tests.security.hostile_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "seconds": round(time.time() - t0, 1),
        "passed": ok,
        "answers": bench.answers, "wrong_answers": bench.wrong, "errors_by_code": dict(bench.errors),
        "loads": len(bench.loads), "actions": dict(Counter(s["action"] for s in steps)),
        "checks": checks, "steps": steps,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "steps"}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
