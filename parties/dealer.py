"""The dealer process: correlated randomness with CrypTen's TTP semantics, no online rounds.

Server side (``python -m parties.dealer`` / ``mpcvit dealer``): for each
preprocessing batch (id agreed by both parties; the party process uses the
inference's session id) the dealer draws one fresh 256-bit key per party
from the OS (:class:`DealerState`; ``mpcvit.prg.new_key``, never reused).
``GetSeed`` hands party ``i`` its key; party 0's
``GetCorrections`` replays both keys' AES-256-CTR streams over the batch's request list with
``protocols.providers.dealer_corrections`` (the plain function, reusable
in-process) and streams back party 0's shares of the correlated values:
``c_0 = op(a_0 + a_1, b_0 + b_1) - c_1`` and the like. The batch is forgotten
once both keys and the corrections are out (or after ``ttl_s``); material
waiting for a rank that has not asked is bounded (``MAX_PENDING_BYTES``), and
freed heap pages go back to the system after each corrections call
(:func:`release_freed_memory`), so the dealer's memory stays bounded under load.

Client side (:class:`DealerClient`): ``get_key`` and ``get_corrections``;
:meth:`DealerClient.fetch_batch` gives what ``DealerProvider.begin_batch``
takes. A party calls it before the online phase of an inference: one request
per party per batch, never inside the secure computation, so the dealer adds
no online rounds; its bytes and seconds are counted apart (:class:`DealerTraffic`).

Model loads: ``GetSeed`` with batch id ``model/<id>`` hands party ``i`` its key
of that load's fixed weight masks (derived from the dealer's master secret,
``--state`` keeps it across restarts); every batch's ``fixed`` requests
(products with a weight whose mask was opened at load) are answered from
both derived keys. A load id is drawn by party 0 from its cryptographic PRG
(128 bits), never chosen by the coordinator, and the dealer hands each
rank's key of a load id out ONCE, ever: the ids it served are kept in
``<state>.loads`` beside the master secret, so a second load under an id it
served is refused, also after a restart (:class:`ServedLoads`). Two loads
therefore never share a weight mask, and no pair of openings D_A = W_A - b_A,
D_B = W_B - b_B can be combined to cancel one.

Commitments: every ``GetSeed`` reply carries a 16-byte commitment that both
parties receive identically only when they draw from the same material:
for a batch, a hash of this dealer process's instance id (fresh from the OS
at every start, so it changes whenever the in-memory batches are lost, even
when the master secret survives), the batch name, a fresh per-batch nonce and
both keys' hashes; for a model load, a PRF of the master secret and the load
id. The parties compare them on the first message of the forward or load
(``parties.communicator.GrpcCommunicator.arm_check``: no extra round) and
abort both sides before anything is computed on mismatched material.

With mutual TLS the dealer hands rank ``i``'s key and corrections only to the
client whose certificate says ``party{i}``. Party 1 asks for corrections only
when the plan has DCF keys (``protocols.sign``'s one-round comparisons),
whose correction words both parties need; the first of the two calls makes
both parties' material from one replay of the key streams.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import hashlib
import logging
import os
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import torch

from mpcvit.pki import check_private_file, require_loopback
from parties.proto import dealer_pb2, dealer_pb2_grpc
from parties.tls import channel_credentials, peer_role, secure_channel, server_credentials
from parties.transport import KEEPALIVE_OPTIONS, SERVER_PING_OPTIONS, NetworkShape, Shaper, bind, sleep_until
from mpcvit.prg import KEY_BYTES, derive_key, new_key
from protocols.providers import MODEL_ID_BITS, Request, all_corrections, needs_corrections

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 4 << 20
MAX_REQUESTS = 1 << 20
MAX_CORRECTION_BYTES = 8 << 30
MAX_BATCH_ID_LEN = 128
DEFAULT_TTL_S = 600.0
MAX_OPEN_BATCHES = 1024
# Material made for a rank that has not asked for it yet, all batches together. Without a bound it stays up to
# ttl_s per batch (0.8 GB for a 7_4_32 forward of 4 images), e.g. for a batch one party fetched ahead and whose
# forward never came; past it the oldest is dropped and that rank's late call is UNAVAILABLE (ask for a new batch).
MAX_PENDING_BYTES = 4 << 30
MODEL_PREFIX = "model/"  # GetSeed batch ids of model loads: their keys stay for every later batch's "fixed" requests
COMMITMENT_BYTES = 16


class DealerError(ValueError):
    """A request the dealer refuses, with the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Batch:
    keys: tuple[bytes, bytes]
    created: float
    commitment: bytes = b""  # what both parties compare before computing (see the module docstring)
    keys_handed: set[int] = field(default_factory=set)
    corrections_served: set[int] = field(default_factory=set)
    plan_digest: bytes | None = None  # both ranks must ask for the same plan
    pending: list[torch.Tensor] | None = None  # the other rank's material, made with the first call's
    ranks_needing: set[int] = field(default_factory=lambda: {0})
    making: threading.Event | None = None  # set when the first call's replay is done (the other rank waits for it)

    @property
    def done(self) -> bool:
        return self.ranks_needing <= self.corrections_served and self.keys_handed == {0, 1}


