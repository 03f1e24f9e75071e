"""``server.parties.both``: which of the two parties' failures the client is told."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from server.errors import CoordinatorError, PartyUnavailable, SessionAborted, status_from_grpc
from server.parties import both

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


async def _fail(after_s: float, exc: Exception) -> Any:
    await asyncio.sleep(after_s)
    raise exc


def _raised(*calls: Any, **kwargs: Any) -> CoordinatorError:
    async def go() -> None:
        await both(list(calls), **kwargs)

    with pytest.raises(CoordinatorError) as err:
        asyncio.run(go())
    return err.value


def peer_lost(rank: int) -> CoordinatorError:
    """A party that answered: its peer connection broke (parties/transport.py's message)."""
    return status_from_grpc(rank, UNAVAILABLE, "peer connection lost: stream closed")


def unreachable(rank: int) -> CoordinatorError:
    """The coordinator's own call to the party failed: nothing answers there."""
    return status_from_grpc(rank, UNAVAILABLE, "cannot connect to 127.0.0.1:9 within 1.0 s", unreachable=True)


def test_an_unreachable_party_is_named_over_its_peer_reporting_it_lost() -> None:
    # party 0's report arrives first; party 1's own call fails only when its connect timeout ends, after the grace
    err = _raised(_fail(0.0, peer_lost(0)), _fail(0.3, unreachable(1)), grace_s=0.05, peer_grace_s=1.0)
    assert isinstance(err, PartyUnavailable) and err.unreachable and str(err).startswith("party 1 ")
    # both in time: the unreachable one wins whatever the order
    err = _raised(_fail(0.05, unreachable(0)), _fail(0.0, peer_lost(1)), grace_s=0.5)
    assert str(err).startswith("party 0 ")


def test_an_unreachable_party_wins_over_a_peers_deadline_or_abort() -> None:
    deadline = status_from_grpc(0, grpc.StatusCode.DEADLINE_EXCEEDED, "peer never joined")
    assert str(_raised(_fail(0.0, deadline), _fail(0.0, unreachable(1)))).startswith("party 1 ")
    aborted = status_from_grpc(0, grpc.StatusCode.ABORTED, "the peer aborted the session")
    assert isinstance(aborted, SessionAborted)
    err = _raised(_fail(0.0, aborted), _fail(0.2, unreachable(1)), grace_s=0.05, peer_grace_s=1.0)
    assert str(err).startswith("party 1 ")


def test_the_long_wait_is_only_for_reports_about_the_peer_and_is_bounded() -> None:
    bad = status_from_grpc(0, grpc.StatusCode.INVALID_ARGUMENT, "input share does not open")
    loop_time: list[float] = []

    async def slow_ok() -> str:
        await asyncio.sleep(5)
        return "late"

    async def go(first: CoordinatorError, peer_grace_s: float) -> None:
        t0 = asyncio.get_running_loop().time()
        try:
            await both([_fail(0.0, first), slow_ok()], grace_s=0.05, peer_grace_s=peer_grace_s)
        finally:
            loop_time.append(asyncio.get_running_loop().time() - t0)

    with pytest.raises(CoordinatorError, match="does not open"):  # a party's own failure: no extra wait
        asyncio.run(go(bad, 3.0))
    assert loop_time[-1] < 1.0
    with pytest.raises(PartyUnavailable, match="peer connection lost"):  # the other party never fails: bounded
        asyncio.run(go(peer_lost(0), 0.4))
    assert 0.35 < loop_time[-1] < 2.0
