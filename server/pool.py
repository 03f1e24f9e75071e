"""The coordinator's pool of party pairs: which pair runs the next session.

A pair is one party 0 and one party 1 that run secure forwards together; a
deployment may run several (replicas of the same two organisations), each
serving the same models. Replicas of a party share that party's sealing key
(its ``party<R>.x25519`` and certificate), so a client seals once, to the keys
``GET /v1/parties/keys`` lists, and any pair can open its request; the
coordinator keeps a pair whose keys differ out of rotation.

Choosing a pair for a session (a batch's forward, or a LoadModel):

* among the pairs in rotation with a free session slot (fewer sessions
  running on it than its slots: ``max_sessions`` when the coordinator was
  given one, else the pair's ``capacity``, the smaller of its two parties'
  Health ``max_sessions``), the least loaded one: fewest
  sessions running, then fewest sessions started so far (round robin among
  equals);
* when every pair in rotation is busy, wait for a slot;
* when no pair is in rotation at all, the least loaded of the others: the
  call fails fast (503) while the pair is down, and works once it is back,
  so a single pair behaves as it did before pools.

A pair leaves the rotation when a call to it fails as unavailable, or when
the coordinator's Health watch finds a party, its peer or its dealer
unreachable; it comes back when Health answers well again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field

from server.parties import PartyClient

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PartyPair:
    """One party 0 and one party 1, the models loaded on both, and the sessions running on them."""

    index: int
    parties: tuple[PartyClient, PartyClient]
    in_rotation: bool = True
    why_out: str = ""  # the failure that took it out of rotation
    in_flight: int = 0  # sessions running now
    started: int = 0  # sessions started so far
    loaded: set[str] = field(default_factory=set)  # models loaded on both parties of this pair
    capacity: int = 1  # sessions its parties run at once (their Health), 1 until they answered

    @property
    def addresses(self) -> tuple[str, str]:
        return (self.parties[0].address, self.parties[1].address)

    def __str__(self) -> str:
        return f"pair {self.index} ({self.parties[0].address}, {self.parties[1].address})"


class PairPool:
    """The pairs and their session slots; ``session()`` hands out the least-loaded pair in rotation."""

    def __init__(self, pairs: list[PartyPair], max_sessions: int | None = None) -> None:
        if not pairs:
            raise ValueError("a pool needs at least one party pair")
        self.pairs = pairs
        self.max_sessions = max_sessions
        self._changed = asyncio.Condition()

    def _pick(self, exclude: Collection[PartyPair]) -> PartyPair | None:
        pairs = [p for p in self.pairs if p not in exclude]
        free = [p for p in pairs if p.in_flight < self.slots(p)]
        if any(p.in_rotation for p in pairs):
            free = [p for p in free if p.in_rotation]
        if not free:
            return None
        return min(free, key=lambda p: (p.in_flight, p.started, p.index))

    def slots(self, pair: PartyPair) -> int:
        """Sessions ``pair`` may run at once: ``max_sessions`` if the coordinator was given one, else its capacity."""
        return self.max_sessions if self.max_sessions is not None else pair.capacity

    async def set_capacity(self, pair: PartyPair, capacity: int) -> None:
        """The sessions the pair's parties run at once (the smaller of their Health replies)."""
        async with self._changed:
            capacity = max(1, int(capacity))
            if capacity != pair.capacity:
                log.info("%s runs %d session(s) at once", pair, capacity)
            pair.capacity = capacity
            self._changed.notify_all()

    def has_other(self, pair: PartyPair) -> bool:
        """Whether a pair other than ``pair`` is in rotation (somewhere to retry a batch)."""
        return any(p.in_rotation and p is not pair for p in self.pairs)

    async def acquire(self, exclude: Collection[PartyPair] = ()) -> PartyPair:
        """A session slot on the least-loaded pair (not in ``exclude``); give it back with ``release``."""
        async with self._changed:
            while (pair := self._pick(exclude)) is None:
                await self._changed.wait()
            pair.in_flight += 1
            pair.started += 1
            return pair

    async def acquire_on(self, pair: PartyPair) -> PartyPair:
        """A session slot on this very pair (LoadModel on each pair), waiting for one if it is busy."""
        async with self._changed:
            await self._changed.wait_for(lambda: pair.in_flight < self.slots(pair))
            pair.in_flight += 1
            pair.started += 1
            return pair

    async def release(self, pair: PartyPair) -> None:
        async with self._changed:
            pair.in_flight -= 1
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def session(self, exclude: Collection[PartyPair] = ()) -> AsyncIterator[PartyPair]:
        """``acquire`` for the block."""
        pair = await self.acquire(exclude)
        try:
            yield pair
        finally:
            await self.release(pair)

    @contextlib.asynccontextmanager
    async def session_on(self, pair: PartyPair) -> AsyncIterator[PartyPair]:
        """``acquire_on`` for the block."""
        await self.acquire_on(pair)
        try:
            yield pair
        finally:
            await self.release(pair)

    async def take_out(self, pair: PartyPair, why: str) -> None:
        """Out of rotation until Health answers well again."""
        async with self._changed:
            if pair.in_rotation:
                log.warning("%s leaves the rotation: %s", pair, why)
            pair.in_rotation, pair.why_out = False, why
            self._changed.notify_all()

    async def put_back(self, pair: PartyPair) -> None:
        async with self._changed:
            if not pair.in_rotation:
                log.info("%s answers Health again: back in rotation", pair)
            pair.in_rotation, pair.why_out = True, ""
            self._changed.notify_all()

    @property
    def in_rotation(self) -> int:
        return sum(p.in_rotation for p in self.pairs)