class DealerState:
    """The dealer's batches: a fresh key per party, forgotten when used up or stale."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_batches: int = MAX_OPEN_BATCHES, master_key: bytes | None = None,
                 served_loads: "ServedLoads | None" = None, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.master_key = master_key if master_key is not None else new_key()  # model keys derive from it
        if len(self.master_key) != KEY_BYTES:
            raise ValueError(f"the dealer's master secret is {KEY_BYTES} bytes")
        self.dealer_id = hashlib.sha256(b"mpcvit dealer id\0" + self.master_key).digest()[:16]
        self.instance_id = new_key()[:16]  # this process's batches: a restart loses them, so it changes
        self.served_loads = served_loads if served_loads is not None else ServedLoads(None)
        self.ttl_s = ttl_s
        self.max_batches = max_batches
        self.max_pending_bytes = max_pending_bytes
        self._batches: dict[str, _Batch] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def derive_model_key(self, model_id: int, rank: int) -> bytes:
        """Party ``rank``'s key of model load ``model_id``: HMAC-SHA256 of the dealer's master secret.

        Derived, not stored, so every later batch's "fixed" requests (the
        weights' fixed Beaver masks) find both keys again, also after a
        restart when the master secret is kept in a file (``--state``).
        """
        if rank not in (0, 1) or not 0 <= model_id < 2**MODEL_ID_BITS:
            raise DealerError(grpc.StatusCode.INVALID_ARGUMENT, "bad rank or model id")
        return derive_key(self.master_key, f"model/{model_id}/rank/{rank}")

    def model_commitment(self, model_id: int) -> bytes:
        """What both parties of load ``model_id`` must hold alike: a PRF of the master secret and the id."""
        return derive_key(self.master_key, f"model/{model_id}/commitment")[:COMMITMENT_BYTES]

    def model_key(self, model_id: int, rank: int) -> bytes:
        """Hand out party ``rank``'s key of load ``model_id``: once per rank and id, ever (``ServedLoads``).

        A second request for the same rank and id is refused (FAILED_PRECONDITION):
        whoever asks again is loading a second model under a served id, and its
        masks would cancel against the first load's openings.
        """
        key = self.derive_model_key(model_id, rank)
        self.served_loads.claim(model_id, rank)
        return key

    def _model_keys(self, model_id: int) -> tuple[bytes, bytes]:
        return self.derive_model_key(model_id, 0), self.derive_model_key(model_id, 1)

    def _batch(self, batch_id: str) -> _Batch:
        if not batch_id or len(batch_id) > MAX_BATCH_ID_LEN:
            raise DealerError(grpc.StatusCode.INVALID_ARGUMENT, f"batch_id must be 1..{MAX_BATCH_ID_LEN} characters")
        self._sweep()
        batch = self._batches.get(batch_id)
        if batch is None:
            if batch_id in self._finished:
                raise DealerError(grpc.StatusCode.FAILED_PRECONDITION, f"batch {batch_id} is used up; batch ids are never reused")
            if len(self._batches) >= self.max_batches:
                raise DealerError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {self.max_batches} open batches")
            keys = (new_key(), new_key())
            commitment = hashlib.sha256(b"mpcvit batch commitment\0" + self.instance_id + batch_id.encode() + b"\0" + new_key()
                                        + hashlib.sha256(keys[0]).digest() + hashlib.sha256(keys[1]).digest()).digest()
            batch = self._batches[batch_id] = _Batch(keys=keys, created=time.monotonic(), commitment=commitment[:COMMITMENT_BYTES])
        return batch

    def _sweep(self) -> None:
        """Forget stale batches (with the lock held): on every call, and on Ping, so that an idle dealer frees them too."""
        now = time.monotonic()
        for stale in [k for k, b in self._batches.items() if now - b.created > self.ttl_s]:
            del self._batches[stale]

    def _bound_pending(self, keep: _Batch) -> None:
        """Drop the oldest batches' pending material past ``max_pending_bytes`` (with the lock held), never ``keep``'s.

        Why: the other rank's material waits in memory until that rank asks; a
        rank that never asks (a batch fetched ahead by one party only, whose
        forward never came) left it for ``ttl_s``, and only a later call swept
        it, so such batches could hold up to ``max_batches`` times a batch's
        material (hundreds of GB at 7_4_32). A rank whose material was dropped
        gets UNAVAILABLE ("ask for a new batch"), as when making it failed.
        """
        held = [b for b in self._batches.values() if b.pending is not None]  # oldest first (creation order)
        total = sum(_nbytes(b.pending) for b in held)
        held.remove(keep)  # the batch just made: its other rank is usually asking right now
        for batch in held:
            if total <= self.max_pending_bytes:
                break
            total -= _nbytes(batch.pending)
            batch.pending = None
            logger.warning("dropped a batch's unclaimed material: more than %d bytes were waiting for a party", self.max_pending_bytes)

    def _forget_if_done(self, batch_id: str, batch: _Batch) -> None:
        if batch.done:
            self._batches.pop(batch_id, None)
            self._finished[batch_id] = None
            while len(self._finished) > 4 * self.max_batches:
                self._finished.popitem(last=False)

    def key(self, batch_id: str, rank: int) -> tuple[bytes, bytes]:
        """Party ``rank``'s 32-byte key for the batch (each is handed out once) and the batch's commitment.

        A name asked for again while the dealer still knows it (open, or among
        the last ``4 * max_batches`` finished) is refused; a name it has
        forgotten (stale, or finished long ago) gets fresh keys and a fresh
        commitment: a name is never a source of randomness, so a repeated
        name never repeats a key.
        """
        if rank not in (0, 1):
            raise DealerError(grpc.StatusCode.INVALID_ARGUMENT, "rank must be 0 or 1")
        with self._lock:
            batch = self._batch(batch_id)
            if rank in batch.keys_handed:
                raise DealerError(grpc.StatusCode.FAILED_PRECONDITION, f"rank {rank}'s key for batch {batch_id} was already handed out")
            batch.keys_handed.add(rank)
            self._forget_if_done(batch_id, batch)
            return batch.keys[rank], batch.commitment

    def corrections(self, batch_id: str, requests: list[Request], rank: int = 0) -> list[torch.Tensor]:
        """Party ``rank``'s corrections for the batch (once per rank; party 1 only for plans with DCF keys).

        Both ranks' material comes from one replay of the two key streams: the
        first call makes both and keeps the other rank's until it asks (with
        the same plan) or the batch goes stale; a call that comes while the
        first is still making them waits for it instead of making them again
        (parties that fetch ahead ask at the same moment).
        """
        if rank not in (0, 1):
            raise DealerError(grpc.StatusCode.INVALID_ARGUMENT, "rank must be 0 or 1")
        if len(requests) > MAX_REQUESTS:
            raise DealerError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {MAX_REQUESTS} requests")
        total = sum(r.correction_bytes(0) + r.correction_bytes(1) for r in requests)
        if total > MAX_CORRECTION_BYTES:
            raise DealerError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{total} bytes of corrections exceed {MAX_CORRECTION_BYTES}")
        if not needs_corrections(rank, requests):
            raise DealerError(grpc.StatusCode.FAILED_PRECONDITION, f"party {rank} gets no corrections for this plan")
        digest = hashlib.sha256(repr(requests).encode()).digest()
        with self._lock:
            batch = self._batch(batch_id)
            if rank in batch.corrections_served:
                raise DealerError(grpc.StatusCode.FAILED_PRECONDITION, f"party {rank}'s corrections for batch {batch_id} were already served")
            if batch.plan_digest is not None and batch.plan_digest != digest:
                raise DealerError(grpc.StatusCode.INVALID_ARGUMENT, f"the two parties asked batch {batch_id} for different plans")
            batch.corrections_served.add(rank)
            if batch.pending is not None:
                mine, batch.pending = batch.pending, None
                self._forget_if_done(batch_id, batch)
                return mine
            if batch.making is not None:  # the other rank's call is making both right now: wait for it
                made_by_other = batch.making
            else:
                made_by_other = None
                batch.making = threading.Event()
                batch.plan_digest = digest
                batch.ranks_needing = {r for r in (0, 1) if needs_corrections(r, requests)}
                keys = batch.keys
                self._forget_if_done(batch_id, batch)
        if made_by_other is not None:
            made_by_other.wait(self.ttl_s)
            with self._lock:
                mine, batch.pending = batch.pending, None
                self._forget_if_done(batch_id, batch)
            if mine is None:
                raise DealerError(grpc.StatusCode.UNAVAILABLE, f"making batch {batch_id} failed or took too long; ask for a new batch")
            return mine
        other = 1 - rank
        try:
            made = all_corrections(keys, requests, sorted({rank} | (batch.ranks_needing & {other})), self._model_keys)
            with self._lock:
                if other in made:
                    batch.pending = made[other]
                    self._bound_pending(batch)
                self._forget_if_done(batch_id, batch)
        finally:
            batch.making.set()
        return made[rank]

    @property
    def open_batches(self) -> int:
        with self._lock:
            self._sweep()  # Ping asks for this: stale batches are freed while no batch is asked for
            return len(self._batches)

    @property
    def pending_bytes(self) -> int:
        """Bytes of material waiting for a rank that has not asked yet."""
        with self._lock:
            return sum(_nbytes(b.pending) for b in self._batches.values() if b.pending is not None)


def _nbytes(tensors: list[torch.Tensor] | None) -> int:
    return sum(t.nelement() * t.element_size() for t in tensors or ())


# -- wire conversions ------------------------------------------------------------


def request_to_wire(request: Request) -> dealer_pb2.RandomnessRequest:
    return dealer_pb2.RandomnessRequest(
        kind=request.kind, size0=list(request.size0), size1=list(request.size1), op=request.op, kwargs_json=request.kwargs_json
    )


def request_from_wire(message: dealer_pb2.RandomnessRequest) -> Request:
    try:
        return Request.from_wire(message.kind, message.size0, message.size1, message.op, message.kwargs_json)
    except (ValueError, TypeError) as exc:
        raise DealerError(grpc.StatusCode.INVALID_ARGUMENT, f"bad randomness request: {exc}") from exc


def correction_chunks(corrections: list[torch.Tensor], chunk_bytes: int) -> Iterator[dealer_pb2.CorrectionChunk]:
    """Each correction as int64 little-endian bytes in chunks of at most ``chunk_bytes``."""
    for index, tensor in enumerate(corrections):
        data = tensor.contiguous().numpy().astype("<i8", copy=False).tobytes()
        count = max(1, -(-len(data) // chunk_bytes))
        view = memoryview(data)
        for i in range(count):
            yield dealer_pb2.CorrectionChunk(
                request_index=index,
                shape=list(tensor.shape),
                data=data if count == 1 else bytes(view[i * chunk_bytes : (i + 1) * chunk_bytes]),
                chunk_index=i,
                chunk_count=count,
            )


def assemble_corrections(chunks: Iterator[dealer_pb2.CorrectionChunk], requests: list[Request], rank: int = 0) -> list[torch.Tensor]:
    """Rebuild the corrections from chunks, checking each against its request's shape."""
    out: list[torch.Tensor] = []
    buffer = bytearray()
    for chunk in chunks:
        if chunk.request_index != len(out):
            raise ValueError(f"dealer sent request {chunk.request_index}, expected {len(out)}")
        expected = tuple(requests[len(out)].output_size(rank))
        if tuple(chunk.shape) != expected:
            raise ValueError(f"dealer correction {len(out)} has shape {tuple(chunk.shape)}, expected {expected}")
        buffer += chunk.data
        if chunk.chunk_index + 1 == chunk.chunk_count:
            array = np.frombuffer(buffer, dtype="<i8")
            if array.size != int(np.prod(expected, dtype=np.int64)):
                raise ValueError(f"dealer correction {len(out)} has {array.size} elements for shape {expected}")
            out.append(torch.from_numpy(array).reshape(expected))
            buffer = bytearray()
    if len(out) != len(requests):
        raise ValueError(f"dealer sent {len(out)} corrections for {len(requests)} requests")
    return out


