"""The coordinator's core: a bounded queue, per-model batching, and one secure forward per batch.

A request (already checked by its route) becomes a ``PendingItem``. Each model
has a FIFO and one worker task. The worker takes the first waiting item, waits
for a session slot on a party pair (``server.pool``: the least-loaded pair in
rotation, as many sessions at once per pair as its parties run), then takes every other
item of that model already waiting and, if the batch is still short of
``batch_size``, waits up to ``batch_wait_ms`` for more. So requests that arrive
while every pair is busy go together into the next forward.

For a batch the coordinator sends ``Infer`` to the pair's party 0 and party 1
at the same time, with the same fresh session id, the items in the same order
(each party gets its own sealed share of each item) and the earliest deadline
of the batch. Each party answers one sealed logit share per item and its
costs. The first party failure cancels the other call; a batch that a party
rejects as INVALID_ARGUMENT is retried item by item so that one bad share fails
only its own request. A party that lost the model (restart) gets LoadModel
again once. A pair that is unavailable leaves the rotation and its batch goes
once to another pair in rotation, if there is one and time is left.

Models are loaded on every pair (preloads at start, others on first use per
pair). Every ``health_interval_s`` a watch asks every party for Health: a pair
whose party, peer link or dealer fails leaves the rotation, a pair that
answers well comes back, and on it every model a restarted party lacks is
loaded again on both (a restarted party holds no shares, and its peer's old
shares do not match new ones), so a party that comes back is ready before the
next request; preloads that failed because a pair was down are retried.

The queue is bounded: with ``queue_bound`` items waiting, a new request is
refused at once (503 + Retry-After), never left to hang. Every request has a
deadline; the client's wait ends at it (504) even if the forward is still on.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from mpcvit.sealing import Sealed
from parties.proto import control_pb2
from server.catalog import Catalog, ModelEntry
from server.errors import (
    BadRequest,
    CoordinatorError,
    DeadlineExceeded,
    DuplicateRequest,
    MaterialMismatch,
    ModelNotLoaded,
    PartyFailed,
    PartyUnavailable,
    QueueFull,
    UnknownModel,
    Unavailable,
)
from server.metrics import Metrics
from server.parties import BOTH_GRACE_S, PartyClient, both, channel_credentials
from server.pool import PairPool, PartyPair
from server.settings import Settings

TICKETS_SKIPPED_AFTER_MISMATCH = 4  # more than a party fetches ahead (parties.party.PREFETCH_DEPTH, 2)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartyCosts:
    """One party's costs for one secure forward (the whole batch)."""

    rounds: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    dealer_bytes: int = 0  # offline: what it received from the dealer for this forward
    dealer_wait_seconds: float = 0.0  # how long the forward waited for it (0 when it was fetched ahead and ready)
    dealer_fetch_seconds: float = 0.0  # how long fetching it took, wherever it ran
    dealer_prefetched: bool = False

    @classmethod
    def from_proto(cls, c: control_pb2.Costs) -> "PartyCosts":
        return cls(int(c.rounds), int(c.bytes_sent), int(c.bytes_received), float(c.seconds), int(c.dealer_bytes_received),
                   float(c.dealer_seconds), float(c.dealer_fetch_seconds), bool(c.dealer_prefetched))


@dataclass(frozen=True)
class ForwardCosts:
    """Costs of one secure forward: per party, and in total.

    Total rounds = max over the parties (they run the same protocol), total
    bytes = bytes sent by both parties, total seconds = the coordinator's wall
    time of the two concurrent Infer calls.
    """

    parties: tuple[PartyCosts, PartyCosts]
    seconds: float

    @property
    def rounds(self) -> int:
        return max(p.rounds for p in self.parties)

    @property
    def bytes(self) -> int:
        return sum(p.bytes_sent for p in self.parties)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": {"rounds": self.rounds, "bytes": self.bytes, "seconds": self.seconds},
            "parties": [
                {"rank": i, "rounds": p.rounds, "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received, "seconds": p.seconds,
                 "dealer": {"bytes": p.dealer_bytes, "wait_seconds": p.dealer_wait_seconds,
                            "fetch_seconds": p.dealer_fetch_seconds, "prefetched": p.dealer_prefetched}}
                for i, p in enumerate(self.parties)
            ],
        }


