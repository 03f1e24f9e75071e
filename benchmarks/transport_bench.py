#!/usr/bin/env python3
"""The transport's cost: one secure ViT forward over gRPC vs over CrypTen's own gloo communicator.

Runs the protocols runtime (``SecureViT``, dealer provider fed in-process, so
only the online phase is timed) on a model preset with random weights in two
local processes, once per transport:

* ``gloo``: CrypTen's ``DistributedCommunicator`` over torch.distributed (the yardstick);
* ``grpc``: ``parties.communicator.GrpcCommunicator``, plaintext;
* ``grpc-tls``: the same with mutual TLS;
* ``grpc-unary`` (``--unary``): one acknowledged call per frame instead of a stream.

Each party warms up with ``--warmup`` forwards, then measures ``--repeats``;
the JSON holds per-transport seconds (median of rank 0's forward wall time),
rounds and bytes (CrypTen's counting), and the ratios to gloo::

    python benchmarks/transport_bench.py --model vit_7_4_32 --out results/transport_bench.json
    python benchmarks/transport_bench.py --model vit_2_4_8 --repeats 2 --network lan

``--collective`` measures single collectives instead of a forward: for each
``--sizes`` (bytes of an int64 tensor) both parties run ``--warmup`` then
``--repeats`` ``all_reduce`` (or ``all_gather``) calls, each after a barrier,
and the JSON holds the median seconds per call, the throughput and the ratio
to gloo per size::

    python benchmarks/transport_bench.py --collective all_reduce --sizes 8.4e6,67e6 \
        --out results/transport_bench_collectives.json

``--smoke`` (``tests/benchmarks/test_smoke.py``) checks that the forward mode
runs, in seconds: vit_2_4_8, no warm-up, one repeat, gloo and gRPC with TLS
only; not a measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mpcvit.prg import new_key  # noqa: E402
from parties.pair import PairConfig, run_pair  # noqa: E402
from parties.transport import NETWORKS  # noqa: E402

logger = logging.getLogger("transport_bench")


def secure_forwards(rank: int, model_name: str, warmup: int, repeats: int, threads: int, master_key: bytes) -> dict[str, Any]:
    """In each party: share a random-weight model, run warmup + measured forwards on a random image."""
    import torch

    from mpcvit import sealing
    from mpcvit.models.registry import create_model, model_spec
    from mpcvit.prg import derive_key
    from protocols.accounting import ensure_counting
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT

    torch.set_num_threads(threads)
    ensure_counting()
    install_provider(DealerProvider(rank))
    torch.manual_seed(0)
    model = create_model(model_name).eval() if rank == 0 else None
    secure = SecureViT.share(model, model_spec(model_name), {}, batch_source=InProcessDealer(master_key))
    image = torch.rand(1, *secure.spec.input_shape, generator=torch.Generator().manual_seed(1))
    share = sealing.share_fixed_point(image, secure.precision_bits, key=derive_key(master_key, "input"))[rank]
    runs = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        _, report = secure.forward_shares(share)
        wall = time.perf_counter() - t0
        if i >= warmup:
            runs.append({"wall_s": wall, "forward_s": report.seconds, "rounds": int(report.rounds), "bytes": int(report.bytes)})
    return {"runs": runs}


def collective_calls(rank: int, collective: str, sizes: list[int], warmup: int, repeats: int, threads: int) -> dict[str, Any]:
    """In each party: time ``collective`` on int64 tensors of each size (bytes), one barrier before every call."""
    import torch

    from protocols.crypten_compat import crypten

    torch.set_num_threads(threads)
    comm = crypten.communicator.get()
    out: dict[str, Any] = {}
    for size in sizes:
        x = torch.randint(-(2**62), 2**62, (max(1, size // 8),), generator=torch.Generator().manual_seed(rank))
        times = []
        for i in range(warmup + repeats):
            comm.barrier()
            t0 = time.perf_counter()
            getattr(comm, collective)(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        out[str(size)] = times
    return out


def measure_collective(name: str, config: PairConfig, args: argparse.Namespace) -> dict[str, Any]:
    logger.info("measuring %s %s ...", name, args.collective)
    results = run_pair(collective_calls, args.collective, args.sizes, args.warmup, args.repeats, args.threads,
                       config=config, timeout_s=args.timeout)
    rows = {}
    for size in args.sizes:
        both = [max(a, b) for a, b in zip(results[0][str(size)], results[1][str(size)])]  # the slower party ends the call
        median = statistics.median(both)
        rows[str(size)] = {"seconds": round(median, 5), "seconds_all": [round(t, 5) for t in both],
                           "megabytes_per_second": round(size / median / 1e6, 1)}
        logger.info("%s %d bytes: %.2f ms", name, size, median * 1e3)
    return {"transport": name, "sizes": rows}


def measure(name: str, config: PairConfig, args: argparse.Namespace) -> dict[str, Any]:
    logger.info("measuring %s ...", name)
    t0 = time.perf_counter()
    results = run_pair(secure_forwards, args.model, args.warmup, args.repeats, args.threads, new_key(), config=config, timeout_s=args.timeout)
    runs = results[0]["runs"]
    row = {
        "transport": name,
        "seconds": round(statistics.median(r["forward_s"] for r in runs), 4),
        "seconds_all": [round(r["forward_s"], 4) for r in runs],
        "rounds": runs[0]["rounds"],
        "bytes": runs[0]["bytes"],
        "process_seconds": round(time.perf_counter() - t0, 1),
    }
    logger.info("%s: %.3f s, %d rounds, %.1f MB", name, row["seconds"], row["rounds"], row["bytes"] / 1e6)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_7_4_32", help="model preset (random weights)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per party")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="none", help="shape the gRPC link (gloo is never shaped)")
    parser.add_argument("--unary", action="store_true", help="also measure the unary (one call per frame) mode")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--collective", choices=("all_reduce", "all_gather"), default=None,
                        help="time single collectives of --sizes instead of a secure forward")
    parser.add_argument("--sizes", default="8.4e6", help="comma list of message sizes in bytes for --collective (default 8.4e6)")
    parser.add_argument("--tls", action="store_true", help="with --collective: also measure gRPC with mutual TLS")
    parser.add_argument("--rounds", type=int, default=3, help="with --collective: turns of every transport (default 3)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "transport_bench.json")
    parser.add_argument("--smoke", action="store_true", help="vit_2_4_8, one forward, gloo and grpc-tls only (see the docstring)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.warmup, args.repeats, args.unary = "vit_2_4_8", 0, 1, False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.collective:
        return collective_main(args, argv)

    from parties.tls import write_certs

    shape = NETWORKS[args.network]
    rows = [measure("gloo", PairConfig(backend="gloo"), args)]
    if not args.smoke:
        rows.append(measure("grpc", PairConfig(backend="grpc", shape=shape), args))
    with tempfile.TemporaryDirectory() as certs:
        write_certs(certs)
        rows.append(measure("grpc-tls", PairConfig(backend="grpc", shape=shape, certs_dir=certs), args))
    if args.unary:
        rows.append(measure("grpc-unary", PairConfig(backend="grpc", mode="unary", shape=shape), args))
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio_to_gloo"] = round(row["seconds"] / base, 3)
    report = {
        "benchmark": "transport",
        "command": _command(argv),
        "model": args.model,
        "batch_size": 1,
        "provider": "dealer (in-process, online phase timed)",
        "network": args.network,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "threads_per_party": args.threads,
        "machine": _machine(),
        "results": rows,
        "note": "seconds = median wall time of rank 0's secure forward; rounds/bytes as CrypTen counts them per party",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    print(json.dumps({r["transport"]: {"s": r["seconds"], "x_gloo": r["ratio_to_gloo"]} for r in rows}))
    return 0


def _command(argv: list[str] | None) -> str:
    return "python benchmarks/transport_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)


def _machine() -> dict[str, object]:
    """Python, CPU count and the load average when the run ended (other load skews seconds, not rounds)."""
    return {"python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


def collective_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    from parties.tls import write_certs

    args.sizes = [int(float(x)) for x in args.sizes.split(",") if x.strip()]
    shape = NETWORKS[args.network]
    with tempfile.TemporaryDirectory() as certs:
        configs = {"gloo": PairConfig(backend="gloo"), "grpc": PairConfig(backend="grpc", shape=shape)}
        if args.tls:
            write_certs(certs)
            configs["grpc-tls"] = PairConfig(backend="grpc", shape=shape, certs_dir=certs)
        # the transports take turns, --rounds times, so that other load on the machine hits them alike
        turns = [[measure_collective(name, config, args) for name, config in configs.items()] for _ in range(args.rounds)]
    rows = []
    for i, name in enumerate(configs):
        sizes = {}
        for size in map(str, args.sizes):
            every = [t for turn in turns for t in turn[i]["sizes"][size]["seconds_all"]]
            median = statistics.median(every)
            sizes[size] = {"seconds": round(median, 5), "seconds_per_round": [turn[i]["sizes"][size]["seconds"] for turn in turns],
                           "calls": len(every), "megabytes_per_second": round(int(size) / median / 1e6, 1)}
        rows.append({"transport": name, "sizes": sizes})
    base = rows[0]["sizes"]
    for row in rows:
        for size, cell in row["sizes"].items():
            cell["ratio_to_gloo"] = round(cell["seconds"] / base[size]["seconds"], 3)
    report = {
        "benchmark": "transport-collectives",
        "command": _command(argv),
        "collective": args.collective,
        "dtype": "int64",
        "network": args.network,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "threads_per_party": args.threads,
        "machine": _machine(),
        "results": rows,
        "note": "seconds = median over every measured call (repeats x rounds) of the slower party's wall time of one call, "
                "each call after a barrier; the transports take turns round by round; both parties share this machine's cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    print(json.dumps({r["transport"]: {s: (c["seconds"], c["ratio_to_gloo"]) for s, c in r["sizes"].items()} for r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