# -- server ----------------------------------------------------------------------


def _libc_malloc_trim():  # noqa: ANN202 - a ctypes function, or None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to give back
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _libc_malloc_trim()
_trim_lock = threading.Lock()


def release_freed_memory() -> bool:
    """Give the pages of freed heap memory back to the system (glibc ``malloc_trim(0)``); False if skipped.

    Why the dealer needs it: a batch's material is hundreds of MB of tensors
    (0.4 GB for a 7_4_32 forward, both parties') and their temporaries, made
    and freed by whichever of the 8 gRPC threads and the DCF key-generation
    threads served the call. glibc raises its mmap threshold to the size of
    the largest block freed (up to 32 MiB), so after the first batch such
    tensors come from the per-thread malloc arenas, and freed arena memory
    stays resident: driven with a 7_4_32 plan from two clients, the dealer
    held 0.7-1.6 GB between batches, with no batch in flight, and 0.3-0.46 GB
    with the trim. Trimming after each served
    call returns every free page of every arena (about 10% more CPU per
    batch; a fixed 1 MiB mmap threshold returned as much but cost 65%).
    One trim at a time: a call that finds one running skips (the running
    one, or the next call's, returns its pages).
    """
    if _malloc_trim is None or not _trim_lock.acquire(blocking=False):
        return False
    try:
        _malloc_trim(0)
        return True
    finally:
        _trim_lock.release()



