"""Comparison, ReLU and GeLU: the project's small-ring protocols against CrypTen's 64-bit circuit.

    python benchmarks/compare_bench.py [--sizes 10000,100000] [--repeats 3] [--out results/compare_bench.json]

Two local party processes (gloo), the dealer provider's TTP semantics
simulated in process (TFP triples: the online costs are the same), one
``SecureConfig`` per row: ``comparison="crypten"`` (CrypTen's ``_ltz`` /
``relu``) or ``"ring"`` (``protocols.compare``). For each op and size: rounds,
bytes per value (party 0, sent + received, CrypTen's count) and the best of
``repeats`` wall-clock seconds. Rounds and bytes are exact; seconds depend on
the machine's load (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocols.local import run_two_party  # noqa: E402

OPS = ("ltz", "relu", "gelu")


def _party(rank: int, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    import torch

    from protocols import ops
    from protocols.config import DEFAULT_CONFIG, apply_config
    from protocols.crypten_compat import crypten
    from protocols.providers import TFPProvider, install_provider

    import crypten.communicator as comm

    install_provider(TFPProvider())
    rows = []
    for mode in ("crypten", "ring"):
        apply_config(DEFAULT_CONFIG.with_(comparison=mode))
        crypten.cfg.communicator.verbose = True
        for n in sizes:
            x = crypten.cryptensor(torch.randn(n) * 4, src=0)
            fns = {"ltz": lambda v: ops.ltz(v, "relu"), "relu": ops.relu, "gelu": ops.gelu}
            for name in OPS:
                best = float("inf")
                for _ in range(repeats):
                    comm.get().reset_communication_stats()
                    t0 = time.perf_counter()
                    fns[name](x)
                    best = min(best, time.perf_counter() - t0)
                    stats = comm.get().get_communication_stats()
                rows.append({"op": name, "comparison": mode, "values": n, "rounds": int(stats["rounds"]),
                             "bytes_per_value": round(stats["bytes"] / n, 2), "seconds": round(best, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma list of tensor sizes (default 10000,100000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per op, best kept (default 3)")
    ap.add_argument("--out", default="results/compare_bench.json", help="JSON output path")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes must be a comma list of integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1 or args.repeats < 1:
        ap.error("--sizes needs positive integers and --repeats at least 1")
    t0 = time.time()
    rows, _ = run_two_party(_party, sizes, args.repeats, timeout=1800)
    out = {
        "benchmark": "comparison protocols: CrypTen's 64-bit circuit vs the project's small ring",
        "command": "python benchmarks/compare_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average": [round(v, 2) for v in os.getloadavg()]},
        "units": {"bytes_per_value": "party 0 sent + received per input value (CrypTen's count)",
                  "seconds": "best wall-clock of the repeats, party 0, two processes on this machine"},
        "rows": rows,
        "wall_seconds": round(time.time() - t0, 1),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{r['op']:5s} {r['comparison']:8s} n={r['values']:>7d}  rounds {r['rounds']:3d}  "
              f"{r['bytes_per_value']:8.1f} B/value  {r['seconds']:.3f} s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
