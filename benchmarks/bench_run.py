"""Running the benchmark: both parties' side of every measured forward, and the parent that starts them.

Measuring protocol per model: share the weights once, ``--warmup`` forwards
unshaped (not recorded), ``--repeats`` unshaped forwards (compute), then per
network the shaper is switched on (both parties, after a barrier) and the
forward is repeated (``--repeats`` on LAN, ``--wan-repeats`` on WAN, for batch
sizes up to ``--wan-max-batch``; larger batches get the prediction only).
The parties return plain data; ``benchmarks.bench_summary`` turns it into
result rows.
"""

from __future__ import annotations

import os
import platform
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_models import CODE_DIRS, ROOT, BenchSettings, ModelEntry, resolve_entries, secure_config
from benchmarks.bench_summary import summarise_entry
from benchmarks.published import NETWORKS, SOURCE
from mpcvit.models import ArchSpec
from mpcvit.prg import new_key


# -- the party side (runs in each of the two processes) ----------------------------


def _set_shape(network: str | None) -> None:
    """Switch this party's sender-side shaper (gRPC transport only) to a network, or off (None)."""
    from parties.transport import NETWORKS as SHAPES_BY_NAME
    from parties.transport import Shaper
    from protocols.crypten_compat import crypten

    comm = crypten.communicator.get()
    comm.barrier()  # nothing of the previous setting is still in flight
    comm.session.endpoint.link.shaper = Shaper(SHAPES_BY_NAME[network or "none"])


def _input_share(rank: int, spec: ArchSpec, batch: int, seed: int, precision_bits: int, master_key: bytes) -> torch.Tensor:
    """This party's share of a random [0, 1] image batch.

    Both party processes play the client here: the (public, seeded) benchmark
    image is split under a PRG key derived from the run's secret master key,
    so both derive the same split. Nothing secret is in a benchmark image.
    """
    from mpcvit.prg import derive_key
    from mpcvit.sealing import share_fixed_point

    x = torch.rand(batch, *spec.input_shape, generator=torch.Generator().manual_seed(seed + batch))
    shares = share_fixed_point(x, precision_bits=precision_bits, key=derive_key(master_key, f"input/batch{batch}"))
    return shares[rank]


@dataclass
class _Randomness:
    """This party's randomness provider; with the dealer, each forward's batch is begun before the clock starts.

    The dealer's material is the offline phase (``InProcessDealer`` computes
    it here, as the gRPC dealer would ahead of a request), so it is prepared
    outside the timed forward; the online forward has no dealer round.
    ``begin`` returns what this party received from the dealer for the batch
    (its 32-byte key, plus corrections for party 0 and DCF keys for both) and
    the dealer's seconds spent on this party's material.
    """

    rank: int
    kind: str
    master_key: bytes
    provider: Any = None
    dealer: Any = None

    def install(self) -> None:
        from protocols.providers import InProcessDealer, install_provider, make_provider

        self.provider = make_provider(self.kind, self.rank)
        install_provider(self.provider)
        self.dealer = InProcessDealer(self.master_key) if self.kind == "dealer" else None

    def begin(self, secure: Any, batch: int) -> dict[str, Any] | None:
        if self.dealer is None:
            return None
        plan = secure.plan(batch)  # local dry run, cached per batch size
        bytes0, seconds0, cpu0 = self.provider.stats.bytes_received, self.dealer.dealer_seconds, self.dealer.dealer_cpu_seconds
        key, corrections = self.dealer.next_batch(self.rank, plan)
        self.provider.begin_batch(key, plan, corrections)
        return {
            "key_bytes": len(key),
            "material_bytes": int(self.provider.stats.bytes_received - bytes0),  # corrections and DCF keys
            "dealer_s": self.dealer.dealer_seconds - seconds0,
            "dealer_cpu_s": self.dealer.dealer_cpu_seconds - cpu0,
            "requests": len(plan),
            "dcf_requests": sum(1 for r in plan if r.kind == "dcf"),
        }

    def end(self) -> None:
        if self.dealer is not None:
            self.provider.end_batch()


def _wire_bytes(comm: Any) -> int | None:
    stats = getattr(comm, "wire_stats", None)
    return int(stats()["bytes_sent"]) if callable(stats) else None


def _timed_forward(secure: Any, x_share: torch.Tensor, rng: _Randomness) -> tuple[torch.Tensor, dict[str, Any]]:
    """One timed forward: the offline randomness first (untimed), a barrier, then the clock around the forward.

    ``wall_s`` is its wall-clock time, ``cpu_s`` this party process's CPU seconds over it (``time.process_time``:
    every thread of the process, so the transport's threads too)."""
    from protocols.crypten_compat import crypten

    comm = crypten.communicator.get()
    offline = rng.begin(secure, int(x_share.shape[0]))
    comm.barrier()
    wire0 = _wire_bytes(comm)
    t0, cpu0 = time.perf_counter(), time.process_time()
    logits_share, report = secure.forward_shares(x_share)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0  # cpu: this party process, all its threads
    wire1 = _wire_bytes(comm)
    rng.end()
    rec: dict[str, Any] = {"wall_s": wall, "cpu_s": cpu, "report": report.to_dict(), "offline": offline}
    if wire0 is not None and wire1 is not None:
        rec["wire_bytes_sent"] = wire1 - wire0
    return logits_share, rec