def _check_role(context: grpc.ServicerContext, allowed: str) -> None:
    role = peer_role(context)
    if role is not None and role != allowed:
        raise DealerError(grpc.StatusCode.PERMISSION_DENIED, f"{role} may not ask for this (only {allowed})")


class DealerServicer(dealer_pb2_grpc.DealerServicer):
    """Translates ``Dealer`` calls to :class:`DealerState`."""

    def __init__(self, state: DealerState) -> None:
        self.state = state

    def GetSeed(self, request: dealer_pb2.SeedRequest, context: grpc.ServicerContext) -> dealer_pb2.SeedReply:
        try:
            _check_role(context, f"party{request.rank}")
            if request.batch_id.startswith(MODEL_PREFIX):
                try:
                    model_id = int(request.batch_id[len(MODEL_PREFIX):])
                except ValueError:
                    raise DealerError(grpc.StatusCode.INVALID_ARGUMENT, "a model batch id is model/<id>") from None
                key = self.state.model_key(model_id, request.rank)
                commitment = self.state.model_commitment(model_id)
            else:
                key, commitment = self.state.key(request.batch_id, request.rank)
        except DealerError as exc:
            context.abort(exc.code, str(exc))
        return dealer_pb2.SeedReply(batch_id=request.batch_id, key=key, dealer_id=self.state.dealer_id, commitment=commitment,
                                    dealer_instance=self.state.instance_id)

    def GetCorrections(self, request: dealer_pb2.CorrectionsRequest, context: grpc.ServicerContext) -> Iterator[dealer_pb2.CorrectionChunk]:
        try:
            _check_role(context, f"party{request.rank}")
            requests = [request_from_wire(r) for r in request.requests]
            corrections = self.state.corrections(request.batch_id, requests, request.rank)
        except DealerError as exc:
            context.abort(exc.code, str(exc))
        chunk = request.max_chunk_bytes if 0 < request.max_chunk_bytes <= DEFAULT_CHUNK_BYTES else DEFAULT_CHUNK_BYTES
        try:
            yield from correction_chunks(corrections, chunk)
        finally:
            # The material and its wire copies are freed now: return their pages, or the arenas keep them
            # resident and the dealer's memory only grows under load (release_freed_memory).
            del corrections
            release_freed_memory()

    def Ping(self, request: dealer_pb2.DealerPingRequest, context: grpc.ServicerContext) -> dealer_pb2.DealerPingReply:
        return dealer_pb2.DealerPingReply(open_batches=self.state.open_batches)


