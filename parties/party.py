"""The party process: serves ``PartyControl`` (control.proto) and runs the secure computation.

``mpcvit party --rank R --listen HOST:PORT --peer HOST:PORT --dealer HOST:PORT
--certs DIR --models DIR [--insecure]`` (or ``python -m parties``).

Per control call (the coordinator calls both parties with the same session id):

* ``LoadModel``: party 0 reads the checkpoint ``<models>/<name>``
  (``mpcvit.checkpoint.load_checkpoint``), draws the load's 128-bit id from
  its cryptographic PRG and sends party 1 the architecture spec, the id and
  the model's output policy (``mpcvit.output_policy``: the checkpoint's
  meta.json ``"output_policy"``, default ``logits``; JSON, one message); the id names the load's weight masks at the dealer,
  which hands each party its key of an id once, ever, so nothing the
  coordinator sends (its session id included) chooses or repeats a mask.
  Both build ``protocols.runtime.SecureViT.share``:
  party 0's weights are secret-shared once and cached as shares until the next
  LoadModel of that name; the dealer's randomness plan for batch size 1 is
  recorded in a local dry run that sends nothing to the peer
  (``protocols.planning``).
* ``Infer``: each party refuses a request id or client key it has seen
  within the replay window (:class:`ReplayGuard`), opens its sealed input
  shares (``mpcvit.sealing.open_tensor``, bound to request id, model, its rank
  and the input direction) and reserves their ids, takes the batch's 256-bit key and its dealer
  material (corrections on party 0, DCF keys on both) -- the offline phase --
  fetched ahead of time under the coordinator's ticket when it could be
  (:class:`SessionBatches`), else from the dealer now with the session id as
  the batch id; runs ``SecureViT.forward_shares`` over the gRPC communicator and seals its
  logit share for each client (``seal_tensor``, bound to the output direction), or under a
  ``label`` / ``topk:K`` policy only its share of the class indices (``protocols.argmax``).
* ``Health`` also answers the party's sealing public key with its TLS
  certificate and its signature over the key (``mpcvit.pki.sign_party_key``),
  so that clients can check the key against the CA instead of trusting the
  coordinator that relays it.

A party runs up to ``--sessions N`` sessions at once, one thread each: each
thread's CrypTen has its own communicator (the session's channel) and its own
zero-sharing PRGs (``parties.communicator.installed``), and draws from its
own dealer batch (the provider keeps batches per thread); the models' shares
are only read. N defaults to what the host affords (:func:`default_sessions`:
cores and memory) and is reported in Health, so the coordinator sends a pair
no more than the smaller of its two parties' N. A session waits for a free
slot at most until the call's deadline. Every
session agrees fresh 256-bit keys for CrypTen's zero-sharing PRGs with the
peer over the mutually authenticated channel (``install``), so a
failed session never poisons the next. A failure (bad input, dead peer,
deadline) aborts the session on both sides and answers a gRPC status; the
process keeps serving. A control call that ends before its session does (the
coordinator cancelled it because the other party failed, or the coordinator
itself died) aborts that session here and at the peer at once
(:meth:`Party.call_ended`), so neither party holds its session lock until the
deadline for a forward nobody waits for.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import logging
import os
import queue
import re
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import grpc
import torch

from mpcvit import pki, sealing
from mpcvit.prg import KEY_BYTES, new_key
from mpcvit.checkpoint import load_checkpoint
from mpcvit.models.spec import ArchSpec
from mpcvit.output_policy import OutputPolicy, PolicyError
from parties.communicator import GrpcCommunicator, MaterialMismatch, installed
from parties.dealer import DealerClient, DealerSeed
from parties.proto import control_pb2, control_pb2_grpc
from parties.tls import channel_credentials, peer_role, server_credentials
from parties.transport import NETWORKS, Endpoint, Mode, NetworkShape, TransportError
from protocols.accounting import CostReport, ensure_counting
from protocols.crypten_compat import current_communicator
from protocols.config import DEFAULT_CONFIG
from protocols.providers import MODEL_ID_BITS, DealerProvider, Request, install_provider, needs_corrections
from protocols.runtime import SecureViT

logger = logging.getLogger(__name__)

HEALTH_PROBE_S = 2.0  # how long Health waits for each of the peer and the dealer (the coordinator allows 5 s)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_BATCH = 64
KEY_FILE = "party{rank}.x25519"
COORDINATOR_ROLE = "coordinator"
REPLAY_WINDOW_S = 24 * 3600.0
REPLAY_MAX_ENTRIES = 200_000
ENDED_CALLS_KEPT = 1024  # session ids whose control call ended before their session opened
PREFETCH_DEPTH = 2  # dealer batches fetched ahead per series (model and batch size)
PREFETCH_KEPT = 8  # most batches held ahead in all
PREFETCH_TTL_S = 300.0  # a batch held ahead this long without its forward is dropped (the dealer keeps 600 s)
PREFETCH_BYTES = 1 << 30  # most dealer material held ahead in all (a 7_4_32 forward of 4 images is 0.7 GB on party 0)
MODEL_LOADS_KEPT = 16  # replaced model loads whose dealer id a party keeps for forwards still running on them
MAX_SESSIONS = 16  # the most sessions a party runs at once (the transport keeps 64 sessions open at most)
SESSION_MEMORY_BYTES = 2 << 30  # a session's budget: activations and one batch's dealer material at ViT-Lite scale


def default_sessions(cpus: int | None = None, memory_bytes: int | None = None) -> int:
    """Sessions a party runs at once by default: two per core (a WAN forward mostly waits for the network),
    at most one per ``SESSION_MEMORY_BYTES`` of physical memory, 1 to 8."""
    cpus = cpus if cpus is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory_bytes = SESSION_MEMORY_BYTES
    return max(1, min(8, 2 * cpus, memory_bytes // SESSION_MEMORY_BYTES))


class PartyError(Exception):
    """A control request that fails with a gRPC status (the process goes on)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PartyConfig:
    rank: int
    listen: str
    peer: str
    dealer: str
    models_dir: Path
    certs_dir: Path | None  # None: plaintext gRPC everywhere (--insecure)
    mode: Mode = "stream"
    shape: NetworkShape = field(default_factory=NetworkShape)
    max_sessions: int = 1  # sessions run at once (threads); the command line defaults to default_sessions()
    dealer_shape: NetworkShape = field(default_factory=NetworkShape)  # the emulated link from the dealer
    prefetch: bool = True  # fetch the next batches' dealer material ahead (False: each at its request, a cold start)


