"""Two benchmark runs of one sitting side by side: an earlier main's default runtime against this one's.

    python -m benchmarks.before_after results/bench/before/results.json results/bench/results.json \\
        --out results/bench/before_after.md

``mpcvit bench --protocols fss1,fss`` compares two runtimes of the same code;
the earlier main also lacked this code's speed-ups that both runtimes share
(the DCF kernels, the CrypTen attribute hook), so its own run, in a checkout of
that commit, just before or after this one on the same machine, is the
baseline for "today". Per model and network: rounds, online MB per party,
the dealer's MB (both parties) and wall seconds (the earlier runs recorded no
CPU time for the dealer), the forward's compute seconds (unshaped, both
parties at once: the party CPU that LAN latency is made of), the measured
LAN / WAN latency, and the WAN cold prediction (the dealer's material over the
same WAN link at request time), each with after / before.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

WAN_BPS, WAN_RTT = 400e6, 0.040


def _rows(doc: dict[str, Any], protocols: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["model"], r["network"]): r for r in doc["results"]
            if r["batch"] == 1 and (r.get("protocols") or "fss") == protocols}


def _latency(r: dict[str, Any]) -> float:
    m = (r.get("latency_measured_s") or {}).get("median")
    return m if m is not None else r["latency_predicted_exchange_s"]


def _cold(r: dict[str, Any]) -> float:
    off = r.get("offline") or {}
    biggest = max(off.get("party0_bytes", 0), off.get("party1_bytes", 0))
    return _latency(r) + biggest * 8 / WAN_BPS + WAN_RTT


def _f(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def table(before: dict[str, Any], after: dict[str, Any], protocols: str = "fss") -> list[str]:
    b, a = _rows(before, "fss"), _rows(after, protocols)
    head = ("| model | rounds | online MB / party | dealer MB (both) | dealer wall s | compute s (party CPU) | LAN s | WAN s | "
            "WAN cold s (predicted) |")
    lines = [head, "|---|" + "---:|" * 8]
    models = [m for (m, n) in a if n == "lan" and (m, "lan") in b]
    ratios: dict[str, list[float]] = {}
    for m in models:
        bl, al, bw, aw = b[(m, "lan")], a[(m, "lan")], b.get((m, "wan")), a.get((m, "wan"))
        cells = []
        pairs = [
            ("rounds", bl["rounds"], al["rounds"]),
            ("online", max(bl["bytes"]["party0_sent"], bl["bytes"]["party1_sent"]) / 1e6,
             max(al["bytes"]["party0_sent"], al["bytes"]["party1_sent"]) / 1e6),
            ("dealer MB", bl["offline"]["total_bytes"] / 1e6, al["offline"]["total_bytes"] / 1e6),
            ("dealer s", bl["offline"]["dealer_s"]["median"], al["offline"]["dealer_s"]["median"]),
            ("compute", bl["compute_s"]["median"], al["compute_s"]["median"]),
            ("LAN", _latency(bl), _latency(al)),
        ]
        if bw and aw:
            pairs += [("WAN", _latency(bw), _latency(aw)), ("cold", _cold(bw), _cold(aw))]
        for name, x, y in pairs:
            cells.append(f"{_f(x)} -> {_f(y)} ({y / x:.2f}x)" if x else "-")
            ratios.setdefault(name, []).append(y / x if x else float("nan"))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(before: dict[str, Any], after: dict[str, Any], before_path: str, after_path: str) -> str:
    lb = before.get("machine", {}).get("load_average_1_5_15")
    la = after.get("machine", {}).get("load_average_1_5_15")
    return "\n".join([
        "# Before and after, one sitting (7_4_32, batch 1, gRPC transport with its shaper)", "",
        f"Before: `{before['command']}` in a checkout of {before['git']['commit'][:7]} ([{before_path}]({before_path})), "
        f"load at start {lb[0]:.1f} on {before['machine']['cpu_count']} CPUs.  ",
        f"After: `{after['command']}` at {after['git']['commit'][:7]} ([{after_path}]({after_path})), its `fss` rows "
        f"(the default runtime), load at start {la[0]:.1f}.", "",
        "Each cell: before -> after (after / before). Dealer s is the in-process dealer's wall time per forward (the "
        "earlier run recorded no CPU time for it); compute s is one unshaped forward's wall time with both parties on "
        "the machine's 2 cores, the party CPU that the LAN latency is made of; WAN cold adds the larger party's dealer "
        "material at 400 Mbit/s and one RTT to the WAN latency.", "",
        *table(before, after), "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    before, after = json.loads(a.before.read_text()), json.loads(a.after.read_text())
    rel = lambda p: str(p.resolve().relative_to(a.out.resolve().parent)) if p.resolve().is_relative_to(a.out.resolve().parent) else str(p)  # noqa: E731
    a.out.write_text(markdown(before, after, rel(a.before), rel(a.after)) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
