"""Load figure of the coordinator: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients.

Each client is a ``PrivateClient`` in its own thread doing full private
classifications one after another (preprocess, share, seal, POST, open), on
real digits test images. By default the benchmark starts the real stack on
loopback (dealer, two parties, coordinator: ``mpcvit.localstack``, mutual TLS)
serving the digits model; ``--server URL`` measures a coordinator already
running instead. After one warm-up request, each concurrency level runs
``--requests-per-client`` requests per client (at least ``--min-requests`` in
all). Every answer is also checked against the plaintext model.

    python benchmarks/load_bench.py                    # writes results/load_bench.json
    python benchmarks/load_bench.py --levels 1 4 --requests-per-client 2

``--pairs 1 2`` measures the started stack with one party pair, then with
two (the coordinator's pool, ``server/pool.py``), and writes both runs to one
file with the ratio of their throughputs per level; ``--network wan`` shapes
the parties' peer links (40 ms RTT, 400 Mbit/s) so that a forward waits for
the network as a real deployment does:

    python benchmarks/load_bench.py --pairs 1 2 --network wan --levels 8 --batch-size 2 \\
        --out results/load_bench_pairs.json

``--shape 7_4_32 --mu 0.1`` serves the benchmark's MPCViT at that shape
(``benchmarks/bench_models.mpcvit_entry``) with seeded random weights, on
seeded random images (no data set has that shape here); the answers are
still checked against the plaintext model:

    python benchmarks/load_bench.py --shape 7_4_32 --mu 0.1 --network wan --sessions 1 4 --levels 1 16 \\
        --requests-per-client 1 --batch-size 4

``--dealer-network wan --prefetch ahead cold`` also shapes the link from the
dealer to each party (the dealer is a third organisation, so its material
crosses a WAN too) and measures twice: with the parties fetching the next
batches' material ahead (warm), then with each batch's material fetched when
its request arrives (cold: the issue's "WAN cold", measured, not predicted):

    python benchmarks/load_bench.py --shape 7_4_32 --mu 0.1 --network wan --dealer-network wan \
        --prefetch ahead cold --levels 1 --requests-per-client 6 --batch-size 1 --out results/load_bench_cold.json

``--sessions 1 4`` does the same with the sessions each party runs at once
(``mpcvit party --sessions``): one session per pair, then four. Every answer
reports the dealer phase apart (bytes, the forward's wait, the fetch's own
time, fetched ahead or not); each level sums it up under ``dealer``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import PrivateClient, ServerError
from mpcvit.data import load_dataset

log = logging.getLogger("load_bench")
ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far, from /proc (empty where it cannot be read)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for role, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[role] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def run_level(url: str, model: str, images: torch.Tensor, expected: torch.Tensor, clients: int, per_client: int,
              trust: dict[str, Any], pids: dict[str, int] | None = None) -> dict[str, Any]:
    """``clients`` threads, ``per_client`` private classifications each; latency per request, throughput overall;
    with ``pids`` (the stack's processes) also the CPU seconds each used per answered request."""
    latencies: list[float] = []
    batch_sizes: list[int] = []
    dealer: list[dict[str, Any]] = []  # party 0's dealer phase of each answer's forward
    errors: list[str] = []
    agree = 0
    lock = threading.Lock()
    counter = iter(range(10**9))

    def client_loop(_: int) -> None:
        nonlocal agree
        with PrivateClient(url, timeout=600, **trust) as c:
            c.models()
            c.party_keys()
            for _ in range(per_client):
                with lock:
                    i = next(counter) % len(images)
                t0 = time.perf_counter()
                try:
                    r = c.classify(images[i], model=model)
                except ServerError as exc:
                    with lock:
                        errors.append(f"{exc.status_code}: {exc.detail[:200]}")
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    batch_sizes.append(r.batch_size)
                    dealer.append(r.costs.get("parties", [{}])[0].get("dealer", {}))
                    agree += int(r.class_index == int(expected[i]))

    cpu0 = cpu_seconds(pids or {})
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    elapsed = time.perf_counter() - started
    n = len(latencies)
    cpu1 = cpu_seconds(pids or {})
    cpu = {role: round((cpu1[role] - cpu0[role]) / max(n, 1), 3) for role in cpu1 if role in cpu0}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {
        "clients": clients,
        "requests": clients * per_client,
        "ok": n,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(n / elapsed, 3) if elapsed > 0 else None,
        "latency_s": {
            "p50": round(percentile(latencies, 50), 3), "p95": round(percentile(latencies, 95), 3),
            "mean": round(statistics.fmean(latencies), 3) if latencies else None,
            "min": round(min(latencies), 3) if latencies else None, "max": round(max(latencies), 3) if latencies else None,
        },
        "batch_size": {"mean": round(statistics.fmean(batch_sizes), 2) if batch_sizes else None, "max": max(batch_sizes, default=None)},
        "agree_with_plaintext": f"{agree}/{n}",
        # CPU seconds per answered request by process, and the throughput these cores allow at that cost
        "cpu_s_per_request": cpu or None,
        "cpu_bound_requests_per_s": round(cores / sum(cpu.values()), 3) if cpu and sum(cpu.values()) > 0 else None,
        "dealer": {  # party 0, per answer (answers of one batch count its forward once each)
            "prefetched": sum(bool(d.get("prefetched")) for d in dealer),
            "wait_s_mean": round(statistics.fmean(d.get("wait_seconds", 0.0) for d in dealer), 3) if dealer else None,
            "fetch_s_mean": round(statistics.fmean(d.get("fetch_seconds", 0.0) for d in dealer), 3) if dealer else None,
            "megabytes_mean": round(statistics.fmean(d.get("bytes", 0) for d in dealer) / 1e6, 2) if dealer else None,
        },
    }


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def random_weights_checkpoint(shape: str, mu: float, out_dir: Path, variant: str = "mpcvit") -> Path:
    """The benchmark's MPCViT at ``shape`` with ratio ``mu`` (or the registry's ``variant`` at ``shape``: vit,
    mpcformer, ...), seeded random weights, saved as a checkpoint."""
    from benchmarks.bench_models import mpcvit_entry
    from mpcvit.checkpoint import save_checkpoint
    from mpcvit.models import model_spec
    from mpcvit.models.vit import VisionTransformer

    if variant == "mpcvit":
        entry = mpcvit_entry(shape, mu)
        spec, source, name = entry.spec, entry.arch_source, f"mpcvit_{shape}_mu{mu:g}"
    else:
        spec, source, name = model_spec(f"{variant}_{shape}"), "registry preset", f"{variant}_{shape}"
    torch.manual_seed(0)
    model = VisionTransformer(spec).eval()
    meta = {"normalisation": {"mean": [0.5] * spec.in_chans, "std": [0.25] * spec.in_chans},
            "dataset": None, "note": f"random weights for the load benchmark; {source}"}
    return save_checkpoint(out_dir / name, model, meta)


def bench_images(args: argparse.Namespace, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Digits test images when the model takes them, else seeded uniform random images of its input shape."""
    if tuple(input_shape) == (1, 8, 8):
        return load_dataset("digits", "test").tensors[0][: args.images]
    return torch.rand(args.images, *input_shape, generator=torch.Generator().manual_seed(0))


def bench(url: str, args: argparse.Namespace, stack: str, trust: dict[str, Any], pids: dict[str, int] | None = None) -> dict[str, Any]:
    """``trust``: how the clients check the parties' keys (``PrivateClient``'s ``ca`` / ``pins`` / ``trust_coordinator``)."""
    net, meta = load_checkpoint(args.checkpoint)
    images = bench_images(args, tuple(net.spec.input_shape))
    with torch.no_grad():
        expected = net(normalise_input(images, meta)).argmax(-1)
    with PrivateClient(url, timeout=600, **trust) as c:  # warm-up: loads the model and the parties' plans
        t0 = time.perf_counter()
        c.classify(images[0], model=args.model)
        warmup = time.perf_counter() - t0
        server_models = c.models(refresh=True)
    levels = []
    for clients in args.levels:
        per_client = max(args.requests_per_client, -(-args.min_requests // clients))
        log.info("%d concurrent client(s), %d request(s) each", clients, per_client)
        levels.append(run_level(url, args.model, images, expected, clients, per_client, trust, pids))
        log.info("%s", json.dumps(levels[-1]))
    return {
        "benchmark": "coordinator load: private classifications (share, seal, 2PC forward, open) by concurrent clients",
        "model": args.model,
        "checkpoint": _display_path(args.checkpoint) if args.shape is None else f"random weights: {args.model}",
        "model_info": {k: server_models[args.model].get(k) for k in ("arch", "input_shape", "precision_bits", "measured_cost")},
        "stack": stack,
        "coordinator": {"batch_size": args.batch_size, "batch_wait_ms": args.batch_wait_ms, "request_timeout_s": args.request_timeout}
        if stack != "external" else None,
        "warmup_seconds": round(warmup, 3),
        "levels": levels,
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "commit": _git_commit(),
        "command": "python benchmarks/load_bench.py " + " ".join(args.argv),
        "note": "all processes share this machine's CPUs with the clients; loopback network"
                + (", no shaping" if getattr(args, "network", "none") == "none" else f", the parties' peer link shaped as {args.network}")
                + ("" if getattr(args, "dealer_network", "none") == "none" else f", the dealer's links shaped as {args.dealer_network}"),
    }


def run_stack(args: argparse.Namespace, pairs: int, sessions: int | None, prefetch: str = "ahead") -> dict[str, Any]:
    """Start the local stack with ``pairs`` party pairs, each party running ``sessions`` at once, and measure it
    (``prefetch`` "cold": the parties fetch each batch's dealer material at its request)."""
    from mpcvit.localstack import LocalStack, StackConfig

    os.environ["MPCVIT_BATCH_SIZE"] = str(args.batch_size)
    os.environ["MPCVIT_BATCH_WAIT_MS"] = str(args.batch_wait_ms)
    os.environ["MPCVIT_QUEUE_BOUND"] = "256"
    os.environ["MPCVIT_REQUEST_TIMEOUT_S"] = str(args.request_timeout)
    config = StackConfig(models_dir=args.checkpoint.parent, model=args.model, insecure=args.insecure, pairs=pairs,
                         network=args.network, sessions=sessions, dealer_network=args.dealer_network,
                         prefetch=prefetch != "cold")
    what = (f"local: dealer + {pairs} party pair{'s' if pairs > 1 else ''}"
            f"{'' if sessions is None else f' ({sessions} session(s) at once per party)'} + coordinator, loopback"
            f"{'' if args.network == 'none' else f' shaped as {args.network}'}"
            f"{'' if args.dealer_network == 'none' else f', dealer links shaped as {args.dealer_network}'}"
            f", dealer material {'fetched at each request (cold)' if prefetch == 'cold' else 'fetched ahead'}"
            f", {'plaintext gRPC' if args.insecure else 'mutual TLS'}")
    log.info("starting %s", what)
    with LocalStack(config) as stack:
        assert stack.endpoints is not None
        pids = {proc.role: proc.popen.pid for proc in stack.procs}
        result = bench(stack.endpoints.coordinator_url, args, what, stack.client_trust(), pids)
    result["pairs"] = pairs
    result["sessions"] = sessions
    result["network"] = args.network
    result["dealer_network"] = args.dealer_network
    result["prefetch"] = prefetch
    return result


def compare_runs(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Runs with different numbers of pairs or sessions side by side, and each level's throughput and p50 latency
    over the first run's (and the p50 over the first run's single-client p50)."""
    base = {lvl["clients"]: lvl for lvl in runs[0]["levels"]}
    single = base.get(1, {}).get("latency_s", {}).get("p50")
    return {
        "benchmark": "coordinator load with 1..N party pairs (the coordinator's pool), 1..N sessions per party, dealer material "
                     "fetched ahead or at each request (cold): "
                     "private classifications by concurrent clients",
        "model": args.model,
        "network": args.network,
        "throughput_over_first_run": [
            {"pairs": run["pairs"], "sessions": run.get("sessions"), "prefetch": run.get("prefetch"), "clients": lvl["clients"],
             "ratio": round(lvl["requests_per_s"] / base[lvl["clients"]]["requests_per_s"], 2)
             if base.get(lvl["clients"], {}).get("requests_per_s") else None,
             "p50_over_single_request": round(lvl["latency_s"]["p50"] / single, 2) if single else None}
            for run in runs[1:] for lvl in run["levels"]
        ],
        "runs": runs,
        "command": runs[0]["command"],
    }


def _display_path(path: Path) -> str:
    """The checkpoint's path relative to the repository when it lies inside it (results name no machine's paths)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def main(argv: list[str] | None = None) -> int:
    import sys

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=None, help="measure this running coordinator instead of starting the stack")
    p.add_argument("--ca", default=None, help="with --server: the deployment's CA certificate (verifies the parties' keys)")
    p.add_argument("--model", default="vit_2_4_8")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "digits" / "vit_2_4_8")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--min-requests", type=int, default=8, help="at least this many requests per level")
    p.add_argument("--images", type=int, default=32, help="digits test images cycled through")
    p.add_argument("--batch-size", type=int, default=8, help="the started coordinator's batch size")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--request-timeout", type=float, default=60.0,
                   help="the started coordinator's request deadline, seconds (a queue of 16 WAN forwards needs more than 60)")
    p.add_argument("--insecure", action="store_true", help="start the stack without TLS")
    p.add_argument("--pairs", type=int, nargs="+", default=[1],
                   help="party pairs of the started stack; several values: one run each, compared in one file")
    p.add_argument("--network", choices=("none", "lan", "wan"), default="none", help="the started parties' emulated peer link")
    p.add_argument("--shape", default=None, help="serve the benchmark's MPCViT at this shape (e.g. 7_4_32), random weights")
    p.add_argument("--mu", type=float, default=0.1, help="with --shape: its ReLU-softmax head ratio")
    p.add_argument("--variant", default="mpcvit",
                   help="with --shape: mpcvit (the benchmark's, with --mu) or a registry variant (vit, mpcformer, thex, relu, scale)")
    p.add_argument("--sessions", type=int, nargs="+", default=[None],
                   help="sessions each started party runs at once; several values: one run each (default: the party's own default)")
    p.add_argument("--dealer-network", choices=("none", "lan", "wan"), default="none",
                   help="the emulated link from the dealer to each started party (its material crosses it)")
    p.add_argument("--prefetch", choices=("ahead", "cold"), nargs="+", default=["ahead"],
                   help="ahead: the parties fetch the next batches' dealer material ahead (the default); cold: each "
                        "batch's at its request; several values: one run each, compared in one file")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "load_bench.json")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.server:
        if args.ca is None:
            raise SystemExit("load_bench --server: give --ca ca.pem (the deployment's CA certificate) to verify the parties' keys")
        result = bench(args.server, args, "external", {"ca": args.ca})
    else:
        with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
            if args.shape is not None:
                args.checkpoint = random_weights_checkpoint(args.shape, args.mu, Path(tmp), args.variant)
                args.model = args.checkpoint.name
            runs = [run_stack(args, pairs, sessions, prefetch)
                    for pairs in args.pairs for sessions in args.sessions for prefetch in args.prefetch]
        result = runs[0] if len(runs) == 1 else compare_runs(runs, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
