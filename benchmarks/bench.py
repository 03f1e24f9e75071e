"""The communication-cost benchmark: rounds, bytes and latency of every model family on LAN and WAN.

For each model x architecture shape x batch size this runs one secure
inference of the project's runtime (``protocols.runtime.SecureViT``) between
two local processes, party 0 holding random weights (costs do not depend on
values) and both holding shares of a random image, and records:

* rounds and bytes (each party's, and the total), from the runtime's
  ``CostReport`` (CrypTen's communicator counters around the forward);
* compute seconds: the wall-clock time of the forward with the transport not
  shaped (loopback; this includes the loopback's own small latency);
* latency PREDICTED on each network by
  ``compute + rounds x RTT + bytes / bandwidth`` (``bytes`` = what the busier
  party sends; the link is full duplex);
* latency MEASURED on each network (``--transport grpc``): the parties talk
  over the project's gRPC communicator (``parties.communicator``) whose sender
  side delays every frame by the one-way delay and holds it for
  ``8 n / bandwidth`` (``parties.transport.Shaper``); with ``--transport
  inprocess`` (CrypTen's gloo communicator) nothing is shaped and only the
  prediction is given;
* the per-op-kind breakdown, and a check that the secure logits open to the
  plaintext logits of the same weights;
* the offline phase of each forward: what each party receives from the dealer
  (party 0: its key, the corrections of its triples and, with ``fss``, its DCF
  keys; party 1: its key and, with ``fss``, its DCF keys) and the dealer's
  seconds to make both parties' material; none of it is an online round;
* each party's CPU seconds per forward (``time.process_time`` of the party
  process, all its threads) and, on WAN, a PREDICTED cold latency: the warm
  latency plus the dealer's material crossing the WAN link at request time
  (the larger party's bytes / bandwidth + one RTT).

``--protocols`` is a comma list of protocol sets, run in the order given:
``fss`` (default) runs ``SecureConfig()``, the current runtime (one-round DCF
sign gates); ``fss1`` runs ``SecureConfig.fss1()``, that runtime as it was
before the whole-cost work; ``circuits`` runs ``SecureConfig.circuits()``, the
small-ring comparison circuits of the runtime before DCF sign gates (``both``
= ``circuits,fss``). With more than one, results.md puts each older set side
by side with the newest present (circuits < fss1 < spline < product < fss): rounds, bytes, dealer
bytes and seconds, each party's CPU, latency, and rounds per op kind, with
new / old ratios. TFP makes no DCF keys: under ``--provider tfp`` fss and
fss1 run the circuits, and their rows say so.

Measuring protocol per model: share the weights once, ``--warmup`` forwards
unshaped (not recorded), ``--repeats`` unshaped forwards (compute), then per
network the shaper is switched on (both parties, after a barrier) and the
forward is repeated (``--repeats`` on LAN, ``--wan-repeats`` on WAN, for batch
sizes up to ``--wan-max-batch``; larger batches get the prediction only).
Medians are reported with min / max.

Where each model's architecture comes from: ``benchmarks.bench_models``.

The code is split in three steps, each its own module; this module is the
entry point that ``mpcvit bench`` and older imports use, and re-exports them:

* ``benchmarks.bench_models``: settings and model entries (what to run);
* ``benchmarks.bench_run``: both parties' side and the parent (running);
* ``benchmarks.bench_summary``: raw party results into result rows (summarising);
* ``benchmarks.bench_render``: results.json, results.md and the plots (rendering).
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.bench_models import (
    ALL_MODELS,
    CHECKPOINT_DIRS,
    CODE_DIRS,
    DATASET_OF_SHAPE,
    DEFAULT_MODELS,
    DEFAULT_MUS,
    FULL_MODE_NOTE,
    PLUS_BASE_MU,
    PROTOCOLS,
    QUICK_ARCH,
    ROOT,
    SEARCH_DIR,
    BenchSettings,
    ModelEntry,
    Transport,
    checkpoint_accuracy,
    checkpoint_dir,
    mpcvit_entry,
    mpcvitplus_entry,
    paper_ratio_attn,
    resolve_entries,
    scaled_attn,
    scaled_mlp,
    secure_config,
)
from benchmarks.bench_render import markdown, ordering_checks, per_op_rounds, rerender, side_by_side, write_results
from benchmarks.bench_run import bench_model, bench_party, cases, code_fingerprint, environment, run_benchmark, run_entries, runs_per_entry
from benchmarks.bench_summary import add_cost_table_estimates, best_latency, fmt_seconds, rows_by, summarise_entry

__all__ = [
    "ALL_MODELS", "CHECKPOINT_DIRS", "CODE_DIRS", "DATASET_OF_SHAPE", "DEFAULT_MODELS", "DEFAULT_MUS", "FULL_MODE_NOTE",
    "PLUS_BASE_MU", "PROTOCOLS", "QUICK_ARCH", "ROOT", "SEARCH_DIR", "BenchSettings", "ModelEntry", "Transport",
    "add_cost_table_estimates", "bench_model", "bench_party", "best_latency", "cases", "checkpoint_accuracy", "checkpoint_dir",
    "code_fingerprint", "environment", "fmt_seconds", "markdown", "mpcvit_entry", "mpcvitplus_entry", "ordering_checks",
    "paper_ratio_attn", "per_op_rounds", "rerender", "resolve_entries", "rows_by", "run_benchmark", "run_entries",
    "runs_per_entry", "scaled_attn", "scaled_mlp", "secure_config", "side_by_side", "summarise_entry", "write_results",
]


if __name__ == "__main__":  # python -m benchmarks.bench results/bench  (re-render a finished run)
    for p in rerender(Path(sys.argv[1] if len(sys.argv) > 1 else "results/bench")):
        print(p)
