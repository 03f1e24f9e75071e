"""Soak test: every role's resident memory stays bounded over thousands of private requests.

Starts the real local stack (``mpcvit.localstack``: dealer, party 0, party 1,
coordinator, mutual TLS, loopback) serving a small digits model (``--model``:
any checkpoint under ``checkpoints/``; a fashion-mnist one has 25 times the
dealer material per forward), then
``--clients`` threads, each a ``PrivateClient`` (the SDK: preprocess, share,
seal, POST, open), send ``--requests`` private classifications in all, one
after another per thread. Every answer's class is compared with the
plaintext model's. A sampler thread reads each role's resident set size
(``VmRSS`` of the process and its children, from ``/proc``) every
``--sample-s`` seconds, with the number of answers so far.

Plateau: after the warm-up (the first ``--warmup`` fraction of the requests),
a role's growth over the second half of the run is the median RSS over the
last tenth of the requests minus the median RSS over the tenth around the
half-way mark. It must stay under ``--bound-mb`` + ``--bound-pct`` % of the
half-way median; the JSON says so per role, and the exit status is 1 if a
role grew more (or an answer was wrong). Runs shorter than
``--min-judged`` requests are only measured, not judged (the smallest mode).

    python -m benchmarks.soak --requests 2000 --out results/soak/soak.json   # + soak.png beside it
    python -m benchmarks.soak --requests 4 --clients 1 --out /tmp/soak.json  # smallest mode (not judged)

The quick tier (a few hundred requests, judged loosely) is
``tests/test_soak.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import PrivateClient, ServerError
from mpcvit.data import load_dataset

log = logging.getLogger("soak")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "mpcvit_2_4_8"


def rss_mb(pid: int) -> float | None:
    """Resident MB of ``pid`` and its descendants (``VmRSS``); None once it is gone."""
    total, seen, todo = 0, set(), [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except (OSError, ValueError):
            if p == pid:
                return None
            continue
        for task in tasks:
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):  # a thread that ended meanwhile
                continue
    return round(total / 1024, 1)


class Sampler:
    """Every ``period_s``: (answers so far, seconds, RSS MB per role) in ``samples``."""

    def __init__(self, pids: dict[str, int], period_s: float, open_batches: Any = None) -> None:
        self.pids, self.period_s = pids, period_s
        self.open_batches = open_batches  # () -> the dealer's open (unfinished) batches, or None
        self.samples: list[dict[str, Any]] = []
        self.answered = 0
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> dict[str, Any]:
        s = {"requests": self.answered, "seconds": round(time.monotonic() - self.t0, 2),
             "rss_mb": {role: rss_mb(pid) for role, pid in self.pids.items()}}
        if self.open_batches is not None:
            s["dealer_open_batches"] = self.open_batches()
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> "Sampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _median_between(samples: list[dict[str, Any]], role: str, lo: float, hi: float) -> float | None:
    values = [s["rss_mb"][role] for s in samples if lo <= s["requests"] <= hi and s["rss_mb"].get(role) is not None]
    return round(statistics.median(values), 1) if values else None


def summarise(samples: list[dict[str, Any]], requests: int, warmup: float, bound_mb: float, bound_pct: float,
              judged: bool) -> dict[str, Any]:
    """Per role: RSS at the start, after the warm-up, at half-way and at the end (medians over a tenth of the
    requests), the peak, and the growth over the second half against the bound."""
    out: dict[str, Any] = {}
    tenth = max(requests / 10, 1)
    w = warmup * requests
    for role in samples[0]["rss_mb"]:
        start = samples[0]["rss_mb"][role]
        after_warmup = _median_between(samples, role, w, w + tenth)
        half = _median_between(samples, role, requests / 2 - tenth / 2, requests / 2 + tenth / 2)
        end = _median_between(samples, role, requests - tenth, requests)
        growth = round(end - half, 1) if end is not None and half is not None else None
        bound = round(bound_mb + bound_pct / 100 * (half or 0.0), 1)
        out[role] = {
            "start_mb": start, "after_warmup_mb": after_warmup, "half_mb": half, "end_mb": end,
            "peak_mb": max((s["rss_mb"][role] for s in samples if s["rss_mb"].get(role) is not None), default=None),
            "growth_second_half_mb": growth, "bound_mb": bound,
            "plateau": (growth is not None and growth <= bound) if judged else None,
        }
    return out


def plot(result: dict[str, Any], path: Path) -> Path:
    """RSS over answered requests, one line per role (matplotlib, Agg backend, as benchmarks/plots.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for role in samples[0]["rss_mb"]:
        pts = [(s["requests"], s["rss_mb"][role]) for s in samples if s["rss_mb"].get(role) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=role, linewidth=1.2)
    ax.axvline(result["warmup_requests"], color="grey", linestyle=":", label="end of warm-up")
    ax.axvline(result["requests"] / 2, color="grey", linestyle="--", linewidth=0.8, label="half-way")
    ax.set_xlabel("private requests answered")
    ax.set_ylabel("resident memory (MB, VmRSS)")
    ax.set_title(f"soak: {result['requests']} requests, {result['clients']} clients, {result['model']} "
                 f"({result['wrong_answers']} wrong)", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def drive(url: str, trust: dict[str, Any], model: str, images: torch.Tensor, expected: torch.Tensor, requests: int,
          clients: int, sampler: Sampler) -> dict[str, Any]:
    """``clients`` threads send ``requests`` private classifications in all; each answer checked."""
    lock = threading.Lock()
    counter = iter(range(requests))
    wrong: list[dict[str, Any]] = []
    errors: list[str] = []
    latencies: list[float] = []

    def client_loop() -> None:
        with PrivateClient(url, timeout=600, **trust) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                k = i % len(images)
                t0 = time.perf_counter()
                try:
                    r = c.classify(images[k], model=model)
                except (ServerError, OSError) as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if r.class_index != int(expected[k]):
                        wrong.append({"request": i, "image": k, "private": r.class_index, "plaintext": int(expected[k])})
                    sampler.answered += 1
                    if sampler.answered % max(requests // 20, 1) == 0:  # progress, every 5%
                        last = sampler.samples[-1]
                        log.info("%d/%d answered (%d wrong, %d errors); RSS MB %s", sampler.answered, requests, len(wrong),
                                 len(errors), last["rss_mb"])

    threads = [threading.Thread(target=client_loop, name=f"client{n}") for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"answered": len(latencies), "wrong": wrong, "errors": errors, "seconds": round(elapsed, 1),
            "requests_per_s": round(len(latencies) / elapsed, 2) if elapsed > 0 else None,
            "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None}


class _dealer_pinger:
    """The dealer's open batches (its Ping), as party 0 asks for them (party 0's certificate with mutual TLS)."""

    def __init__(self, stack: Any) -> None:
        from parties.dealer import DealerClient

        certs = None if stack.config.insecure else str(stack.certs_dir / "party0")
        self.client = DealerClient(stack.endpoints.dealer, 0, certs)

    def __call__(self) -> int | None:
        import grpc

        from parties.proto import dealer_pb2

        try:
            return int(self.client.stub.Ping(dealer_pb2.DealerPingRequest(), timeout=2.0).open_batches)
        except grpc.RpcError:
            return None

    def close(self) -> None:
        self.client.close()


def soak_images(meta: dict[str, Any], input_shape: tuple[int, ...], count: int) -> torch.Tensor:
    """The checkpoint's data set's test images where they are here, else seeded uniform random images of its shape."""
    try:
        images = load_dataset(str(meta.get("dataset") or "digits"), "test").tensors[0][:count]
    except (ValueError, OSError):
        images = None
    if images is None or tuple(images.shape[1:]) != input_shape:
        images = torch.rand(count, *input_shape, generator=torch.Generator().manual_seed(0))
    return images


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mpcvit.localstack import LocalStack, StackConfig

    args.commit = _git_commit()  # the code the stack runs: taken before it starts
    net, meta = load_checkpoint(args.checkpoint)
    images = soak_images(meta, tuple(net.spec.input_shape), args.images)
    with torch.no_grad():
        expected = net(normalise_input(images, meta)).argmax(-1)
    os.environ["MPCVIT_BATCH_SIZE"] = str(args.batch_size)
    os.environ["MPCVIT_BATCH_WAIT_MS"] = str(args.batch_wait_ms)
    os.environ["MPCVIT_QUEUE_BOUND"] = "256"
    config = StackConfig(models_dir=args.checkpoint.parent, model=args.model, insecure=args.insecure)
    with LocalStack(config) as stack:
        assert stack.endpoints is not None
        pids = {proc.role: proc.popen.pid for proc in stack.procs}
        url, trust = stack.endpoints.coordinator_url, stack.client_trust()
        dealer = _dealer_pinger(stack)
        try:
            with Sampler(pids, args.sample_s, dealer) as sampler:
                outcome = drive(url, trust, args.model, images, expected, args.requests, args.clients, sampler)
        finally:
            dealer.close()
        samples = sampler.samples
    commit = args.commit
    judged = args.requests >= args.min_judged
    roles = summarise(samples, args.requests, args.warmup, args.bound_mb, args.bound_pct, judged)
    return {
        "benchmark": "soak: resident memory of each role over private requests from concurrent SDK clients",
        "model": args.model,
        "checkpoint": str(args.checkpoint.resolve().relative_to(ROOT)) if args.checkpoint.resolve().is_relative_to(ROOT)
        else args.checkpoint.name,
        "stack": f"local: dealer + party 0 + party 1 + coordinator, loopback, {'plaintext gRPC' if args.insecure else 'mutual TLS'}",
        "coordinator": {"batch_size": args.batch_size, "batch_wait_ms": args.batch_wait_ms},
        "requests": args.requests,
        "clients": args.clients,
        "answered": outcome["answered"],
        "wrong_answers": len(outcome["wrong"]),
        "wrong": outcome["wrong"][:20],
        "errors": len(outcome["errors"]),
        "error_samples": outcome["errors"][:10],
        "seconds": outcome["seconds"],
        "requests_per_s": outcome["requests_per_s"],
        "latency_p50_s": outcome["latency_p50_s"],
        "warmup_requests": round(args.warmup * args.requests),
        "plateau_rule": (f"growth over the second half (median RSS over the last tenth of the requests minus the median over the "
                         f"tenth around half-way) <= {args.bound_mb:g} MB + {args.bound_pct:g}% of the half-way median; "
                         + ("judged" if judged else f"not judged (fewer than {args.min_judged} requests)")),
        "roles": roles,
        "dealer_open_batches": {"peak": max((s.get("dealer_open_batches") or 0 for s in samples), default=None),
                                "end": samples[-1].get("dealer_open_batches")},
        "plateau": all(r["plateau"] for r in roles.values()) if judged else None,
        "samples": samples,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "commit": commit,
        "command": "python -m benchmarks.soak " + " ".join(args.argv),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="private requests in all")
    p.add_argument("--clients", type=int, default=4, help="SDK client threads sending at once")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the model's checkpoint under checkpoints/")
    p.add_argument("--images", type=int, default=64, help="test images cycled through")
    p.add_argument("--batch-size", type=int, default=8, help="the coordinator's batch size")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--sample-s", type=float, default=0.5, help="seconds between RSS samples")
    p.add_argument("--warmup", type=float, default=0.25, help="fraction of the requests counted as warm-up")
    p.add_argument("--bound-mb", type=float, default=32.0, help="allowed second-half growth per role, MB (plus --bound-pct)")
    p.add_argument("--bound-pct", type=float, default=5.0, help="allowed second-half growth per role, %% of its half-way RSS")
    p.add_argument("--min-judged", type=int, default=100, help="shorter runs are measured, not judged")
    p.add_argument("--insecure", action="store_true", help="start the stack without TLS")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "soak" / "soak.json")
    p.add_argument("--plot", type=Path, default=None, help="default: --out with .png")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.checkpoint is None:
        from mpcvit.commands.demo import find_checkpoint

        args.checkpoint = find_checkpoint(ROOT / "checkpoints", args.model)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    png = plot(result, args.plot or args.out.with_suffix(".png"))
    log.info("wrote %s and %s", args.out, png)
    for role, r in result["roles"].items():
        log.info("%-11s start %s MB, after warm-up %s, half-way %s, end %s, peak %s; second-half growth %s MB (bound %s): %s",
                 role, r["start_mb"], r["after_warmup_mb"], r["half_mb"], r["end_mb"], r["peak_mb"],
                 r["growth_second_half_mb"], r["bound_mb"], {True: "plateau", False: "GROWS", None: "not judged"}[r["plateau"]])
    log.info("%d/%d answered, %d wrong, %d errors, %.1f s", result["answered"], result["requests"], result["wrong_answers"],
             result["errors"], result["seconds"])
    ok = result["wrong_answers"] == 0 and result["answered"] == result["requests"] and result["plateau"] is not False
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