@dataclass
class ItemResult:
    """What one request gets back: both sealed logit shares and the costs of the forward it was in."""

    output_shares: tuple[Sealed, Sealed]
    costs: ForwardCosts
    queue_seconds: float
    batch_size: int
    session_id: str
    precision_bits: int
    output_policy: str = "logits"  # what the output shares hold: the logits, or only the class indices (label / topk:K)


@dataclass
class PendingItem:
    """One request waiting for, or in, a secure forward."""

    model: str
    request_id: str
    client_public_key: bytes
    shares: tuple[Sealed, Sealed]  # share i is sealed to party i
    deadline: float  # unix seconds
    enqueued: float = field(default_factory=time.monotonic)
    future: asyncio.Future[ItemResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def to_proto(self, rank: int) -> control_pb2.InferItem:
        s = self.shares[rank]
        return control_pb2.InferItem(
            request_id=self.request_id,
            client_public_key=self.client_public_key,
            input_share=control_pb2.SealedTensor(shape=list(s.shape), dtype=s.dtype, nonce=s.nonce, ciphertext=s.ciphertext),
        )

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
            self.future.exception()  # mark it retrieved: the waiter may already have given up at its deadline


def _sealed_from_proto(t: control_pb2.SealedTensor) -> Sealed:
    return Sealed(tuple(int(s) for s in t.shape), t.dtype, bytes(t.nonce), bytes(t.ciphertext))


def _unix_ms(t: float) -> int:
    return int(t * 1000)


def _pair_trouble(report: list[dict[str, Any]]) -> str:
    """Why a pair's Health report rules it out ('' when both parties answer, reach their peer and the dealer,
    and hold the sealing keys clients seal to)."""
    for r in report:
        party = f"party {r['rank']} at {r['address']}"
        if not r["reachable"]:
            return f"{party} does not answer Health: {r.get('error', '')}"
        if not r["peer_reachable"]:
            return f"{party} cannot reach its peer"
        if not r["dealer_reachable"]:
            return f"{party} cannot reach the dealer"
        if not r["key_matches"]:
            return f"{party} has another sealing key than the one clients seal to (replicas of a party share its key)"
    return ""


class Coordinator:
    """Queue, batch and run secure forwards on the pool of party pairs; keep the parties' keys and loaded models."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.catalog = Catalog(settings.model_dir)
        creds = None if settings.insecure else channel_credentials(settings.cert_dir)  # type: ignore[arg-type]

        def client(rank: int, address: str) -> PartyClient:
            return PartyClient(rank, address, creds, settings.retry_after_s, settings.connect_timeout_s)

        self.pool = PairPool(
            [PartyPair(i, (client(0, a0), client(1, a1))) for i, (a0, a1) in enumerate(settings.pair_addresses)],
            settings.max_sessions,
        )
        self.public_keys: list[bytes | None] = [None, None]
        # each party's TLS certificate and its signature over its key, relayed as they came (clients verify them)
        self.key_proofs: list[tuple[bytes, bytes]] = [(b"", b""), (b"", b"")]
        self._queues: dict[str, asyncio.Queue[PendingItem]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._forwards_running: set[asyncio.Task[None]] = set()
        self._waiting = 0
        self._in_flight_ids: set[str] = set()
        self._load_locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._load_generation: dict[tuple[int, str], int] = {}  # LoadModel rounds completed per (pair, model)
        self._watch_task: asyncio.Task[None] | None = None
        self.forwards = 0  # secure forwards run (tests and /metrics)
        self._epoch = secrets.token_hex(8)  # names this coordinator's ticket series (never reused after a restart)
        self._tickets: dict[str, int] = {}  # series -> the next dealer batch number
        self.material_mismatches = 0  # forwards whose parties held different dealer material (each retried once)
        self.implausible_answers = 0  # demo-mode answers the integrity net refused (mpcvit.client.check_plausible)

    @property
    def parties(self) -> tuple[PartyClient, PartyClient]:
        """The first pair's two parties."""
        return self.pool.pairs[0].parties

    @property
    def _peer_grace_s(self) -> float:
        """How long ``both`` waits for a party whose peer reported the session lost: past its connect timeout."""
        return self.settings.connect_timeout_s + BOTH_GRACE_S

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.refresh_keys()
        except CoordinatorError as exc:
            log.warning("parties not reachable at start (%s); will retry on demand", exc)
        for name in self.settings.preload_models:
            try:
                await self.ensure_loaded(self.model(name))
            except CoordinatorError as exc:
                log.warning("could not preload %s: %s; the party watch retries", name, exc)
        self._record_pool()
        if self.settings.health_interval_s > 0:
            self._watch_task = asyncio.create_task(self._watch(), name="party-watch")

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        tasks = [*self._workers.values(), *self._forwards_running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for q in self._queues.values():
            while not q.empty():
                q.get_nowait().fail(Unavailable("the coordinator is shutting down"))
        for pair in self.pool.pairs:
            for p in pair.parties:
                await p.close()

    @property
    def queue_length(self) -> int:
        return self._waiting

    # -- parties ---------------------------------------------------------------

    async def health(self) -> list[dict[str, Any]]:
        """Ask every party of every pair for Health now; a party that does not answer is reported, not raised."""

        async def one(pair: PartyPair, p: PartyClient) -> dict[str, Any]:
            try:
                h = await p.health(self.settings.health_timeout_s)
            except CoordinatorError as exc:
                return {"pair": pair.index, "rank": p.rank, "address": p.address, "reachable": False, "error": str(exc)}
            if len(h.public_key) == 32 and (self.public_keys[p.rank] is None or len(self.pool.pairs) == 1):
                self._remember_key(p.rank, h)  # one pair: its parties' keys are the keys, even a restarted one's new key
            return {
                "pair": pair.index, "rank": p.rank, "address": p.address, "reachable": True, "reported_rank": int(h.rank),
                "peer_reachable": bool(h.peer_reachable), "dealer_reachable": bool(h.dealer_reachable),
                "models": list(h.models), "key_matches": self._key_matches(p.rank, h),
                "max_sessions": int(h.max_sessions) or 1,  # a party that does not say runs one
            }

        return list(await asyncio.gather(*(one(pair, p) for pair in self.pool.pairs for p in pair.parties)))

    def _key_matches(self, rank: int, h: control_pb2.HealthReply) -> bool:
        """Whether a party's sealing key is the one clients seal to (replicas of a party share it)."""
        return self.public_keys[rank] is None or bytes(h.public_key) == self.public_keys[rank]

    async def refresh_keys(self) -> list[bytes]:
        """The parties' public keys, from the Health replies of the first pair that answers both."""
        failure: CoordinatorError | None = None
        for pair in sorted(self.pool.pairs, key=lambda p: not p.in_rotation):
            try:
                replies = await both([p.health(self.settings.health_timeout_s) for p in pair.parties], peer_grace_s=self._peer_grace_s)
            except CoordinatorError as exc:
                failure = failure or exc
                continue
            for p, h in zip(pair.parties, replies):
                if int(h.rank) != p.rank:
                    raise PartyFailed(f"the party at {p.address} says it is rank {h.rank}, configured as rank {p.rank}")
                if len(h.public_key) != 32:
                    raise PartyFailed(f"party {p.rank} sent a {len(h.public_key)}-byte public key, expected 32")
                self._remember_key(p.rank, h)
            await self.pool.set_capacity(pair, min(int(h.max_sessions) or 1 for h in replies))
            return [k for k in self.public_keys if k is not None]
        assert failure is not None
        raise failure

    def _remember_key(self, rank: int, h: control_pb2.HealthReply) -> None:
        self.public_keys[rank] = bytes(h.public_key)
        self.key_proofs[rank] = (bytes(h.certificate), bytes(h.key_signature))

    async def keys(self) -> list[bytes]:
        if any(k is None for k in self.public_keys):
            return await self.refresh_keys()
        return [k for k in self.public_keys if k is not None]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            try:
                await self.readmit()
            except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                log.exception("party watch failed")

    async def readmit(self) -> list[str]:
        """Check every pair's Health: take a failing pair out of rotation, put a good one back, load what it lacks.

        A pair is good when both parties answer, each reaches its peer and the
        dealer, and their sealing keys are the ones clients seal to. On a good
        pair every wanted model (every model loaded so far, every preload)
        that one of its parties lacks (it restarted) is loaded again on both.
        A load that finished while Health was asked is not repeated. Returns
        ``"<pair>:<model>"`` for each load.
        """
        wanted = sorted({n for n, e in self.catalog.entries.items() if e.loaded} | set(self.settings.preload_models))
        generations = dict(self._load_generation)
        report = await self.health()
        loaded: list[str] = []
        for pair in self.pool.pairs:
            mine = [r for r in report if r["pair"] == pair.index]
            trouble = _pair_trouble(mine)
            if trouble:
                if pair.in_rotation:
                    await self.pool.take_out(pair, trouble)
                continue
            await self.pool.put_back(pair)
            await self.pool.set_capacity(pair, min(r["max_sessions"] for r in mine))
            for name in wanted:
                missing = [r["rank"] for r in mine if name not in r["models"]]
                key = (pair.index, name)
                if not missing or self._load_generation.get(key, 0) != generations.get(key, 0):
                    continue
                entry = self.catalog.get(name)
                if entry is None:
                    continue
                log.info("%s: party %s has no %s (restarted?): loading it again on both", pair,
                         " and ".join(map(str, missing)), name)
                pair.loaded.discard(name)
                try:
                    async with self.pool.session_on(pair):
                        await self._load(entry, pair)
                except CoordinatorError as exc:
                    log.warning("%s: could not load %s again: %s", pair, name, exc)
                    continue
                loaded.append(f"{pair.index}:{name}")
        self._record_pool()
        return loaded

    def _record_pool(self) -> None:
        self.metrics.pairs_in_rotation.set(self.pool.in_rotation)

    # -- models ----------------------------------------------------------------

    def serves(self, name: str) -> bool:
        """Whether a request may name this model: it is in the catalog (listed, or a preload), or the operator lets
        every checkpoint under model_dir be served (``serve_unlisted``). Nothing else is ever loaded on the parties."""
        if name not in self.catalog.entries:
            return False
        return self.settings.serve_unlisted or name in self.settings.preload_models or name in self.catalog.listed()

    def served_names(self) -> list[str]:
        """Every model a request may name, sorted."""
        return [n for n in self.catalog.names() if self.serves(n)]

    def model(self, name: str) -> ModelEntry:
        """The catalog entry of a model a request may name (``serves``); 404 for any other name."""
        if not self.serves(name):
            self.catalog.refresh()
        entry = self.catalog.get(name)
        if entry is None or not self.serves(name):
            raise UnknownModel(f"unknown model {name!r}; available: {', '.join(self.served_names()) or 'none'}")
        return entry

    async def ensure_loaded(self, entry: ModelEntry) -> None:
        """LoadModel on every pair in rotation that lacks it, each as a session of its own on that pair.

        A load takes a session slot on its pair, as a forward does; forwards of
        the model wait for it (``_load``'s lock). A pair where the
        load fails as unavailable leaves the rotation; the error is raised only
        when no pair has the model.
        """
        failure: CoordinatorError | None = None
        pairs = [p for p in self.pool.pairs if p.in_rotation] or self.pool.pairs
        for pair in pairs:
            if entry.name in pair.loaded:
                continue
            try:
                async with self.pool.session_on(pair):
                    await self._load(entry, pair)
            except PartyUnavailable as exc:
                await self.pool.take_out(pair, str(exc))
                failure = failure or exc
            except CoordinatorError as exc:
                failure = failure or exc
        if failure is not None and not any(entry.name in p.loaded for p in self.pool.pairs):
            raise failure

    async def _load(self, entry: ModelEntry, pair: PartyPair, force: bool = False) -> None:
        """LoadModel on both parties of ``pair`` (the caller holds a session slot on it); again with ``force``."""
        lock = self._load_locks.setdefault((pair.index, entry.name), asyncio.Lock())
        async with lock:
            if entry.name in pair.loaded and not force:
                return
            deadline = time.time() + self.settings.load_timeout_s
            req = control_pb2.LoadModelRequest(model=entry.name, session_id=uuid.uuid4().hex, deadline_unix_ms=_unix_ms(deadline))
            pair.loaded.discard(entry.name)
            replies = await both([p.load_model(req, self.settings.load_timeout_s) for p in pair.parties], peer_grace_s=self._peer_grace_s)
            shape = tuple(int(s) for s in replies[0].input_shape)
            if shape and shape != entry.input_shape:
                raise PartyFailed(f"party 0 loaded {entry.name} with input shape {shape}, arch.json says {entry.input_shape}")
            policies = {r.output_policy or "logits" for r in replies}
            if len(policies) != 1:
                raise PartyFailed(f"the parties loaded {entry.name} with different output policies: {sorted(policies)}")
            entry.precision_bits = int(replies[0].precision_bits) or 16
            entry.output_policy = policies.pop()
            entry.loaded = True
            pair.loaded.add(entry.name)
            key = (pair.index, entry.name)
            self._load_generation[key] = self._load_generation.get(key, 0) + 1
            log.info("model %s loaded on %s (precision %d bits, output %s)", entry.name, pair, entry.precision_bits, entry.output_policy)

    # -- requests --------------------------------------------------------------

    async def submit(self, item: PendingItem) -> ItemResult:
        """Queue one request and wait for its result, at most until its deadline."""
        if item.deadline <= time.time():
            raise BadRequest("the request's deadline has already expired")
        if self._waiting >= self.settings.queue_bound:
            self.metrics.errors.labels(QueueFull.kind).inc()
            raise QueueFull(f"queue full ({self._waiting} requests waiting); retry later", self.settings.retry_after_s)
        if item.request_id in self._in_flight_ids:
            raise DuplicateRequest(f"request id {item.request_id!r} is already in flight")
        self._in_flight_ids.add(item.request_id)
        self._waiting += 1
        self.metrics.queue_length.set(self._waiting)
        self._queue(item.model).put_nowait(item)
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), max(0.0, item.deadline - time.time()))
        except asyncio.TimeoutError:
            item.future.cancel()  # the worker skips it, or drops its result
            raise DeadlineExceeded("the deadline passed before the secure forward finished") from None
        finally:
            self._in_flight_ids.discard(item.request_id)

    def _queue(self, model: str) -> asyncio.Queue[PendingItem]:
        if model not in self._queues:
            self._queues[model] = asyncio.Queue()
            self._workers[model] = asyncio.create_task(self._worker(model), name=f"batcher-{model}")
        return self._queues[model]

    def _dequeued(self) -> None:
        self._waiting -= 1
        self.metrics.queue_length.set(self._waiting)

    async def _collect(self, q: asyncio.Queue[PendingItem], first: PendingItem) -> list[PendingItem]:
        """The first item plus whatever else waits, up to batch_size, waiting at most batch_wait_ms."""
        batch = [first]
        end = time.monotonic() + self.settings.batch_wait_ms / 1000
        while len(batch) < self.settings.batch_size:
            if not q.empty():
                batch.append(q.get_nowait())
                continue
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(q.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _worker(self, model: str) -> None:
        """Form batches of ``model``: each waits for a session slot on a pair, then runs as a task of its own,
        so that with several pairs (or sessions per pair) the next batch forms while this one runs."""
        q = self._queues[model]
        while True:
            first = await q.get()
            pair = await self.pool.acquire()
            try:
                batch = await self._collect(q, first)
            except BaseException:
                await self.pool.release(pair)
                raise
            for _ in batch:
                self._dequeued()
            live = [it for it in batch if not it.future.done()]
            now = time.time()
            for it in live:
                if it.deadline <= now:
                    it.fail(DeadlineExceeded("the deadline passed while the request was queued"))
            live = [it for it in live if not it.future.done()]
            if not live:
                await self.pool.release(pair)
                continue
            task = asyncio.create_task(self._run_on(model, live, pair), name=f"forward-{model}-pair{pair.index}")
            self._forwards_running.add(task)
            task.add_done_callback(self._forwards_running.discard)

    async def _run_on(self, model: str, batch: list[PendingItem], pair: PartyPair) -> None:
        """Run one batch on ``pair`` (whose slot the caller took) and give the slot back."""
        try:
            await self._run(model, batch, pair)
        except Exception as exc:  # noqa: BLE001 - every failure goes to its requests
            log.exception("secure forward of %s failed unexpectedly", model)
            for it in batch:
                it.fail(exc if isinstance(exc, CoordinatorError) else PartyFailed(f"secure forward failed: {exc}"))
        finally:
            await self.pool.release(pair)

    async def _run(self, model: str, batch: list[PendingItem], pair: PartyPair) -> None:
        """One secure forward on ``pair``; on INVALID_ARGUMENT or ALREADY_EXISTS (a replayed box) for a batch, each item
        alone so one bad share or replayed request fails only itself; when the pair is unavailable, it leaves the rotation and the batch goes once to another pair."""
        try:
            await self._forward_with_reload(model, batch, pair)
        except (BadRequest, DuplicateRequest) as exc:  # a party refused an item before computing anything
            if len(batch) == 1:
                batch[0].fail(exc)
                return
            log.info("party rejected a batch of %d (%s); retrying item by item", len(batch), exc.kind)
            for it in batch:
                try:
                    await self._forward_with_reload(model, [it], pair)
                except CoordinatorError as item_exc:
                    it.fail(item_exc)
        except PartyUnavailable as exc:
            await self.pool.take_out(pair, str(exc))
            self._record_pool()
            if self.pool.has_other(pair) and min(it.deadline for it in batch) > time.time():
                log.info("%s is unavailable; the batch of %d goes to another pair", pair, len(batch))
                try:
                    async with self.pool.session(exclude=[pair]) as other:
                        await self._forward_with_reload(model, batch, other)
                    return
                except CoordinatorError as retry_exc:
                    exc = retry_exc  # type: ignore[assignment]
            if isinstance(exc, PartyUnavailable) and not self.pool.has_other(pair):
                self.public_keys = [None, None]  # a restarted party may bring a new key
            for it in batch:
                it.fail(exc)
        except CoordinatorError as exc:
            for it in batch:
                it.fail(exc)

    async def _forward_with_reload(self, model: str, batch: list[PendingItem], pair: PartyPair) -> None:
        entry = self.model(model)
        await self._load(entry, pair)
        try:
            await self._forward(entry, batch, pair)
        except ModelNotLoaded:
            log.info("a party of %s lost model %s; loading it again", pair, model)
            await self._load(entry, pair, force=True)
            await self._forward(entry, batch, pair)
        except MaterialMismatch as exc:  # both parties aborted before computing on it; a new ticket names fresh material
            log.warning("%s: the parties' dealer material did not match (%s); retrying once on fresh material", pair, exc)
            self.material_mismatches += 1
            self.metrics.material_mismatches.labels(model).inc()
            # past the numbers either party may hold (or have fetched) ahead: both dropped theirs, and a name one
            # of them was already handed would be refused
            series = self._series(entry, pair, len(batch))
            self._tickets[series] = self._tickets.get(series, 0) + TICKETS_SKIPPED_AFTER_MISMATCH
            await self._forward(entry, batch, pair)

    def _series(self, entry: ModelEntry, pair: PartyPair, batch_size: int) -> str:
        """A ticket series: this coordinator's start, the pair, the batch size, the model (the parties fetch its next
        batches ahead)."""
        return f"{self._epoch}.{pair.index}.{batch_size}.{entry.name}"

    async def _forward(self, entry: ModelEntry, batch: list[PendingItem], pair: PartyPair) -> None:
        deadline = min(it.deadline for it in batch)
        session_id = uuid.uuid4().hex
        series = self._series(entry, pair, len(batch))
        number = self._tickets.get(series, 0)
        self._tickets[series] = number + 1
        requests = [
            control_pb2.InferRequest(
                session_id=session_id, model=entry.name, deadline_unix_ms=_unix_ms(deadline),
                items=[it.to_proto(rank) for it in batch], batch_series=series, batch_number=number,
            )
            for rank in (0, 1)
        ]
        started = time.monotonic()
        timeout = deadline - time.time()
        replies = await both([p.infer(r, timeout) for p, r in zip(pair.parties, requests)], peer_grace_s=self._peer_grace_s)
        seconds = time.monotonic() - started
        for rank, reply in enumerate(replies):
            if len(reply.output_shares) != len(batch):
                raise PartyFailed(f"party {rank} returned {len(reply.output_shares)} output shares for {len(batch)} items")
        policies = {r.output_policy or "logits" for r in replies}
        if len(policies) != 1:
            raise PartyFailed(f"the parties answered under different output policies: {sorted(policies)}")
        policy = policies.pop()
        costs = ForwardCosts((PartyCosts.from_proto(replies[0].costs), PartyCosts.from_proto(replies[1].costs)), seconds)
        bits = int(replies[0].precision_bits) or entry.precision_bits
        self._record(entry, costs, len(batch))
        for i, it in enumerate(batch):
            if it.future.done():
                continue
            shares = (_sealed_from_proto(replies[0].output_shares[i]), _sealed_from_proto(replies[1].output_shares[i]))
            queue_seconds = started - it.enqueued
            it.future.set_result(ItemResult(shares, costs, queue_seconds, len(batch), session_id, bits, policy))

    def _record(self, entry: ModelEntry, costs: ForwardCosts, batch_size: int) -> None:
        self.forwards += 1
        m = self.metrics
        m.forwards.labels(entry.name).inc()
        m.batch_size.labels(entry.name).observe(batch_size)
        m.rounds.labels(entry.name).inc(costs.rounds)
        m.bytes.labels(entry.name).inc(costs.bytes)
        m.forward_seconds.labels(entry.name).observe(costs.seconds)
        if batch_size == 1:
            entry.measured = {"rounds": costs.rounds, "bytes": costs.bytes, "seconds": costs.seconds}