@dataclass
class LoadedModel:
    name: str
    spec: ArchSpec
    secure: SecureViT


@dataclass
class Counters:
    sessions_ok: int = 0
    sessions_failed: int = 0
    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0


class ModelLost(PartyError):
    """A loaded model's weight masks can no longer be served (the dealer lost its master secret)."""


@dataclass
class Fetched:
    """One dealer batch as a party holds it: its key and ids, its corrections (or None), and what fetching it cost."""

    seed: DealerSeed  # key, dealer id (its weight masks must be the model's), commitment, dealer instance
    corrections: list[torch.Tensor] | None
    nbytes: int
    seconds: float  # how long the fetch took, wherever it ran


@dataclass
class FetchReport:
    """What a session's dealer batch cost: bytes, the wait within the session, the fetch's own time, ahead or not."""

    nbytes: int = 0
    waited_s: float = 0.0
    fetch_s: float = 0.0
    prefetched: bool = False


class _BackgroundWorker:
    """One daemon thread running submitted calls in order (``submit`` gives a ``concurrent.futures.Future``).

    Unlike a ``ThreadPoolExecutor``, whose threads the interpreter joins at
    exit, a call stuck on an unreachable dealer never keeps the party process
    from exiting.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[futures.Future[Any], Any, tuple[Any, ...]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, fn: Any, *args: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Stop after the call running now (queued ones are dropped: their futures are cancelled)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self._jobs.put(None)


def _plan_digest(requests: list[Request]) -> str:
    """Both parties plan the same forward (data-oblivious), so they name the same batch with this digest."""
    return hashlib.sha256(repr(requests).encode()).hexdigest()[:16]


class SessionBatches:
    """``protocols.providers.BatchSource`` over the gRPC dealer, keeping the next batches of a series ready.

    A session's dealer batch is named by the coordinator's ticket (series,
    number) and the digest of the forward's plan: ``"<series hash>#<number>/<plan
    digest>"``; both parties compute the same name without a message. Without
    a ticket it is the session id, fetched when the forward needs it. With
    one, the first forward of a series fetches its batch itself, and every
    forward then queues fetches of the next ``depth`` numbers of its series
    with its plan, in a background thread (one fetch at a time, at most
    ``kept`` batches and ``max_bytes`` of material held in all; what does
    not fit is fetched by its own forward; one unused for ``PREFETCH_TTL_S``
    is dropped), so that the next
    forward of that model and batch size finds its material ready. A held
    batch whose plan no longer matches (the model was loaded again) is
    dropped, and its session fetches under its own plan's name, which the
    dealer has not handed out. The dealer hands each party's key out once per
    name, so a ticket used twice fails its session instead of reusing
    randomness.

    Every batch and model key comes with the dealer's commitment, which
    ``next_batch`` and ``model_key`` arm on the session's communicator: the
    forward's (or load's) first exchange carries it and both parties abort
    if they hold different material (``MaterialMismatch``), e.g. a batch one
    party fetched ahead from a dealer process that has restarted since.
    Batches held ahead from a dealer instance other than the newest one seen
    are dropped, and so is everything held after a mismatch.

    Per-session state (the batch name, the deadline, the fetch report) belongs
    to the calling thread, so concurrent sessions each use their own batch.
    """

    def __init__(self, dealer: DealerClient, depth: int = PREFETCH_DEPTH, kept: int = PREFETCH_KEPT,
                 max_bytes: int = PREFETCH_BYTES) -> None:
        self.dealer = dealer
        self.depth = depth
        self.kept = kept
        self.max_bytes = max_bytes
        self._local = threading.local()  # ticket, session id, deadline and fetch report of this thread's session
        self.model_dealer: dict[int, bytes | None] = {}  # model load id -> the dealer id its weight masks came from
        self._instance: bytes | None = None  # the newest dealer instance a fetch saw
        self._ended_models: list[int] = []  # replaced loads whose dealer id is still kept (end_model)
        self._lock = threading.Lock()
        # batch name -> (its fetch, its bytes, when it was queued)
        self._ahead: collections.OrderedDict[str, tuple[futures.Future[Fetched], int, float]] = collections.OrderedDict()
        self._scheduled: collections.OrderedDict[str, int] = collections.OrderedDict()  # series -> highest number queued
        self._pool = _BackgroundWorker("prefetch") if depth > 0 else None

    # -- the calling thread's session -----------------------------------------------------
    def begin(self, session_id: str, deadline_s: float, series: str = "", number: int = 0) -> None:
        self._local.session = (session_id, deadline_s, series, number)
        self._local.report = FetchReport()

    def end(self) -> FetchReport:
        report = getattr(self._local, "report", None) or FetchReport()
        self._local.session = None
        self._local.report = None
        return report

    @property
    def deadline_s(self) -> float | None:
        session = getattr(self._local, "session", None)
        return session[1] if session else None

    def _timeout(self) -> float:
        """Seconds a dealer call may take: the session's time left (at most the client's own timeout)."""
        if self.deadline_s is None:
            return self.dealer.timeout_s
        left = self.deadline_s - time.time()
        if left <= 0:
            raise PartyError(grpc.StatusCode.DEADLINE_EXCEEDED, "the session's deadline passed before the dealer answered")
        return min(left, self.dealer.timeout_s)

    @staticmethod
    def _name(series: str, number: int, digest: str) -> str:
        return f"{hashlib.sha256(series.encode()).hexdigest()[:24]}#{number}/{digest}"

    # -- fetching ---------------------------------------------------------------------------
    def _fetch(self, batch_id: str, requests: list[Request], timeout: float) -> Fetched:
        t0 = time.perf_counter()
        try:
            seed, corrections = self.dealer.fetch_batch(batch_id, requests, timeout=timeout)
        except grpc.RpcError as exc:
            raise PartyError(grpc.StatusCode.UNAVAILABLE, f"dealer: {exc.code().name}: {exc.details()}") from exc
        self._saw(seed.instance)
        nbytes = len(seed.key) + sum(int(c.nelement()) * 8 for c in corrections or ())
        return Fetched(seed, corrections, nbytes, time.perf_counter() - t0)

    def _saw(self, instance: bytes) -> None:
        """A fetch met dealer ``instance``: batches held ahead from an earlier instance are stale."""
        with self._lock:
            if instance != self._instance:
                self._instance = instance
                for name, (fetch, _, _) in list(self._ahead.items()):
                    if fetch.done() and not fetch.cancelled() and fetch.exception() is None and fetch.result().seed.instance != instance:
                        del self._ahead[name]

    def drop_ahead(self) -> int:
        """Forget every batch held ahead (after a mismatch: they may come from a dealer that is gone); how many."""
        with self._lock:
            dropped = len(self._ahead)
            for fetch, _, _ in self._ahead.values():
                fetch.cancel()
            self._ahead.clear()
            return dropped

    def _take(self, batch_id: str) -> futures.Future[Fetched] | None:
        with self._lock:
            held = self._ahead.pop(batch_id, None)
            return held[0] if held is not None else None

    def _prefetch(self, series: str, number: int, requests: list[Request], digest: str) -> None:
        """Queue fetches of the next ``depth`` numbers of ``series`` under ``requests``' plan (``digest``), within the bounds."""
        if self._pool is None:
            return
        size = KEY_BYTES + (sum(r.correction_bytes(self.dealer.rank) for r in requests) if needs_corrections(self.dealer.rank, requests) else 0)
        with self._lock:
            now = time.monotonic()
            for name, (fetch, _, made) in list(self._ahead.items()):  # never used (the coordinator restarted, the model left)
                if now - made > PREFETCH_TTL_S:
                    del self._ahead[name]
                    fetch.cancel()
            first = max(number + 1, self._scheduled.get(series, -1) + 1)
            held = sum(b for _, b, _ in self._ahead.values())
            for n in range(first, number + self.depth + 1):
                if len(self._ahead) >= self.kept or held + size > self.max_bytes:
                    break  # that one is fetched by its own forward
                name = self._name(series, n, digest)
                self._ahead[name] = (self._pool.submit(self._fetch, name, list(requests), self.dealer.timeout_s), size, now)
                held += size
                self._scheduled[series] = n
                self._scheduled.move_to_end(series)
            while len(self._scheduled) > 4 * self.kept:
                self._scheduled.popitem(last=False)

    def next_batch(self, rank: int, requests: list[Request]) -> tuple[bytes, list[torch.Tensor] | None]:
        session = getattr(self._local, "session", None)
        if session is None:
            raise RuntimeError("no session is running")
        session_id, _, series, number = session
        t0 = time.perf_counter()
        fetched = None
        digest = _plan_digest(requests) if series else ""
        if series:
            batch_id = self._name(series, number, digest)
            ahead = self._take(batch_id)
            if ahead is not None:
                try:
                    fetched = ahead.result(timeout=self._timeout())
                except futures.CancelledError:
                    fetched = None
                except futures.TimeoutError:
                    raise PartyError(grpc.StatusCode.DEADLINE_EXCEEDED, "the session's deadline passed while its dealer batch was fetched") from None
                except PartyError as exc:
                    logger.warning("fetching a batch ahead failed (%s); the session fetches it now", exc)
                if fetched is not None and self._instance is not None and fetched.seed.instance != self._instance:
                    logger.warning("a batch held ahead came from a dealer instance that has since restarted; fetching it now")
                    fetched = None
        else:
            batch_id = session_id
        report = self._local.report
        report.prefetched = fetched is not None
        if fetched is None:
            fetched = self._fetch(batch_id, requests, self._timeout())
        report.nbytes, report.fetch_s, report.waited_s = fetched.nbytes, fetched.seconds, time.perf_counter() - t0
        if series:
            self._prefetch(series, number, requests, digest)
        for model_id in {dict(r.kwargs)["model"] for r in requests if r.kind == "fixed"}:
            if self.model_dealer.get(model_id) != fetched.seed.dealer_id:
                raise ModelLost(grpc.StatusCode.FAILED_PRECONDITION, "the dealer restarted without its state (--state): "
                                "this model's weight masks are lost; it is being unloaded, load it again")
        self._arm(fetched.seed.commitment, "dealer batches")
        return fetched.seed.key, fetched.corrections

    def _arm(self, commitment: bytes, what: str) -> None:
        """Have this thread's session check ``commitment`` with the peer on its next exchange (``arm_check``).

        Outside a session (a unit test driving the batches alone) there is no
        peer to check with: the commitment is only kept (``last_commitment``).
        """
        self._local.commitment = commitment
        comm = current_communicator()
        if isinstance(comm, GrpcCommunicator):
            comm.arm_check(commitment, what)

    @property
    def last_commitment(self) -> bytes | None:
        """The commitment of this thread's last batch or model key."""
        return getattr(self._local, "commitment", None)

    def model_key(self, rank: int, model_id: int) -> bytes:
        """This party's key of a model load's fixed weight masks (the dealer keeps both for later batches); the
        load's commitment is armed on the session, so the opening of the masked weights checks it."""
        try:
            seed = self.dealer.get_model_key(model_id, timeout=self._timeout())
        except grpc.RpcError as exc:
            raise PartyError(grpc.StatusCode.UNAVAILABLE, f"dealer: {exc.code().name}: {exc.details()}") from exc
        self._saw(seed.instance)
        self.model_dealer[model_id] = seed.dealer_id
        self._arm(seed.commitment, "weight-mask keys for this model load")
        return seed.key

    def end_model(self, model_id: int) -> None:
        """A load was replaced: forget its dealer id, once no forward started on it can still ask (the last
        ``MODEL_LOADS_KEPT`` replaced loads are kept for those)."""
        with self._lock:
            self._ended_models.append(model_id)
            while len(self._ended_models) > MODEL_LOADS_KEPT:
                self.model_dealer.pop(self._ended_models.pop(0), None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def load_keypair(certs_dir: Path | None, rank: int) -> sealing.KeyPair:
    """This party's long-term X25519 key: ``<certs>/party<R>.x25519`` (32 raw bytes, mode 0600) if present, else a new one."""
    if certs_dir is not None:
        path = pki.role_dir(certs_dir, pki.party_role(rank)) / KEY_FILE.format(rank=rank)
        if path.is_file():
            private = pki.read_private(path)
            if len(private) != 32:
                raise ValueError(f"{path} must hold 32 raw bytes")
            return sealing.KeyPair(private=private, public=sealing.public_from_private(private))
    return sealing.generate_keypair()


def key_proof(certs_dir: Path | None, rank: int, public_key: bytes) -> tuple[bytes, bytes]:
    """``(certificate PEM, signature)`` binding ``public_key`` to this party; empty without TLS."""
    if certs_dir is None:
        return b"", b""
    role = pki.party_role(rank)
    directory = pki.role_dir(certs_dir, role)
    tls_key = pki.load_key(directory / f"{role}.key")
    return (directory / f"{role}.pem").read_bytes(), pki.sign_party_key(tls_key, rank, public_key)


class ReplayGuard:
    """Request ids and client keys seen within ``window_s`` (at most ``max_entries`` of each); repeats are refused.

    A client makes a fresh request id and a fresh one-time key for every
    request, so a repeat of either is a replayed box. A forward first opens
    every box of its batch, then *reserves* their ids (refused if seen, or
    held by a running forward), and *commits* them only once the forward has
    computed its answer; a forward that fails (a batch-mate's box did not
    open at the peer, the peer died, a material mismatch) *releases* them, so
    the coordinator's retry of an innocent request is not taken for a replay.
    A box is therefore answered at most once per window; it may be computed
    again only when no answer came out of it. Entries older than the window
    (or beyond ``max_entries``, oldest first) are forgotten, and so is
    everything when the party restarts: that is the window in which a replay
    is refused.
    """

    def __init__(self, window_s: float = REPLAY_WINDOW_S, max_entries: int = REPLAY_MAX_ENTRIES) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: dict[str, collections.OrderedDict[bytes, float]] = {"request id": collections.OrderedDict(), "client key": collections.OrderedDict()}
        self._pending: dict[str, set[bytes]] = {kind: set() for kind in self._seen}
        self._lock = threading.Lock()

    @staticmethod
    def _values(request_id: str, client_key: bytes) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
        return ("request id", request_id.encode()), ("client key", bytes(client_key))

    def _expire(self, now: float) -> None:
        for seen in self._seen.values():
            while seen and (len(seen) > self.max_entries or now - next(iter(seen.values())) > self.window_s):
                seen.popitem(last=False)

    def check(self, items: list[tuple[str, bytes]]) -> None:
        """Raise ``PartyError`` if any (request id, client key) repeats one seen or held, or another in ``items``."""
        with self._lock:
            self._check(items)

    def _check(self, items: list[tuple[str, bytes]]) -> None:
        self._expire(time.monotonic())
        fresh: dict[str, set[bytes]] = {kind: set() for kind in self._seen}
        for request_id, client_key in items:
            for kind, value in self._values(request_id, client_key):
                if value in self._seen[kind] or value in fresh[kind]:
                    raise PartyError(grpc.StatusCode.ALREADY_EXISTS,
                                     f"{request_id}: replayed box: this {kind} was already used; nothing was computed")
                if value in self._pending[kind]:
                    raise PartyError(grpc.StatusCode.UNAVAILABLE,
                                     f"{request_id}: this {kind} is in a forward running now; nothing was computed, retry")
                fresh[kind].add(value)

    def reserve(self, items: list[tuple[str, bytes]]) -> None:
        """Check ``items`` and hold them for a running forward (``commit`` or ``release`` ends the hold)."""
        with self._lock:
            self._check(items)
            for request_id, client_key in items:
                for kind, value in self._values(request_id, client_key):
                    self._pending[kind].add(value)

    def release(self, items: list[tuple[str, bytes]]) -> None:
        """The forward failed: its boxes were not answered and may be sent again."""
        with self._lock:
            for request_id, client_key in items:
                for kind, value in self._values(request_id, client_key):
                    self._pending[kind].discard(value)

    def commit(self, items: list[tuple[str, bytes]]) -> None:
        """The forward answered: its boxes are used."""
        with self._lock:
            now = time.monotonic()
            for request_id, client_key in items:
                for kind, value in self._values(request_id, client_key):
                    self._pending[kind].discard(value)
                    self._seen[kind][value] = now
            self._expire(now)


def costs_message(report: CostReport) -> control_pb2.Costs:
    return control_pb2.Costs(
        rounds=int(report.rounds),
        bytes_sent=int(report.bytes_sent),
        bytes_received=int(report.bytes_received),
        seconds=report.seconds,
        ops=[
            # OpCost.bytes is CrypTen's per-party count (sent + received); every op of the runtime is symmetric
            control_pb2.OpCost(op=name, rounds=int(c.rounds), bytes_sent=int(c.bytes) // 2, bytes_received=int(c.bytes) - int(c.bytes) // 2,
                               seconds=c.seconds)
            for name, c in report.per_op.items()
        ],
    )


class Party:
    """One party: its transport endpoint, dealer client, key pair and loaded models."""

    def __init__(self, config: PartyConfig) -> None:
        if config.rank not in (0, 1):
            raise ValueError("rank must be 0 or 1")
        if not 1 <= config.max_sessions <= MAX_SESSIONS:
            raise ValueError(f"max_sessions must be 1..{MAX_SESSIONS}, got {config.max_sessions}")
        self.config = config
        self.rank = config.rank
        role = f"party{config.rank}"
        certs = config.certs_dir
        self.endpoint = Endpoint(
            config.rank,
            config.listen,
            config.peer,
            server_credentials=server_credentials(certs, role) if certs else None,
            channel_credentials=channel_credentials(certs, role) if certs else None,
            mode=config.mode,
            shape=config.shape,
            register=lambda server: control_pb2_grpc.add_PartyControlServicer_to_server(PartyControlServicer(self), server),
        )
        self.dealer = DealerClient(config.dealer, config.rank, str(certs) if certs else None, shape=config.dealer_shape)
        self.batches = SessionBatches(self.dealer, depth=PREFETCH_DEPTH if config.prefetch else 0)
        self.provider = DealerProvider(config.rank)
        install_provider(self.provider)
        self.keys = load_keypair(certs, config.rank)
        self.certificate, self.key_signature = key_proof(certs, config.rank, self.keys.public)
        self.replays = ReplayGuard()
        logger.info("party %d sealing key %s (%s)", config.rank, pki.key_fingerprint(self.keys.public),
                    "signed with the party's certificate key" if certs else "unsigned: no TLS")
        self.models: dict[str, LoadedModel] = {}
        self.counters = Counters()
        self._counters_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.max_sessions)
        self._local = threading.local()  # the fetch report of this thread's last session
        self._calls_lock = threading.Lock()
        self._running: dict[str, Any] = {}  # session id -> its open transport session
        self._ended: collections.OrderedDict[str, str] = collections.OrderedDict()  # session id -> why its call ended

    # -- sessions --------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self, session_id: str, deadline_unix_ms: int, series: str = "", number: int = 0) -> Iterator[GrpcCommunicator]:
        """Run one session: wait for the party (until the deadline), open the transport, install CrypTen's comm."""
        remaining = deadline_unix_ms / 1000.0 - time.time()
        if remaining <= 0:
            raise PartyError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline has already passed")
        if not self._slots.acquire(timeout=remaining):
            raise PartyError(grpc.StatusCode.DEADLINE_EXCEEDED,
                             f"the party was busy with {self.config.max_sessions} other session(s) until the deadline")
        try:
            with self.endpoint.session(session_id, deadline_unix_ms=deadline_unix_ms) as session:
                ok = False
                with self._calls_lock:
                    ended = self._ended.pop(session_id, None)
                    if ended is None:
                        self._running[session_id] = session
                if ended is not None:  # its caller is gone: do not start a forward nobody waits for
                    session.abort(ended)
                    raise PartyError(grpc.StatusCode.CANCELLED, f"session {session_id}: {ended}")
                try:
                    with installed(GrpcCommunicator(session)) as comm:
                        ensure_counting()
                        self.batches.begin(session_id, deadline_unix_ms / 1000.0, series, number)
                        yield comm
                    ok = True
                except BaseException as exc:
                    session.abort(f"{type(exc).__name__}")
                    raise
                finally:
                    with self._calls_lock:
                        self._running.pop(session_id, None)
                    self._local.fetch = self.batches.end()
                    if not ok:
                        with contextlib.suppress(RuntimeError):
                            self.provider.end_batch()  # drop a half-used batch
                    self._count(ok, session)
        finally:
            self._slots.release()

    def call_ended(self, session_id: str, reason: str) -> None:
        """The control call of ``session_id`` ended before it answered: abort its session here and at the peer.

        A session still waiting for the party is refused when its turn comes (the last
        ``ENDED_CALLS_KEPT`` such ids are remembered).
        """
        with self._calls_lock:
            session = self._running.get(session_id)
            if session is None:
                self._ended[session_id] = reason
                while len(self._ended) > ENDED_CALLS_KEPT:
                    self._ended.popitem(last=False)
        if session is not None:
            logger.warning("session %s: %s; aborting it", session_id, reason)
            session.abort(reason)

    def _count(self, ok: bool, session: Any) -> None:
        with self._counters_lock:
            if ok:
                self.counters.sessions_ok += 1
            else:
                self.counters.sessions_failed += 1
            self.counters.bytes_sent += session.bytes_sent
            self.counters.bytes_received += session.bytes_received

    # -- the control operations (plain functions of the request) --------------------------
    def health(self) -> control_pb2.HealthReply:
        # A first probe includes the TLS handshake of a lazily connected channel: allow it a few seconds on a busy host.
        return control_pb2.HealthReply(
            rank=self.rank,
            peer_reachable=self.endpoint.peer_reachable(HEALTH_PROBE_S),
            dealer_reachable=self.dealer.reachable(HEALTH_PROBE_S),
            models=sorted(self.models),
            public_key=self.keys.public,
            certificate=self.certificate,
            key_signature=self.key_signature,
            max_sessions=self.config.max_sessions,
        )

    def load_model(self, name: str, session_id: str, deadline_unix_ms: int) -> control_pb2.LoadModelReply:
        model = meta = None
        try:
            if not MODEL_NAME.match(name):
                raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, f"bad model name {name!r}")
            if self.rank == 0 and not (self.config.models_dir / name).is_dir():
                raise PartyError(grpc.StatusCode.NOT_FOUND, f"no model {name!r} in the model directory")
        except PartyError as exc:
            raise self._refuse(session_id, deadline_unix_ms, exc) from None
        policy = OutputPolicy()
        if self.rank == 0:
            model, meta = load_checkpoint(self.config.models_dir / name)
            try:  # the owner's output policy for this model: meta.json "output_policy" (default: logits)
                policy = OutputPolicy.parse(meta.get("output_policy"), model.spec.num_classes)
            except PolicyError as exc:
                raise self._refuse(session_id, deadline_unix_ms, PartyError(grpc.StatusCode.FAILED_PRECONDITION, f"{name}: {exc}")) from None
        with self._session(session_id, deadline_unix_ms) as comm:
            # party 0 tells party 1 the architecture and the load id (plain JSON, nothing pickled). The id is party 0's:
            # fresh from its cryptographic PRG, never derived from anything the coordinator sends (the session id).
            # The output policy rides along: party 1 enforces the owner's policy, and nothing the coordinator sends sets it.
            announced = comm.broadcast_obj({"spec": model.spec.to_json(), "load_id": new_load_id(), "output_policy": str(policy)}
                                           if model is not None else None, 0)
            if self.rank == 1 and not isinstance(announced, dict):
                raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, "party 0 announced no architecture")
            spec = ArchSpec.from_json(announced["spec"]) if self.rank == 1 else model.spec
            model_id = parse_load_id(announced)
            if self.rank == 1:
                policy = parse_output_policy(announced, spec)
            t0 = time.perf_counter()
            rounds0 = comm.get_communication_stats()["rounds"]
            secure = SecureViT.share(model, spec, meta, owner=0, config=DEFAULT_CONFIG, batch_source=self.batches,
                                     model_id=model_id, output_policy=policy)
            comm.settle_check()
            rounds = int(comm.get_communication_stats()["rounds"] - rounds0)
            wire = comm.wire_stats()
        self._replace_model(name, LoadedModel(name, spec, secure))
        logger.info("loaded %s (%s, output %s) in %.1f s", name, spec.summary(), policy, time.perf_counter() - t0)
        return control_pb2.LoadModelReply(
            model=name,
            input_shape=list(spec.input_shape),
            num_classes=spec.num_classes,
            precision_bits=secure.precision_bits,
            costs=control_pb2.Costs(rounds=rounds, bytes_sent=wire["bytes_sent"], bytes_received=wire["bytes_received"],
                                    seconds=time.perf_counter() - t0),
            output_policy=str(policy),
        )

    def _replace_model(self, name: str, loaded: LoadedModel | None) -> None:
        """Serve ``loaded`` as ``name`` (None: unload it); the model it replaces gives its weight-mask key back."""
        old = self.models.pop(name, None) if loaded is None else self.models.get(name)
        if loaded is not None:
            self.models[name] = loaded
        if old is not None and old.secure.model_id is not None and (loaded is None or old.secure.model_id != loaded.secure.model_id):
            self.provider.end_model(old.secure.model_id)
            self.batches.end_model(old.secure.model_id)

    def _open_inputs(self, items: list[control_pb2.InferItem], model: str, spec: ArchSpec) -> tuple[torch.Tensor, list[tuple[str, bytes]]]:
        """Refuse replays, open every box in its context (request id, model, this rank, input), then reserve their ids
        (``ReplayGuard``: committed when the forward answers, released if it fails); nothing is computed before."""
        seen = [(item.request_id, bytes(item.client_public_key)) for item in items]
        self.replays.check(seen)
        shares = []
        for item in items:
            sealed = sealing.Sealed(tuple(item.input_share.shape), item.input_share.dtype, item.input_share.nonce, item.input_share.ciphertext)
            if sealed.shape != tuple(spec.input_shape):
                raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, f"{item.request_id}: input shape {sealed.shape}, model wants {spec.input_shape}")
            context = sealing.BoxContext(item.request_id, model, self.rank, "input")
            try:
                shares.append(sealing.open_tensor(sealed, self.keys.private, item.client_public_key, context))
            except sealing.SealError as exc:
                raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, f"{item.request_id}: {exc}") from exc
        self.replays.reserve(seen)
        return torch.stack(shares), seen

    def _refuse(self, session_id: str, deadline_unix_ms: int, error: PartyError) -> PartyError:
        """A call refused before its session opened: tell the peer at once, so it does not wait until the deadline.

        The peer may already be in (or about to enter) the same session, waiting for this party's messages
        while holding its session lock; an ABORT frame for that session id fails it there immediately (a
        restarted party that lost its model would otherwise stall the next request). Returns ``error``.
        """
        with contextlib.suppress(Exception):
            session = self.endpoint.session(session_id, deadline_unix_ms=deadline_unix_ms)
            try:
                session.abort(f"party {self.rank} refused the call: {error.code.name}")
            finally:
                session.close()
        return error

    def _check_infer(self, request: control_pb2.InferRequest) -> LoadedModel:
        loaded = self.models.get(request.model)
        if loaded is None:
            raise PartyError(grpc.StatusCode.FAILED_PRECONDITION, f"model {request.model!r} is not loaded")
        if not 1 <= len(request.items) <= MAX_BATCH:
            raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, f"a batch has 1..{MAX_BATCH} items")
        if len({item.request_id for item in request.items}) != len(request.items):
            raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, "request ids repeat within the batch")
        return loaded

    def infer(self, request: control_pb2.InferRequest) -> control_pb2.InferReply:
        try:
            loaded = self._check_infer(request)
        except PartyError as exc:
            raise self._refuse(request.session_id, request.deadline_unix_ms, exc) from None
        with self._session(request.session_id, request.deadline_unix_ms, request.batch_series, request.batch_number) as comm:
            x_share, seen = self._open_inputs(list(request.items), request.model, loaded.spec)  # inside: a bad input aborts the peer too
            try:
                logits_share, report = loaded.secure.forward_shares(x_share)
                comm.settle_check()  # the material check rode on the forward's first exchange; never skipped
            except BaseException as exc:
                self.replays.release(seen)
                if isinstance(exc, ModelLost) and self.models.get(request.model) is loaded:
                    self._replace_model(request.model, None)  # the coordinator's health watch loads it again on both parties
                elif isinstance(exc, MaterialMismatch):
                    logger.warning("%s; dropped %d batch(es) held ahead", exc, self.batches.drop_ahead())
                raise
            self.replays.commit(seen)
        costs = costs_message(report)
        fetch: FetchReport = self._local.fetch
        costs.dealer_bytes_received, costs.dealer_seconds = fetch.nbytes, fetch.waited_s
        costs.dealer_fetch_seconds, costs.dealer_prefetched = fetch.fetch_s, fetch.prefetched
        with self._counters_lock:
            self.counters.rounds += int(report.rounds)
            self.counters.seconds += report.seconds
        policy = loaded.secure.output_policy
        expect = (len(request.items), *policy.output_shape(loaded.spec.num_classes))
        if tuple(logits_share.shape) != expect:  # never seal more than the policy allows
            raise PartyError(grpc.StatusCode.INTERNAL, f"the forward returned {tuple(logits_share.shape)}, policy {policy} allows {expect}")
        outputs = []
        for item, share in zip(request.items, logits_share):
            context = sealing.BoxContext(item.request_id, request.model, self.rank, "output")
            sealed = sealing.seal_tensor(share.contiguous(), self.keys.private, item.client_public_key, context)
            outputs.append(control_pb2.SealedTensor(shape=list(sealed.shape), dtype=sealed.dtype, nonce=sealed.nonce, ciphertext=sealed.ciphertext))
        return control_pb2.InferReply(output_shares=outputs, costs=costs, precision_bits=loaded.secure.precision_bits,
                                      output_policy=str(policy))

    def stats(self) -> control_pb2.StatsReply:
        c = self.counters
        return control_pb2.StatsReply(
            sessions_ok=c.sessions_ok,
            sessions_failed=c.sessions_failed,
            totals=control_pb2.Costs(rounds=c.rounds, bytes_sent=c.bytes_sent, bytes_received=c.bytes_received, seconds=c.seconds),
        )

    def close(self) -> None:
        self.batches.close()
        self.endpoint.close()
        self.dealer.close()


