"""Run one function as a two-party CrypTen computation in two local processes.

A harness for tests and benchmarks (not for serving): it spawns rank 0 and
rank 1 as separate processes on 127.0.0.1, gives each a CrypTen communicator
(``"grpc"``: :class:`parties.communicator.GrpcCommunicator` over a
:class:`parties.transport.Endpoint`, optionally with mutual TLS and a network
shape; ``"gloo"``: CrypTen's own ``DistributedCommunicator`` over
torch.distributed, the yardstick), calls ``fn(rank, *args)`` in each and
returns both results. ``fn`` must be importable (module level) and return
something picklable: results come back from our own child processes over a
multiprocessing queue, never from the peer party.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from parties.transport import Mode, NetworkShape
from protocols.local import collect_two_party

Backend = Literal["grpc", "gloo"]


@dataclass(frozen=True)
class PairConfig:
    """How the two processes talk."""

    backend: Backend = "grpc"
    mode: Mode = "stream"
    shape: NetworkShape = field(default_factory=NetworkShape)
    certs_dir: str | None = None  # mutual TLS with the certificates in this directory; None = plaintext
    session_timeout_s: float = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _grpc_party(rank: int, ports: list[int], config: PairConfig, fn: Callable[..., Any], args: tuple, out: Any) -> None:
    from parties.communicator import GrpcCommunicator, installed
    from parties.tls import channel_credentials, server_credentials
    from parties.transport import Endpoint

    role = f"party{rank}"
    endpoint = Endpoint(
        rank,
        f"127.0.0.1:{ports[rank]}",
        f"127.0.0.1:{ports[1 - rank]}",
        server_credentials=server_credentials(config.certs_dir, role) if config.certs_dir else None,
        channel_credentials=channel_credentials(config.certs_dir, role) if config.certs_dir else None,
        mode=config.mode,
        shape=config.shape,
    )
    try:
        with endpoint.session("pair", config.session_timeout_s) as session:
            with installed(GrpcCommunicator(session)):
                out.put((rank, "ok", _detach(fn(rank, *args))))
    finally:
        endpoint.close()


def _gloo_party(rank: int, rendezvous: str, fn: Callable[..., Any], args: tuple, out: Any) -> None:
    from protocols.crypten_compat import crypten

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", RENDEZVOUS=rendezvous, DISTRIBUTED_BACKEND="gloo")
    crypten.init()
    try:
        out.put((rank, "ok", _detach(fn(rank, *args))))
    finally:
        crypten.uninit()


def _detach(value: Any) -> Any:
    """Tensors as numpy arrays, so they pickle by value (not as shared memory the child frees at exit)."""
    if isinstance(value, torch.Tensor):
        return _Array(value.detach().cpu().numpy())
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    return value


def _attach(value: Any) -> Any:
    if isinstance(value, _Array):
        return torch.from_numpy(value.array)
    if isinstance(value, dict):
        return {k: _attach(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_attach(v) for v in value)
    return value


@dataclass
class _Array:
    array: Any


def _entry(target: Callable[..., None], rank: int, out: Any, *args: Any) -> None:
    try:
        target(rank, *args, out)
    except BaseException as exc:  # report, never hang the parent
        out.put((rank, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_pair(fn: Callable[..., Any], *args: Any, config: PairConfig = PairConfig(), timeout_s: float = 300.0) -> list[Any]:
    """``[fn(0, *args), fn(1, *args)]``, computed by two processes over ``config``'s transport."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        if config.backend == "gloo":
            rendezvous = f"file://{Path(tmp) / 'rendezvous'}"
            procs = [ctx.Process(target=_entry, args=(_gloo_party, r, out, rendezvous, fn, args)) for r in (0, 1)]
        else:
            ports = [free_port(), free_port()]
            procs = [ctx.Process(target=_entry, args=(_grpc_party, r, out, ports, config, fn, args)) for r in (0, 1)]
        for p in procs:
            p.start()
        return collect_two_party(procs, out, timeout_s, transform=_attach)