class ServedLoads:
    """The model load ids whose keys the dealer handed out, per rank: each (id, rank) once, ever.

    With a path (``<state>.loads``, beside the master secret) every claim is
    appended and flushed to disk before the key leaves, and the file is read
    back at start, so the refusal survives a restart. Without one (no
    ``--state``: the master secret dies with the process, and with it every
    key it could derive) the ids are kept in memory.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._served: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            check_private_file(self.path)
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                try:
                    model_id, rank = line.split()
                    self._served.add((int(model_id, 16), int(rank)))
                except ValueError:
                    raise ValueError(f"{self.path}:{n} is not '<hex id> <rank>'; the file is damaged") from None

    def claim(self, model_id: int, rank: int) -> None:
        """Record (``model_id``, ``rank``) as served, or raise FAILED_PRECONDITION if it was."""
        with self._lock:
            if (model_id, rank) in self._served:
                raise DealerError(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"model load id {model_id:x} was already served to party {rank}; load ids are never reused")
            if self.path is not None:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as f:
                    f.write(f"{model_id:x} {rank}\n")
                    f.flush()
                    os.fsync(f.fileno())
            self._served.add((model_id, rank))

    def __len__(self) -> int:
        return len(self._served)


def loads_path(state: str | Path) -> Path:
    """Where the load ids served under the master secret in ``state`` are kept."""
    return Path(f"{state}.loads")


def load_master_key(path: str | Path | None) -> bytes | None:
    """The dealer's master secret from ``path`` (32 bytes, made with mode 0600 on first use); None without a path.

    With party 1's view it gives every loaded model's weights, so a file that
    its group or others may read is refused, as a TLS key file is.
    """
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(new_key())
    check_private_file(p)
    key = p.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{p} does not hold a {KEY_BYTES}-byte dealer secret; remove it to make a new one")
    return key


def serve(listen: str, certs_dir: str | None, ttl_s: float = DEFAULT_TTL_S, state: str | None = None) -> tuple[grpc.Server, int]:
    """Start a dealer server on ``listen`` (mutual TLS with ``certs_dir``'s dealer certificate, or plaintext)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dealer"),
        options=SERVER_PING_OPTIONS + [("grpc.max_receive_message_length", 256 << 20), ("grpc.so_reuseport", 0)],
    )
    served = ServedLoads(loads_path(state) if state is not None else None)
    dealer_pb2_grpc.add_DealerServicer_to_server(
        DealerServicer(DealerState(ttl_s=ttl_s, master_key=load_master_key(state), served_loads=served)), server)
    port = bind(server, listen, server_credentials(certs_dir, "dealer") if certs_dir else None)
    server.start()
    logger.info("dealer listening on port %d (%s)", port, "mutual TLS" if certs_dir else "PLAINTEXT")
    return server, port