def _plan(job: dict[str, Any]) -> list[tuple[int, str | None, int]]:
    """(batch, network or None = unshaped, repeats) in the order the party runs them."""
    plan: list[tuple[int, str | None, int]] = []
    for b in job["batches"]:
        plan.append((b, None, job["repeats"]))
        if job["shaped"]:
            for net in job["networks"]:
                if net == "wan" and b > job["wan_max_batch"]:
                    continue
                plan.append((b, net, job["wan_repeats"] if net == "wan" else job["repeats"]))
    return plan


def bench_party(rank: int, jobs: list[dict[str, Any]], progress: Any = None) -> list[dict[str, Any]]:
    """One party's side of the whole run (every model in turn, one process pair); plain data out."""
    torch.set_num_threads(1)
    first = jobs[0]
    rng = _Randomness(rank, first["provider"], bytes.fromhex(first["master_key"]))
    rng.install()
    return [bench_model(rank, job, rng, progress) for job in jobs]


def bench_model(rank: int, job: dict[str, Any], rng: _Randomness, progress: Any = None) -> dict[str, Any]:
    """One party's side of one model's benchmark: share once, warm up, then every (batch, network) in turn."""
    from protocols.runtime import SecureViT

    torch.manual_seed(job["seed"])
    spec = ArchSpec.from_dict(job["spec"])
    model, meta = None, None
    if rank == 0:
        model, meta = _owner_model(spec, job.get("checkpoint"))
    t0 = time.perf_counter()
    config = secure_config(job["protocols"], job["provider"])
    # the in-process dealer hands out the model keys: the weights' masks are opened once per load, as the parties do
    secure = SecureViT.share(model, spec, meta, owner=0, config=config, model_keys=rng.dealer)
    out: dict[str, Any] = {"rank": rank, "share_s": time.perf_counter() - t0, "runs": [], "checks": [],
                           "config": {"comparison": config.comparison, "range_start": config.range_start,
                                      "fixed_weight_masks": bool(secure.fixed),
                                      "inv_sqrt_iters": config.inv_sqrt_iters, "provider": config.provider}}
    shaped = job["transport"] == "grpc" and job["shaped"]
    for batch in job["batches"]:
        x_share = _input_share(rank, spec, batch, job["seed"], secure.precision_bits, rng.master_key)
        if shaped:
            _set_shape(None)
        for _ in range(job["warmup"]):
            _timed_forward(secure, x_share, rng)
        first_logits: torch.Tensor | None = None
        for b, net, repeats in _plan(job):
            if b != batch:
                continue
            if shaped:
                _set_shape(net)
            for _ in range(repeats):
                logits_share, rec = _timed_forward(secure, x_share, rng)
                first_logits = logits_share if first_logits is None else first_logits
                out["runs"].append({"batch": batch, "network": net, **rec})
                if progress is not None and rank == 0:
                    progress.put(1)
        if shaped:
            _set_shape(None)
        check: dict[str, Any] = {"batch": batch, "logits_share": first_logits.tolist() if first_logits is not None else None}
        if model is not None:
            from mpcvit.checkpoint import normalise_input

            x = _plain_input(spec, batch, job["seed"])
            with torch.no_grad():
                check["plain_logits"] = model(normalise_input(x, meta) if meta else x).tolist()
        out["checks"].append(check)
    return out


def _owner_model(spec: ArchSpec, checkpoint: str | None) -> tuple[Any, dict[str, Any] | None]:
    """Party 0's plaintext model: the checkpoint's trained weights, else seeded random weights."""
    from mpcvit.checkpoint import load_checkpoint
    from mpcvit.models import build_model

    if checkpoint:
        model, meta = load_checkpoint(ROOT / checkpoint)
        return model, meta
    return build_model(spec).eval(), None


def _plain_input(spec: ArchSpec, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + batch)
    return torch.rand(batch, *spec.input_shape, generator=g)


# -- the parent side -------------------------------------------------------------------


def cases(entries: list[ModelEntry], settings: BenchSettings) -> list[tuple[ModelEntry, str]]:
    """What the parties run, in order: every model under each protocol set in turn (``--protocols both``: side by side)."""
    return [(e, p) for e in entries for p in settings.runs_protocols()]


