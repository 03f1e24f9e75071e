"""The coordinator's gRPC clients of the two parties' ``PartyControl`` services (control.proto).

Channels are ``grpc.aio`` (the coordinator is asyncio), mutual TLS with the
coordinator's certificate from ``mpcvit certs`` unless ``insecure`` is asked for
explicitly. Reconnection back-off is capped at one second so that a party that
comes back is used by the next request. Calls never wait for a channel to be
ready forever: before a call, a channel that is not READY gets at most
``connect_timeout_s`` (and never more than the call's deadline) to connect, so
a party that is down fails the request with UNAVAILABLE (503) quickly, and a
channel still in its reconnect back-off after the party came back connects
for the next request instead of failing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
from grpc import aio

from parties import tls
from parties.proto import control_pb2, control_pb2_grpc
from server.errors import CoordinatorError, PartyUnavailable, SessionAborted, status_from_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]

COORDINATOR_ROLE = "coordinator"
BOTH_GRACE_S = 1.0  # after one party's failure, how long the other's answer (often the cause) is awaited


def channel_credentials(cert_dir: Path) -> grpc.ChannelCredentials:
    """Mutual-TLS credentials of the coordinator: trust the project CA (``ca.pem``), present ``coordinator.pem``."""
    return tls.channel_credentials(cert_dir, COORDINATOR_ROLE)


class PartyClient:
    """One party's PartyControl stub; every call translates gRPC failures into ``CoordinatorError``."""

    def __init__(
        self, rank: int, address: str, credentials: grpc.ChannelCredentials | None,
        retry_after_s: int = 1, connect_timeout_s: float = 2.0,
    ) -> None:
        self.rank = rank
        self.address = address
        self.retry_after_s = retry_after_s
        self.connect_timeout_s = connect_timeout_s
        if credentials is None:
            self.channel = aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            # the handshake accepts only party ``rank``'s certificate, not any the CA signed
            self.channel = aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS + tls.role_options(f"party{rank}"))
        self.stub = control_pb2_grpc.PartyControlStub(self.channel)

    async def _call(self, fn: Callable[..., Awaitable[T]], request: object, timeout: float) -> T:
        if timeout <= 0:
            raise status_from_grpc(self.rank, grpc.StatusCode.DEADLINE_EXCEEDED, "no time left before the deadline")
        await self._connected(min(timeout, self.connect_timeout_s))
        try:
            return await fn(request, timeout=timeout, wait_for_ready=False)
        except aio.AioRpcError as exc:
            # UNAVAILABLE from a party that answered leaves its channel READY; when the party is gone (refused,
            # reset, closed during the call) the channel has left READY by the time the call fails
            unreachable = (exc.code() == grpc.StatusCode.UNAVAILABLE
                           and self.channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.READY)
            raise status_from_grpc(self.rank, exc.code(), exc.details(), self.retry_after_s, unreachable) from exc

    async def _connected(self, timeout: float) -> None:
        """Wait (bounded) for the channel to be READY; UNAVAILABLE if it does not get there in time."""
        if self.channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise status_from_grpc(
                self.rank, grpc.StatusCode.UNAVAILABLE, f"cannot connect to {self.address} within {timeout:.1f} s",
                self.retry_after_s, unreachable=True,
            ) from None

    async def health(self, timeout: float) -> control_pb2.HealthReply:
        return await self._call(self.stub.Health, control_pb2.HealthRequest(), timeout)

    async def load_model(self, request: control_pb2.LoadModelRequest, timeout: float) -> control_pb2.LoadModelReply:
        return await self._call(self.stub.LoadModel, request, timeout)

    async def infer(self, request: control_pb2.InferRequest, timeout: float) -> control_pb2.InferReply:
        return await self._call(self.stub.Infer, request, timeout)

    async def stats(self, timeout: float) -> control_pb2.StatsReply:
        return await self._call(self.stub.Stats, control_pb2.StatsRequest(), timeout)

    async def close(self) -> None:
        await self.channel.close()


def _errors(tasks: list[asyncio.Future[T]], done: set[asyncio.Future[T]]) -> list[BaseException]:
    """The failures among ``done``, in party order."""
    return [e for t in tasks if t in done and not t.cancelled() and (e := t.exception()) is not None]


def _about_the_peer(exc: BaseException) -> bool:
    """A failure a party reports about something else: its peer aborted the session, or (UNAVAILABLE from a party
    the coordinator reached) its peer connection or the dealer was lost."""
    return isinstance(exc, SessionAborted) or (isinstance(exc, PartyUnavailable) and not exc.unreachable)


def _rank(exc: CoordinatorError) -> tuple[bool, bool, int]:
    """Sort key, most informative first: a party the coordinator cannot reach, then a party's own failure over a
    session its peer aborted, then a bad input (400) over a deadline (504) over unavailability (503)."""
    return (not getattr(exc, "unreachable", False), isinstance(exc, SessionAborted), exc.status)


async def both(calls: list[Awaitable[T]], grace_s: float = BOTH_GRACE_S, peer_grace_s: float | None = None) -> list[T]:
    """Run one call per party concurrently; a failure cancels the others and is raised.

    After the first failure the other calls get ``grace_s`` to answer too
    (when one party refuses, it aborts the session at its peer, whose ABORTED
    may arrive first). When every failure so far is one a party reports about
    its peer (ABORTED, or "peer connection lost"), the other call gets up to
    ``peer_grace_s`` in all (give it the connect timeout and more: a dead party's
    own call fails only when its connection attempt gives up), so that the party
    that is actually down is the one named. Then the most informative failure
    wins (``_rank``): a party the coordinator could not reach, then a party's
    own failure over a session its peer aborted, then a bad input (400) over a
    deadline (504) over unavailability (503).
    """
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if pending and _errors(tasks, done):
            started = time.monotonic()
            more, pending = await asyncio.wait(pending, timeout=grace_s)
            done |= more
            if pending and peer_grace_s is not None and all(_about_the_peer(e) for e in _errors(tasks, done)):
                left = peer_grace_s - (time.monotonic() - started)
                if left > 0:
                    more, pending = await asyncio.wait(pending, timeout=left)
                    done |= more
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        raise
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    errors = _errors(tasks, done)
    if errors:
        coordinator_errors = [e for e in errors if isinstance(e, CoordinatorError)]
        if coordinator_errors:
            raise min(coordinator_errors, key=_rank)
        raise errors[0]
    return [t.result() for t in tasks]