# -- client ----------------------------------------------------------------------


@dataclass(frozen=True)
class DealerSeed:
    """One ``GetSeed`` answer: this party's key, the dealer's id (its master secret's hash), the material's
    commitment (equal at both parties only when they draw from the same batch or load) and the dealer
    process's instance id."""

    key: bytes
    dealer_id: bytes
    commitment: bytes
    instance: bytes


@dataclass
class DealerTraffic:
    """Offline traffic with the dealer, counted apart from the online rounds and bytes."""

    requests: int = 0
    bytes_received: int = 0
    seconds: float = 0.0


class DealerClient:
    """A party's connection to the dealer.

    ``shape`` emulates the link from the dealer (the benchmarks' cold WAN runs: the dealer is a third
    organisation, so its material crosses a WAN): every call then returns only when its request's
    one-way delay, the reply's time on the link (8 n / bandwidth, the calls of all this party's
    sessions queued on one link) and the reply's one-way delay have passed, on top of the real call.
    """

    def __init__(self, target: str, rank: int, certs_dir: str | None = None, timeout_s: float = 120.0,
                 shape: NetworkShape | None = None) -> None:
        options = KEEPALIVE_OPTIONS + [("grpc.max_receive_message_length", DEFAULT_CHUNK_BYTES + (1 << 20))]
        if certs_dir:
            self.channel = secure_channel(target, channel_credentials(certs_dir, f"party{rank}"), "dealer", options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = dealer_pb2_grpc.DealerStub(self.channel)
        self.rank = rank
        self.timeout_s = timeout_s
        self.traffic = DealerTraffic()
        self._traffic_lock = threading.Lock()  # sessions and prefetches call at once
        self.shape = shape or NetworkShape()
        self._shaper = Shaper(self.shape)

    def get_key(self, batch_id: str, timeout: float | None = None) -> DealerSeed:
        """This party's 32-byte PRG key for the batch, with the dealer's ids and the batch's commitment
        (``timeout``: seconds, default the client's)."""
        t0 = time.perf_counter()
        reply = self.stub.GetSeed(dealer_pb2.SeedRequest(batch_id=batch_id, rank=self.rank), timeout=timeout or self.timeout_s,
                                  wait_for_ready=True)
        self._count(len(reply.key), t0)
        if len(reply.key) != KEY_BYTES:
            raise RuntimeError(f"the dealer sent a {len(reply.key)}-byte key; a batch key is {KEY_BYTES} bytes")
        if len(reply.commitment) != COMMITMENT_BYTES:
            raise RuntimeError(f"the dealer sent a {len(reply.commitment)}-byte commitment; expected {COMMITMENT_BYTES} "
                               "(a dealer older than its parties?)")
        return DealerSeed(bytes(reply.key), bytes(reply.dealer_id), bytes(reply.commitment), bytes(reply.dealer_instance))

    def get_corrections(self, batch_id: str, requests: list[Request], timeout: float | None = None) -> list[torch.Tensor]:
        t0 = time.perf_counter()
        message = dealer_pb2.CorrectionsRequest(batch_id=batch_id, requests=[request_to_wire(r) for r in requests], rank=self.rank)
        corrections = assemble_corrections(self.stub.GetCorrections(message, timeout=timeout or self.timeout_s, wait_for_ready=True),
                                           requests, self.rank)
        self._count(sum(int(c.nelement()) * 8 for c in corrections), t0)
        return corrections

    def get_model_key(self, model_id: int, timeout: float | None = None) -> DealerSeed:
        """This party's 32-byte key of model load ``model_id`` (its fixed weight masks), with the dealer's ids and
        the load's commitment."""
        return self.get_key(f"{MODEL_PREFIX}{int(model_id)}", timeout)

    def fetch_batch(self, batch_id: str, requests: list[Request],
                    timeout: float | None = None) -> tuple[DealerSeed, list[torch.Tensor] | None]:
        """This party's key (with the dealer's ids and the commitment) and its corrections (party 1: only for
        plans with DCF keys): what ``begin_batch`` takes.

        ``timeout`` bounds each of the two calls (the party passes its session's time left)."""
        seed = self.get_key(batch_id, timeout)
        return seed, (self.get_corrections(batch_id, requests, timeout) if needs_corrections(self.rank, requests) else None)

    def _count(self, nbytes: int, t0: float) -> None:
        if self.shape.active:  # the reply's time on the emulated link and both one-way delays
            sleep_until(self._shaper.release_time(nbytes) + self.shape.delay_ms / 1000.0)
        with self._traffic_lock:
            self.traffic.requests += 1
            self.traffic.bytes_received += nbytes
            self.traffic.seconds += time.perf_counter() - t0

    def reachable(self, timeout: float = 1.0) -> bool:
        try:
            self.stub.Ping(dealer_pb2.DealerPingRequest(), timeout=timeout)
            return True
        except grpc.RpcError:
            return False

    def close(self) -> None:
        self.channel.close()


# -- command line ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:50050", help="HOST:PORT to serve on (port 0: any free port)")
    parser.add_argument("--certs", help="directory made by 'mpcvit certs' (mutual TLS)")
    parser.add_argument("--insecure", action="store_true", help="serve plaintext gRPC (no TLS); loopback --listen only, for local experiments")
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds an unfinished batch is kept")
    parser.add_argument("--state", help="file holding the dealer's 32-byte master secret (made on first use, mode 0600); "
                        "with it, loaded models keep working across a dealer restart, without it they must be reloaded")


def run(args: argparse.Namespace) -> int:
    if not args.insecure and not args.certs:
        raise ValueError("give --certs DIR for mutual TLS, or --insecure for plaintext")
    if args.insecure:
        require_loopback("--insecure", {"--listen": args.listen})
    server, _ = serve(args.listen, None if args.insecure else args.certs, args.ttl, args.state)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parties.dealer", description="the dealer (correlated randomness) process")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