def new_load_id() -> str:
    """A model load's id: 128 bits from the cryptographic PRG, as hex (party 0 draws it; JSON keeps it exact)."""
    return new_key()[: MODEL_ID_BITS // 8].hex()


def parse_load_id(announced: Any) -> int:
    """The load id party 0 announced with the spec (party 1 checks its form; party 0 reads back its own)."""
    text = announced.get("load_id") if isinstance(announced, dict) else None
    if not isinstance(text, str) or not re.fullmatch(f"[0-9a-f]{{{MODEL_ID_BITS // 4}}}", text):
        raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, f"party 0 announced no {MODEL_ID_BITS}-bit load id")
    return int(text, 16)


def parse_output_policy(announced: Any, spec: ArchSpec) -> OutputPolicy:
    """The output policy party 0 announced with the spec (absent: logits, as before policies existed)."""
    try:
        return OutputPolicy.parse(announced.get("output_policy"), spec.num_classes)
    except PolicyError as exc:
        raise PartyError(grpc.StatusCode.INVALID_ARGUMENT, f"party 0 announced a bad output policy: {exc}") from exc


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status that answers a failed control call."""
    if isinstance(exc, (PartyError, TransportError)):
        return exc.code, str(exc)
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, FileNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, grpc.RpcError):
        return grpc.StatusCode.UNAVAILABLE, f"dealer or peer: {exc.details()}"  # type: ignore[attr-defined]
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


class PartyControlServicer(control_pb2_grpc.PartyControlServicer):
    """Translates ``PartyControl`` calls to :class:`Party`; failures become gRPC statuses."""

    def __init__(self, party: Party) -> None:
        self.party = party

    def _call(self, context: grpc.ServicerContext, fn: Any, *args: Any) -> Any:
        role = peer_role(context)
        if role is not None and role != COORDINATOR_ROLE and fn != self.party.health:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{role} may not control this party (only {COORDINATOR_ROLE})")
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - every failure is answered, the process goes on
            code, message = _status(exc)
            if code == grpc.StatusCode.INTERNAL:
                logger.exception("control call failed")
            else:
                logger.warning("control call failed: %s: %s", code.name, message)
            context.abort(code, message)

    def Health(self, request: control_pb2.HealthRequest, context: grpc.ServicerContext) -> control_pb2.HealthReply:
        return self._call(context, self.party.health)

    def _session_call(self, context: grpc.ServicerContext, session_id: str, fn: Any, *args: Any) -> Any:
        """``_call`` for a call that runs a session: if the call ends before it answers, the session is aborted."""
        answered = threading.Event()

        def ended() -> None:
            if not answered.is_set():
                self.party.call_ended(session_id, "the coordinator's call ended (cancelled, or its deadline passed)")

        context.add_callback(ended)
        try:
            return self._call(context, fn, *args)
        finally:
            answered.set()

    def LoadModel(self, request: control_pb2.LoadModelRequest, context: grpc.ServicerContext) -> control_pb2.LoadModelReply:
        return self._session_call(context, request.session_id, self.party.load_model, request.model, request.session_id,
                                  request.deadline_unix_ms)

    def Infer(self, request: control_pb2.InferRequest, context: grpc.ServicerContext) -> control_pb2.InferReply:
        return self._session_call(context, request.session_id, self.party.infer, request)

    def Stats(self, request: control_pb2.StatsRequest, context: grpc.ServicerContext) -> control_pb2.StatsReply:
        return self._call(context, self.party.stats)


def serve(config: PartyConfig) -> Party:
    """Start a party: ``PartyControl`` and the peer transport, both on ``config.listen``."""
    party = Party(config)
    logger.info("party %d serving PartyControl and PeerTransport on port %d (%s)", config.rank, party.endpoint.port,
                "mutual TLS" if config.certs_dir else "PLAINTEXT")
    return party


# -- command line --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rank", type=int, required=True, choices=(0, 1), help="0 = model owner, 1 = compute peer")
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on: PartyControl (coordinator) and PeerTransport (peer)")
    parser.add_argument("--peer", required=True, help="HOST:PORT of the other party")
    parser.add_argument("--dealer", required=True, help="HOST:PORT of the dealer")
    parser.add_argument("--certs", type=Path, help="directory made by 'mpcvit certs' (mutual TLS)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="directory of checkpoints (party 0)")
    parser.add_argument("--insecure", action="store_true", help="plaintext gRPC everywhere; loopback addresses only, for local experiments")
    parser.add_argument("--transport", choices=("stream", "unary"), default="stream", help="peer transport mode")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="none", help="emulate LAN or WAN on the peer link")
    parser.add_argument("--delay-ms", type=float, help="one-way delay of the emulated link (overrides --network)")
    parser.add_argument("--bandwidth-bps", type=float, help="bandwidth of the emulated link in bit/s (overrides --network)")
    parser.add_argument("--dealer-network", choices=sorted(NETWORKS), default="none",
                        help="emulate LAN or WAN on the link from the dealer (its material crosses it; for benchmarks)")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="fetch each batch's dealer material when its request arrives (a cold start) instead of "
                        "fetching the next batches' ahead")
    parser.add_argument("--sessions", type=int, default=None, metavar="N",
                        help=f"secure forwards run at once, one thread each (1..{MAX_SESSIONS}; default: two per core, "
                        f"at most one per {SESSION_MEMORY_BYTES >> 30} GiB of memory, at most 8: {default_sessions()} here). "
                        "Both parties report it in Health; the coordinator sends a pair at most the smaller of the two")


def config_from_args(args: argparse.Namespace) -> PartyConfig:
    if not args.insecure and not args.certs:
        raise ValueError("give --certs DIR for mutual TLS, or --insecure for plaintext")
    if args.insecure:
        pki.require_loopback("--insecure", {"--listen": args.listen, "--peer": args.peer, "--dealer": args.dealer})
    base = NETWORKS[args.network]
    shape = NetworkShape(
        delay_ms=base.delay_ms if args.delay_ms is None else args.delay_ms,
        bandwidth_bps=base.bandwidth_bps if args.bandwidth_bps is None else args.bandwidth_bps,
    )
    return PartyConfig(
        rank=args.rank,
        listen=args.listen,
        peer=args.peer,
        dealer=args.dealer,
        models_dir=args.models,
        certs_dir=None if args.insecure else args.certs,
        mode=args.transport,
        shape=shape,
        max_sessions=default_sessions() if args.sessions is None else args.sessions,
        dealer_shape=NETWORKS[args.dealer_network],
        prefetch=not args.no_prefetch,
    )


def run(args: argparse.Namespace) -> int:
    party = serve(config_from_args(args))
    try:
        party.endpoint.server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    finally:
        party.close()
    return 0
