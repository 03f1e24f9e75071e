"""Run a function as both parties of a 2PC on this machine: two forked processes, CrypTen's gloo communicator.

Like ``crypten.mpc.run_multiprocess`` but bounded: a party that raises makes
the run fail at once (the other is stopped instead of hanging in a
collective), results are read before joining (large results do not
deadlock), and the whole run has a timeout. ``fn(rank, *args)`` must return
plain Python data (lists, dicts, numbers), not tensors.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import torch

from protocols.crypten_compat import crypten

log = logging.getLogger(__name__)


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


def run_two_party(fn: Callable[..., Any], *args: Any, timeout: float = 600.0, threads: int = 1) -> list[Any]:
    """Run ``fn(rank, *args)`` in two party processes; returns [result of rank 0, result of rank 1].

    Raises RuntimeError (with the failing party's traceback) if a party fails,
    or TimeoutError after ``timeout`` seconds.
    """
    ctx = mp.get_context("fork")
    out: "mp.Queue[Any]" = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="mpcvit-2pc-") as tmp:
        rendezvous = os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=_party_main, args=(fn, r, rendezvous, out, args, threads), daemon=True) for r in (0, 1)]
        for p in procs:
            p.start()
        results: dict[int, Any] = {}
        try:
            while len(results) < 2:
                try:
                    rank, status, value = out.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"two-party run did not finish within {timeout:.0f} s") from None
                if status != "ok":
                    raise RuntimeError(f"party {rank} failed:\n{value}")
                results[rank] = value
        finally:
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
    return [results[0], results[1]]
