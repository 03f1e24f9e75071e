"""Run a function as both parties of a 2PC on this machine: two processes, CrypTen's gloo communicator.

Like ``crypten.mpc.run_multiprocess`` but bounded: a party that raises makes
the run fail at once (the other is stopped instead of hanging in a
collective), results are read before joining (large results do not
deadlock), a party that dies (a signal, a crash in native code) fails the
run within a second, and the whole run has a timeout. ``fn(rank, *args)``
must be a module-level function (it is pickled to the parties) and return
plain Python data (lists, dicts, numbers), not tensors.

The parties come from a fork server, never from a plain ``fork`` of the
caller: the caller may already run gRPC's or torch's threads (a test run, the
coordinator), and forking a process with live threads can crash the child.
The fork server is a fresh interpreter that preloads torch and CrypTen once,
so each party still starts in a fraction of a second.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from protocols.crypten_compat import crypten

log = logging.getLogger(__name__)


_PRELOAD = ["torch", "protocols.crypten_compat", "protocols.runtime"]


def _party_main(fn: Callable[..., Any], rank: int, rendezvous: str, out: "mp.Queue[Any]", args: tuple[Any, ...], threads: int) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), RENDEZVOUS=f"file://{rendezvous}", DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(threads)
    try:
        crypten.init()
        try:
            result = fn(rank, *args)
        finally:
            crypten.uninit()
        out.put((rank, "ok", result))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the run
        out.put((rank, "error", traceback.format_exc()))


def run_two_party(fn: Callable[..., Any], *args: Any, rank_args: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None,
                  timeout: float = 600.0, threads: int = 1) -> list[Any]:
    """Run ``fn(rank, *args, *rank_args[rank])`` in two party processes; returns [result of rank 0, result of rank 1].

    ``rank_args`` carries what only one party may see (its own input share).
    Raises RuntimeError (with the failing party's traceback) if a party fails
    or dies, or TimeoutError after ``timeout`` seconds.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    out: "mp.Queue[Any]" = ctx.Queue()
    own = rank_args or ((), ())
    with tempfile.TemporaryDirectory(prefix="mpcvit-2pc-") as tmp:
        rendezvous = os.path.join(tmp, "rendezvous")
        procs = [
            ctx.Process(target=_party_main, args=(fn, r, rendezvous, out, (*args, *own[r]), threads), daemon=True)
            for r in (0, 1)
        ]
        for p in procs:
            p.start()
        return collect_two_party(procs, out, timeout)


def collect_two_party(procs: list[Any], out: Any, timeout: float,
                      transform: Callable[[Any], Any] = lambda v: v) -> list[Any]:
    """Read (rank, status, value) from both started ``procs`` via ``out``; stop them; [result 0, result 1].

    A party that reports an error, or dies without reporting (a signal, a crash
    in native code), fails the run within a second (RuntimeError); no result
    within ``timeout`` seconds is a TimeoutError. Processes still alive at the
    end are killed.
    """
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < 2:
            try:
                rank, status, value = out.get(timeout=1.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if r not in results and p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"party {dead[0]} died (exit code {procs[dead[0]].exitcode})") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"two-party run did not finish within {timeout:.0f} s") from None
                continue
            if status != "ok":
                raise RuntimeError(f"party {rank} failed:\n{value}")
            results[rank] = transform(value)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return [results[0], results[1]]
