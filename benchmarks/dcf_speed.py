"""DCF key generation and evaluation CPU time: this tree's ``protocols.dcf`` against a baseline revision of it.

    python benchmarks/dcf_speed.py [--repeats 5] [--baseline 683536a] [--out results/dcf_speed.json] [--smoke]

Single thread (``MPCVIT_DCF_THREADS=1``), CPU seconds of the calling thread
(``time.thread_time``), the minimum of ``repeats`` runs, the baseline and
this tree alternating in the same process so that both see the same machine
load. The cases are the runtime's sizes: the dealer's keys for 200,000
values on 9 and 19 levels (payload 2) and a party's evaluation of 33,280
values at J = 9 shifts on 9 levels and J = 3 shifts on 23 levels (payload 2).
Every case first checks that both give the same words (keys) and shares
(evaluation). The baseline module is read with ``git show REV:protocols/dcf.py``
(default: the revision before the blocked rewrite); without git or that
revision only this tree is timed. ``--smoke`` runs tiny sizes (seconds).

Beside them (``one_bit``), this tree's one-bit keys (``dcf.keygen_bit`` /
``evaluate_bit``, the select gate of the ReLU-softmax heads) against its
two-word keys (payload 2, the one-round product gate) for the same
comparison: the ReLU-softmax heads' sizes (16,900 values a layer at 7_4_32,
and 200,000), 19 levels (the (20, 6) ring), one point per value; each case
first checks that the one-bit shares XOR to the two-word shares' bit.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ["MPCVIT_DCF_THREADS"] = "1"  # before the module reads it: one thread, the caller's
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from protocols import dcf  # noqa: E402

BASELINE = "683536a"  # protocols/dcf.py before the cache-blocked key generation and evaluation
CASES = [  # (kind, values, levels, shifts J, payload)
    ("keygen", 200_000, 9, 0, 2),
    ("keygen", 200_000, 19, 0, 2),
    ("evaluate", 33_280, 9, 9, 2),
    ("evaluate", 33_280, 23, 3, 2),
]
SMOKE_CASES = [("keygen", 3_000, 9, 0, 2), ("evaluate", 1_000, 9, 3, 2)]
ONE_BIT_CASES = [(16_900, 19), (200_000, 19)]  # (values, levels)
SMOKE_ONE_BIT = [(2_000, 19)]


def _one_bit_case(n: int, bits: int, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    """The one-bit key against the two-word key for [x < alpha] on n values: CPU of the dealer's keys and of one
    party's evaluation at one point a value; checks the shares first."""
    alpha = rng.integers(0, 1 << bits, n, dtype=np.uint64)
    beta = np.stack([np.ones(n, dtype=np.uint64), rng.integers(0, 2**64, n, dtype=np.uint64)], 1)
    s0, s1 = (rng.integers(0, 2**64, (n, 2), dtype=np.uint64) for _ in range(2))
    points = rng.integers(0, 1 << bits, (1, n), dtype=np.uint64)
    words2 = dcf.keygen(alpha, beta, bits, s0, s1)
    words1 = dcf.keygen_bit(alpha, bits, s0, s1)
    bit = dcf.evaluate_bit(0, s0, words1, bits, points) ^ dcf.evaluate_bit(1, s1, words1, bits, points)
    two = dcf.evaluate(0, dcf.unpack(s0, words2, bits, 2), points) + dcf.evaluate(1, dcf.unpack(s1, words2, bits, 2), points)
    calls = {"keygen_two_word": lambda: dcf.keygen(alpha, beta, bits, s0, s1),
             "keygen_one_bit": lambda: dcf.keygen_bit(alpha, bits, s0, s1),
             "evaluate_two_word": lambda: dcf.evaluate(1, dcf.unpack(s1, words2, bits, 2), points),
             "evaluate_one_bit": lambda: dcf.evaluate_bit(1, s1, words1, bits, points)}
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            best[name] = min(best[name], _cpu(call))
    return {"values": n, "levels": bits, "same_bits": bool(np.array_equal(bit, two[..., 0])),
            "key_words_two_word": dcf.key_words(bits, 2), "key_words_one_bit": dcf.key_words(bits, dcf.BIT_PAYLOAD),
            **{f"{k}_cpu_s": round(v, 4) for k, v in best.items()},
            "keygen_one_bit_over_two_word": round(best["keygen_one_bit"] / best["keygen_two_word"], 2),
            "evaluate_one_bit_over_two_word": round(best["evaluate_one_bit"] / best["evaluate_two_word"], 2)}