def _job(entry: ModelEntry, settings: BenchSettings, protocols: str = "fss") -> dict[str, Any]:
    return {
        "protocols": protocols,
        "spec": entry.spec.to_dict(), "batches": list(settings.batches), "networks": list(settings.networks),
        "repeats": settings.repeats, "wan_repeats": settings.wan_repeats, "wan_max_batch": settings.wan_max_batch,
        "warmup": settings.warmup, "seed": settings.seed, "transport": settings.transport,
        "shaped": settings.shaped and settings.transport == "grpc",
        "provider": settings.provider, "checkpoint": entry.checkpoint,
    }


def runs_per_entry(settings: BenchSettings) -> int:
    job = {"batches": list(settings.batches), "networks": list(settings.networks), "repeats": settings.repeats,
           "wan_repeats": settings.wan_repeats, "wan_max_batch": settings.wan_max_batch,
           "shaped": settings.shaped and settings.transport == "grpc"}
    return sum(r for _, _, r in _plan(job))


def run_entries(entries: list[ModelEntry], settings: BenchSettings, progress: Any = None) -> list[list[dict[str, Any]]]:
    """Both parties' raw results per case: ``[[rank0, rank1] for each of cases(entries, settings)]`` (one local process pair)."""
    from parties.pair import PairConfig, run_pair

    backend = "grpc" if settings.transport == "grpc" else "gloo"
    config = PairConfig(backend=backend, session_timeout_s=settings.timeout_s)  # type: ignore[arg-type]
    jobs = [_job(e, settings, p) for e, p in cases(entries, settings)]
    master_key = new_key().hex()  # the simulated dealer's and client's secret, handed to both parties
    for job in jobs:
        job["master_key"] = master_key
    raw0, raw1 = run_pair(bench_party, jobs, progress, config=config, timeout_s=settings.timeout_s)
    return [[a, b] for a, b in zip(raw0, raw1)]


def environment() -> dict[str, Any]:
    """Machine, versions and git commit, for results.json."""
    from protocols.crypten_compat import crypten

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform(),
                    "load_average_1_5_15": list(os.getloadavg())},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "crypten": getattr(crypten, "__version__", "0.4.1")},
        "git": _git_state(),
        "command": " ".join(["mpcvit", "bench", *sys.argv[2:]]) if len(sys.argv) > 1 and sys.argv[1] == "bench" else " ".join(sys.argv),
    }


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()]
    code = [p for p in dirty if p.startswith(CODE_DIRS)]
    return {"commit": git("rev-parse", "HEAD"), "dirty_paths": len(dirty), "uncommitted_code": code, "code_sha256": code_fingerprint()}


def code_fingerprint() -> dict[str, str]:
    """SHA-256 of every source file the secure forward runs (committed or not): what exactly was measured."""
    import hashlib

    out = {}
    for d in CODE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            out[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def run_benchmark(settings: BenchSettings, show_progress: bool = True) -> dict[str, Any]:
    """Run every model of ``settings``; return the results.json document."""
    from tqdm import tqdm

    entries = resolve_entries(settings)
    env = environment()  # before the parties start: the code they import is the code fingerprinted here
    runs = cases(entries, settings)
    total = len(runs) * runs_per_entry(settings)
    started = time.time()
    rows: list[dict[str, Any]] = []
    import multiprocessing as mp

    progress = mp.get_context("spawn").Queue()
    with tqdm(total=total, desc="bench", unit="run", disable=not show_progress) as bar:
        raws = _run_with_progress(entries, settings, progress, bar)
    for (entry, protocols), raw in zip(runs, raws):
        rows.extend(summarise_entry(entry, settings, raw, protocols))
    doc: dict[str, Any] = {
        "benchmark": "mpcvit communication-cost benchmark",
        **env,
        "settings": settings.to_dict(),
        "provider": settings.provider,
        "protocols": list(settings.runs_protocols()),
        "networks": {n: NETWORKS[n].to_dict() for n in settings.networks},
        "latency_model": "predicted = compute + rounds x RTT + 8 x bytes(busier party) / bandwidth",
        "models": [e.describe() for e in entries],
        "results": rows,
        "published_source": SOURCE,
        "wall_seconds": time.time() - started,
        "load_average_at_end": list(os.getloadavg()),
    }
    return doc


def _run_with_progress(entries: list[ModelEntry], settings: BenchSettings, progress: Any, bar: Any) -> list[list[dict[str, Any]]]:
    """Run in a thread while this one moves the progress bar (one tick per measured forward)."""
    result: dict[str, Any] = {}
    per_entry = runs_per_entry(settings)
    runs = cases(entries, settings)

    def target() -> None:
        try:
            result["raw"] = run_entries(entries, settings, progress)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            bar.update(progress.get(timeout=0.5))
            done = min(len(runs) - 1, int(bar.n) // max(1, per_entry))
            bar.set_postfix_str(f"{runs[done][0].label} {runs[done][0].arch} {runs[done][1]}")
        except queue.Empty:
            pass
    worker.join()
    while True:
        try:
            bar.update(progress.get_nowait())
        except queue.Empty:
            break
    if "error" in result:
        raise RuntimeError(f"benchmark failed: {result['error']}") from result["error"]
    return result["raw"]