def _baseline(rev: str) -> tuple[ModuleType | None, str]:
    """The baseline module from git, or None and why not."""
    try:
        src = subprocess.run(["git", "show", f"{rev}:protocols/dcf.py"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"git show {rev}:protocols/dcf.py failed: {exc}"
    with tempfile.NamedTemporaryFile("w", suffix="_dcf_baseline.py", delete=False) as f:
        f.write(src)
    try:
        spec = importlib.util.spec_from_file_location("dcf_baseline", f.name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.unlink(f.name)
    return module, ""


def _cpu(fn: Any) -> float:  # noqa: ANN401
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def _case(kind: str, n: int, bits: int, shifts: int, payload: int, modules: dict[str, ModuleType], repeats: int,
          rng: np.random.Generator) -> dict[str, Any]:
    alpha = rng.integers(0, 1 << bits, n, dtype=np.uint64)
    beta = rng.integers(0, 2**64, (n, payload), dtype=np.uint64)
    s0, s1 = (rng.integers(0, 2**64, (n, 2), dtype=np.uint64) for _ in range(2))
    if kind == "keygen":
        calls = {name: (lambda m=m: m.keygen(alpha, beta, bits, s0, s1)) for name, m in modules.items()}
    else:
        words = dcf.keygen(alpha, beta, bits, s0, s1)
        points = rng.integers(0, 1 << bits, (shifts, n), dtype=np.uint64)
        calls = {name: (lambda m=m: m.evaluate(1, m.unpack(s1, words, bits, payload), points)) for name, m in modules.items()}
    results = {name: call() for name, call in calls.items()}
    same = all(np.array_equal(r, results["new"]) for r in results.values())
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):  # alternating, so that both see the same load
        for name, call in calls.items():
            best[name] = min(best[name], _cpu(call))
    row: dict[str, Any] = {"kind": kind, "values": n, "levels": bits, "shifts": shifts, "payload": payload,
                           "identical": same, "new_cpu_s": round(best["new"], 4)}
    if "old" in best:
        row["old_cpu_s"] = round(best["old"], 4)
        row["old_over_new"] = round(best["old"] / best["new"], 2)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each, minimum kept (default 5)")
    ap.add_argument("--baseline", default=BASELINE, help=f"git revision of the old module (default {BASELINE})")
    ap.add_argument("--out", default="results/dcf_speed.json", help="JSON output path")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks that the script runs")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    repeats = 1 if args.smoke else args.repeats
    old, why = _baseline(args.baseline)
    modules = {"new": dcf} if old is None else {"old": old, "new": dcf}
    rng = np.random.default_rng(2021)
    t0 = time.time()
    rows = [_case(*case, modules, repeats, rng) for case in (SMOKE_CASES if args.smoke else CASES)]
    one_bit = [_one_bit_case(n, bits, repeats, rng) for n, bits in (SMOKE_ONE_BIT if args.smoke else ONE_BIT_CASES)]
    out = {
        "benchmark": "DCF keygen and evaluate, CPU seconds on one thread: baseline (old) vs this tree (new)",
        "command": "python benchmarks/dcf_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "baseline": args.baseline if old is not None else None,
        "baseline_missing": why or None,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "load_average": [round(v, 2) for v in os.getloadavg()]},
        "units": {"cpu_s": "thread CPU seconds of one call, minimum of the repeats (MPCVIT_DCF_THREADS=1)",
                  "old_over_new": "old CPU seconds / new CPU seconds", "identical": "same words / shares from both"},
        "repeats": repeats,
        "rows": rows,
        "one_bit": one_bit,
        "wall_seconds": round(time.time() - t0, 1),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        shape = f"J={r['shifts']} " if r["kind"] == "evaluate" else ""
        old_part = f"old {r['old_cpu_s']:.4f} s  ratio {r['old_over_new']:.2f}  " if "old_cpu_s" in r else ""
        print(f"{r['kind']:8s} n={r['values']:>7d} {shape}L={r['levels']:2d} P={r['payload']}  {old_part}new {r['new_cpu_s']:.4f} s"
              f"  identical={r['identical']}")
    for r in one_bit:
        print(f"one-bit n={r['values']:>7d} L={r['levels']:2d}  keys {r['key_words_one_bit']} words against "
              f"{r['key_words_two_word']}; keygen {r['keygen_one_bit_over_two_word']:.2f}x, evaluate "
              f"{r['evaluate_one_bit_over_two_word']:.2f}x the two-word key's CPU  same bits={r['same_bits']}")
    if why:
        print(f"no baseline: {why}")
    print(f"wrote {path}")
    return 0 if all(r["identical"] for r in rows) and all(r["same_bits"] for r in one_bit) else 1


if __name__ == "__main__":
    raise SystemExit(main())
