"""Peer-to-peer transport between the two parties over gRPC (``transport.proto``).

Each party runs one :class:`Endpoint`: a gRPC server for ``PeerTransport``
(its inbox side) and a client link to the peer's server (its outbox side).
A :class:`Session` is one secure computation (one session id, one deadline):
``send_tensor`` / ``recv_tensor`` move tensors as raw little-endian bytes plus
shape and dtype, in order, in frames of ``SEND_CHUNK_BYTES`` (1 MiB; a
receiver accepts up to ``Limits.max_frame_bytes``, 4 MiB). Large messages are
what a ViT-B forward moves (gigabytes), so the sending path makes each
frame's bytes with one copy from the tensor's memory (``encode_tensor_frames``:
protobuf serializes only the small fields), the receiving path parses a
streamed frame without copying its data out of the received bytes
(``parse_frame``) and copies it once into the tensor, and 1 MiB frames let
the receiver reassemble one while the next is on the wire
(``benchmarks/transport_bench.py --collective``). An :class:`Endpoint` also
has glibc reuse the megabyte buffers such messages go through rather than
fault in fresh pages for each (:func:`tune_allocator`). What is left of the
cost on loopback is gRPC's own: its copy of each frame into its buffers, the
copies from its buffers into the bytes Python gets, HTTP/2 framing and the
hand-offs between its threads.

Guarantees:

* Ordering: frames of one (session, direction) carry consecutive sequence
  numbers; the receiver accepts only the next one (INVALID_ARGUMENT otherwise).
* Matching: a receive names the tag it expects. Point-to-point messages (tag
  ``"p2p"`` or ``"p2p.<name>"``) and collectives are matched apart, as
  torch.distributed does: one kind that arrives while the other is awaited is
  kept aside (bounded by ``Limits``) for a later receive of its kind; within
  a kind, another tag than the expected one fails the session.
* Isolation: every session has its own inbox, so two concurrent sessions never
  see each other's messages.
* Failure: a receive waits at most until the session deadline
  (``DEADLINE_EXCEEDED``); a broken connection to the peer fails every open
  session at once (``UNAVAILABLE``); an ABORT frame from the peer fails that
  session. A malformed frame is refused with INVALID_ARGUMENT, an oversized one
  with RESOURCE_EXHAUSTED; the server keeps serving.
* Shaping: an optional :class:`NetworkShape` (one-way delay, bandwidth) is
  applied in the sender: a frame of ``n`` bytes leaves after the link has been
  busy ``8 n / bandwidth`` seconds and arrives ``delay`` later, with frames
  pipelined as on a real link.

Two sending modes: ``stream`` (default; one long-lived client-streaming call
per link, the caller never waits for the network) and ``unary`` (one
acknowledged call per frame). ``benchmarks/transport_bench.py`` measures both.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import math
import queue
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal

import grpc
import numpy as np
import torch
from google.protobuf.message import DecodeError

from parties.proto import transport_pb2, transport_pb2_grpc
from parties.tls import peer_role, secure_channel

logger = logging.getLogger(__name__)

Mode = Literal["stream", "unary"]

DEFAULT_CHUNK_BYTES = 4 << 20  # the largest frame a receiver accepts (Limits.max_frame_bytes)
SEND_CHUNK_BYTES = 1 << 20  # frames a sender makes: the peer parses one while the next is on the wire
MAX_MESSAGE_BYTES = 1 << 30
MAX_SESSION_ID_LEN = 128
MAX_OPEN_SESSIONS = 64
MAX_ASIDE_MESSAGES = 1024  # messages of one kind a session keeps while it waits for the other kind (Session.recv_tensor)
MAX_ASIDE_BYTES = MAX_MESSAGE_BYTES  # and their bytes: room for one message of the largest size
UNOPENED_TTL_S = 600.0  # a frame-made inbox no local session opened is forgotten after this (or once aborted)
GRPC_FRAME_OVERHEAD = 64 << 10
SMALL_FRAME_BYTES = 16 << 10  # a received frame up to this size is parsed by protobuf whole (its data copied once)
SEND_METHOD = "/mpcvit.transport.v1.PeerTransport/Send"  # transport.proto's two frame-carrying methods
STREAM_METHOD = "/mpcvit.transport.v1.PeerTransport/Stream"

# dtype name on the wire -> (torch dtype, little-endian numpy dtype)
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "int64": (torch.int64, np.dtype("<i8")),
    "int32": (torch.int32, np.dtype("<i4")),
    "int16": (torch.int16, np.dtype("<i2")),
    "int8": (torch.int8, np.dtype("i1")),
    "uint8": (torch.uint8, np.dtype("u1")),
    "bool": (torch.bool, np.dtype("?")),
    "float16": (torch.float16, np.dtype("<f2")),
    "bfloat16": (torch.bfloat16, np.dtype("<i2")),  # numpy has no bfloat16: its 16 raw bits, little-endian
    "float32": (torch.float32, np.dtype("<f4")),
    "float64": (torch.float64, np.dtype("<f8")),
}
_DTYPE_NAMES: dict[torch.dtype, str] = {t: name for name, (t, _) in DTYPES.items()}
_NUMPY_AS: dict[torch.dtype, torch.dtype] = {torch.bfloat16: torch.int16}  # dtypes numpy lacks, read as raw words of the same size

KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # a restarted peer is found again within about a second
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]
SERVER_PING_OPTIONS: list[tuple[str, int]] = [
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


class TransportError(RuntimeError):
    """A transport failure, with the gRPC status code that describes it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class SessionFailed(TransportError):
    """The session cannot go on: deadline passed, peer gone, peer aborted, or protocol error."""


@dataclass(frozen=True)
class NetworkShape:
    """Emulated link: one-way delay in milliseconds, bandwidth in bit/s (0 = unlimited)."""

    delay_ms: float = 0.0
    bandwidth_bps: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.bandwidth_bps < 0:
            raise ValueError("delay and bandwidth must be non-negative")

    @property
    def active(self) -> bool:
        return self.delay_ms > 0 or self.bandwidth_bps > 0


# The two settings of DESIGN.md (Cheetah's throttle script): one-way delay = RTT / 2.
LAN = NetworkShape(delay_ms=0.15, bandwidth_bps=3e9)
WAN = NetworkShape(delay_ms=20.0, bandwidth_bps=400e6)
NETWORKS: dict[str, NetworkShape] = {"none": NetworkShape(), "lan": LAN, "wan": WAN}


class Shaper:
    """Release times of frames on an emulated link (sender side).

    A frame of ``n`` bytes occupies the link for ``8 n / bandwidth`` seconds
    after the previous frame has left, then needs ``delay`` seconds to arrive:
    ``release = max(now, link_free) + 8 n / bw + delay``.
    """

    def __init__(self, shape: NetworkShape) -> None:
        self.shape = shape
        self._link_free = 0.0
        self._lock = threading.Lock()

    def release_time(self, nbytes: int) -> float:
        now = time.monotonic()
        if not self.shape.active:
            return now
        busy = 8.0 * nbytes / self.shape.bandwidth_bps if self.shape.bandwidth_bps > 0 else 0.0
        with self._lock:
            self._link_free = max(now, self._link_free) + busy
            return self._link_free + self.shape.delay_ms / 1000.0


def sleep_until(release: float) -> None:
    wait = release - time.monotonic()
    if wait > 0:
        time.sleep(wait)


# -- memory ------------------------------------------------------------------

MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to this come from the heap, and are reused
MALLOC_TRIM_THRESHOLD = 256 << 20  # free memory at the top of a heap that glibc keeps instead of returning it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_allocator_tuned = False


def tune_allocator() -> bool:
    """Let glibc keep and reuse the buffers a large message goes through (process-wide; once; False if not glibc).

    Every large message makes short-lived buffers of megabytes in this process: the sender's frames,
    gRPC's copies of them and its socket reads, the bytes gRPC hands to the receiving thread. By default
    glibc serves such blocks with fresh ``mmap`` pages or gives the freed top of a heap back to the system,
    so each message faults every page in again, zero-filled by the kernel: a 67 MB all_reduce here took
    about 145 ms of CPU time in each party that way and 110 ms without. With a fixed mmap threshold (blocks up to 32 MiB
    come from the heap) and a 256 MiB trim threshold the freed blocks are reused. The price is resident
    memory: a process keeps up to its largest burst of such buffers (what ``Limits`` already bound) mapped.
    Tensors larger than 32 MiB are still mapped fresh, as in any process."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
    return _allocator_tuned


# -- frames ------------------------------------------------------------------


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"the transport does not carry tensors of dtype {dtype}") from None


def tensor_frames(
    session_id: str, first_seq: int, src_rank: int, tag: str, tensor: torch.Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[transport_pb2.Frame]:
    """Split a tensor into frames of at most ``chunk_bytes`` of raw little-endian data (as messages; what
    :func:`encode_tensor_frames` sends, parsed back)."""
    encoded = encode_tensor_frames(session_id, first_seq, src_rank, tag, tensor, chunk_bytes)
    return [transport_pb2.Frame.FromString(data) for data in encoded]


_DATA_KEY = bytes([(transport_pb2.Frame.DESCRIPTOR.fields_by_name["data"].number << 3) | 2])  # field 8, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def encode_tensor_frames(
    session_id: str, first_seq: int, src_rank: int, tag: str, tensor: torch.Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[bytes]:
    """The serialized ``Frame`` messages of :func:`tensor_frames`, made with one copy of the data per frame
    (all of :func:`iter_tensor_frames`)."""
    return list(iter_tensor_frames(session_id, first_seq, src_rank, tag, tensor, chunk_bytes)[1])


def iter_tensor_frames(
    session_id: str, first_seq: int, src_rank: int, tag: str, tensor: torch.Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> tuple[int, Iterator[bytes]]:
    """How many frames a tensor takes, and those frames' bytes, each made when the iterator gets to it.

    Building a ``Frame`` with an 8 MB ``data`` field and serializing it copies the payload into the message
    and again out of it (15 ms for 8.4 MB here, more than the loopback transfer itself). Instead each
    frame's other fields are serialized by protobuf (a few dozen bytes) and the ``data`` field is appended
    in protobuf's own encoding (key, length, bytes: fields may come in any order, so this parses to the
    same message, which ``tests/parties/test_transport.py`` checks), joined straight from the tensor's memory.
    Made one by one, the first frame can be on the wire while the next is copied; the frames read the
    tensor's memory until the iterator is exhausted (``Session.send_tensor`` exhausts it before it returns).
    """
    name = dtype_name(tensor.dtype)
    flat = tensor.detach().cpu().contiguous()
    if flat.dtype in _NUMPY_AS:
        flat = flat.view(_NUMPY_AS[flat.dtype])
    raw = flat.numpy().astype(DTYPES[name][1], copy=False).reshape(-1).view(np.uint8)
    count = max(1, math.ceil(raw.nbytes / chunk_bytes))
    shape = list(tensor.shape)

    def frames() -> Iterator[bytes]:
        for i in range(count):
            chunk = memoryview(raw[i * chunk_bytes : (i + 1) * chunk_bytes])
            header = transport_pb2.Frame(
                session_id=session_id, seq=first_seq + i, src_rank=src_rank, kind=transport_pb2.FRAME_KIND_TENSOR,
                tag=tag, dtype=name, shape=shape, chunk_index=i, chunk_count=count,
            ).SerializeToString()
            yield b"".join((header, _DATA_KEY, _varint(chunk.nbytes), chunk)) if chunk.nbytes else header

    return count, frames()


@dataclass(frozen=True)
class WireFrame:
    """A received ``Frame``: every field but ``data`` parsed by protobuf, ``data`` a view into the received bytes."""

    header: transport_pb2.Frame
    data: memoryview


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def parse_frame(raw: bytes) -> WireFrame:
    """The ``Frame`` in ``raw`` without copying its data: the other fields (a few dozen bytes) go to protobuf.

    Walks protobuf's wire format (key varint, then a varint, 8 or 4 bytes, or a length-prefixed run);
    raises ``ValueError`` on anything malformed, which fails the stream (gRPC answers INTERNAL) as a
    frame that protobuf cannot parse does."""
    if len(raw) <= SMALL_FRAME_BYTES:  # copying a few kilobytes costs less than walking the fields in Python
        try:
            frame = transport_pb2.Frame.FromString(raw)
        except DecodeError as exc:
            raise ValueError(f"malformed frame: {exc}") from None
        data = memoryview(frame.data)
        frame.ClearField("data")
        return WireFrame(frame, data)
    buf = memoryview(raw)
    pos, rest, data = 0, [], buf[0:0]
    data_field = transport_pb2.Frame.DESCRIPTOR.fields_by_name["data"].number
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        wire_type = key & 7
        if wire_type == 0:
            _, pos = _read_varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            n, pos = _read_varint(buf, pos)
            if key >> 3 == data_field:
                if pos + n > len(buf):
                    raise ValueError("truncated data field")
                data = buf[pos : pos + n]
                pos += n
                continue
            pos += n
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > len(buf):
            raise ValueError("truncated field")
        rest.append(buf[start:pos])
    return WireFrame(transport_pb2.Frame.FromString(b"".join(rest)), data)


def _wire(frame: bytes | transport_pb2.Frame) -> bytes:
    """The request serializer of the link's calls: frames travel pre-serialized (bytes) or as messages."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


_BIG_ENDIAN = sys.byteorder == "big"


def _from_wire_order(tensor: torch.Tensor, dtype: str) -> torch.Tensor:
    """A tensor filled with the wire's little-endian bytes, in this machine's order."""
    if not _BIG_ENDIAN or tensor.element_size() == 1:
        return tensor
    wire = DTYPES[dtype][1]
    words = tensor.view(_NUMPY_AS.get(tensor.dtype, tensor.dtype))
    native = torch.from_numpy(words.numpy().view(wire).astype(wire.newbyteorder("="))).reshape(tensor.shape)
    return native.view(tensor.dtype)


def _byte_view(tensor: torch.Tensor) -> np.ndarray:
    """The bytes of a fresh contiguous tensor as a writable flat uint8 array (sharing its memory)."""
    return tensor.view(-1).view(torch.uint8).numpy()



def tensor_nbytes(dtype: str, shape: list[int] | tuple[int, ...]) -> int:
    return math.prod(shape) * DTYPES[dtype][1].itemsize


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts."""

    max_frame_bytes: int = DEFAULT_CHUNK_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_open_sessions: int = MAX_OPEN_SESSIONS
    max_aside_messages: int = MAX_ASIDE_MESSAGES
    max_aside_bytes: int = MAX_ASIDE_BYTES


def check_frame(frame: transport_pb2.Frame, limits: Limits, data_len: int | None = None) -> None:
    """Refuse a malformed or oversized frame with a :class:`TransportError` (never a crash).

    ``data_len`` is ``len(frame.data)`` when the caller has read the data already (each read copies it)."""
    bad = grpc.StatusCode.INVALID_ARGUMENT
    if not frame.session_id or len(frame.session_id) > MAX_SESSION_ID_LEN:
        raise TransportError(bad, f"session_id must be 1..{MAX_SESSION_ID_LEN} characters")
    if frame.kind == transport_pb2.FRAME_KIND_ABORT:
        return
    if frame.kind != transport_pb2.FRAME_KIND_TENSOR:
        raise TransportError(bad, f"unknown frame kind {frame.kind}")
    if frame.dtype not in DTYPES:
        raise TransportError(bad, f"unsupported dtype {frame.dtype!r}")
    if any(s < 0 for s in frame.shape):
        raise TransportError(bad, "negative dimension in shape")
    if frame.chunk_count < 1 or frame.chunk_index >= frame.chunk_count:
        raise TransportError(bad, f"chunk {frame.chunk_index} of {frame.chunk_count} is out of range")
    n = len(frame.data) if data_len is None else data_len
    if n > limits.max_frame_bytes:
        raise TransportError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"frame of {n} bytes exceeds {limits.max_frame_bytes}")
    total = tensor_nbytes(frame.dtype, list(frame.shape))
    if total > limits.max_message_bytes:
        raise TransportError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"tensor of {total} bytes exceeds {limits.max_message_bytes}")
    if frame.chunk_count == 1 and n != total:
        raise TransportError(bad, f"{n} data bytes for shape {list(frame.shape)} of {frame.dtype} ({total} expected)")


# -- receiving ---------------------------------------------------------------


@dataclass
class Message:
    tag: str
    tensor: torch.Tensor


P2P = "p2p"
COLLECTIVE = "collective"


def tag_kind(tag: str) -> str:
    """The ordered stream a tag belongs to: ``"p2p"`` for ``"p2p"`` and ``"p2p.<name>"``, ``"collective"`` for every other.

    torch.distributed matches point-to-point messages (send/recv, isend/irecv) apart from collectives, so a
    program may leave an ``irecv`` pending across an ``all_reduce``; :meth:`Session.recv_tensor` does the same."""
    return P2P if tag == P2P or tag.startswith("p2p.") else COLLECTIVE


class SessionInbox:
    """The ordered messages of one session from the peer, reassembled from frames."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._queue: queue.SimpleQueue[Message | SessionFailed] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._next_seq = 0
        self._partial: tuple[torch.Tensor, np.ndarray] | None = None  # the message being reassembled, and its bytes
        self._partial_filled = 0
        self.failure: SessionFailed | None = None
        self.bytes_received = 0
        self.opened = False  # set by ``Inboxes.open``: a frame-made inbox nobody opened may be evicted
        self.created = time.monotonic()

    def deliver(self, frame: transport_pb2.Frame, data: bytes | memoryview | None = None) -> None:
        """Accept the next frame (called on a gRPC server thread); ``data`` is ``frame.data`` if already read."""
        if data is None:
            data = frame.data
        with self._lock:
            if self.failure is not None:
                return
            if frame.kind == transport_pb2.FRAME_KIND_ABORT:
                self._fail_locked(SessionFailed(grpc.StatusCode.ABORTED, f"peer aborted session {self.session_id}: {frame.reason}"))
                return
            if frame.seq != self._next_seq:
                error = SessionFailed(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"session {self.session_id}: frame seq {frame.seq}, expected {self._next_seq}",
                )
                self._fail_locked(error)
                raise error
            self._next_seq += 1
            self.bytes_received += len(data)
            message = self._assemble(frame, data)
        if message is not None:
            self._queue.put(message)

    def _assemble(self, frame: transport_pb2.Frame, data: bytes | memoryview) -> Message | None:
        """Copy a frame's data into its message's tensor; the message once its last chunk is in.

        A one-frame message is one copy of the data into a new buffer. A longer one gets its tensor
        (uninitialised, never larger than ``check_frame`` allowed) with its first chunk, and each chunk is
        copied straight into the tensor's bytes by numpy, which lets go of the GIL while it copies: gRPC's
        threads of this process take in the next frame meanwhile. Either way the one copy makes the tensor
        fresh (nothing else references its memory) and writable."""
        if frame.chunk_count == 1:
            torch_dtype = DTYPES[frame.dtype][0]
            shape = tuple(frame.shape)
            if not len(data):
                return Message(frame.tag, torch.empty(shape, dtype=torch_dtype))
            tensor = torch.frombuffer(bytearray(data), dtype=torch_dtype).reshape(shape)
            return Message(frame.tag, _from_wire_order(tensor, frame.dtype))
        if frame.chunk_index == 0:
            tensor = torch.empty(tuple(frame.shape), dtype=DTYPES[frame.dtype][0])
            self._partial = (tensor, _byte_view(tensor))
            self._partial_filled = 0
        if self._partial is None:
            raise SessionFailed(grpc.StatusCode.INVALID_ARGUMENT, f"chunk {frame.chunk_index} of a message whose first chunk never came")
        tensor, dest = self._partial
        end = self._partial_filled + len(data)
        if end > len(dest):
            self._partial = None
            raise SessionFailed(grpc.StatusCode.INVALID_ARGUMENT, "chunks overflow the declared tensor size")
        dest[self._partial_filled : end] = np.frombuffer(data, dtype=np.uint8)
        self._partial_filled = end
        if frame.chunk_index + 1 < frame.chunk_count:
            return None
        self._partial = None
        if end != len(dest):
            raise SessionFailed(grpc.StatusCode.INVALID_ARGUMENT, "chunks do not fill the declared tensor size")
        return Message(frame.tag, _from_wire_order(tensor, frame.dtype))

    def get(self, deadline: float) -> Message:
        """Next message, waiting at most until ``deadline`` (``time.monotonic()`` clock)."""
        try:
            item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            error = SessionFailed(grpc.StatusCode.DEADLINE_EXCEEDED, f"session {self.session_id}: no message from the peer before the deadline")
            self.fail(error)
            raise error from None
        if isinstance(item, SessionFailed):
            self._queue.put(item)  # every later receive fails the same way
            raise item
        return item

    def fail(self, error: SessionFailed) -> None:
        with self._lock:
            self._fail_locked(error)

    def _fail_locked(self, error: SessionFailed) -> None:
        if self.failure is None:
            self.failure = error
            self._queue.put(error)


class Inboxes:
    """All session inboxes of one endpoint; an inbox is made by whichever comes first, a frame or ``open``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._inboxes: dict[str, SessionInbox] = {}
        self._closed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _get_or_create(self, session_id: str) -> SessionInbox | None:
        with self._lock:
            if session_id in self._closed:
                return None
            inbox = self._inboxes.get(session_id)
            if inbox is None:
                if len(self._inboxes) >= self.limits.max_open_sessions:
                    self._evict_unopened_locked()
                if len(self._inboxes) >= self.limits.max_open_sessions:
                    raise TransportError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {self.limits.max_open_sessions} open sessions")
                inbox = self._inboxes[session_id] = SessionInbox(session_id)
            return inbox

    def _evict_unopened_locked(self) -> None:
        """Forget inboxes that frames made but no local session opened, once aborted or older than ``UNOPENED_TTL_S``.

        A peer that refuses a call before this side opens its session sends one
        ABORT frame; the inbox it makes waits for the local open (which then
        fails at once). If the local side never opens it (its own refusal came
        first), such inboxes would otherwise fill the session limit for good.
        """
        now = time.monotonic()
        for sid, box in list(self._inboxes.items()):
            if not box.opened and (box.failure is not None or now - box.created > UNOPENED_TTL_S):
                del self._inboxes[sid]
                self._closed[sid] = None

    def deliver(self, frame: transport_pb2.Frame | WireFrame) -> None:
        if isinstance(frame, WireFrame):
            frame, data = frame.header, frame.data
        else:
            data = frame.data  # read once: every read of a bytes field is a copy
        check_frame(frame, self.limits, len(data))
        inbox = self._get_or_create(frame.session_id)
        if inbox is None:
            logger.debug("dropping a late frame of closed session %s", frame.session_id)
            return
        inbox.deliver(frame, data)

    def open(self, session_id: str) -> SessionInbox:
        inbox = self._get_or_create(session_id)
        if inbox is None:
            raise ValueError(f"session {session_id} was already used; session ids are never reused")
        inbox.opened = True
        return inbox

    def close(self, session_id: str) -> None:
        with self._lock:
            self._inboxes.pop(session_id, None)
            self._closed[session_id] = None
            while len(self._closed) > 4096:
                self._closed.popitem(last=False)

    def fail_all(self, error: SessionFailed) -> None:
        with self._lock:
            inboxes = list(self._inboxes.values())
        for inbox in inboxes:
            inbox.fail(error)


class PeerTransportServicer(transport_pb2_grpc.PeerTransportServicer):
    """Translates ``PeerTransport`` calls to :class:`Inboxes`; nothing else."""

    def __init__(self, rank: int, inboxes: Inboxes, on_stream_lost: Callable[[str], None]) -> None:
        self.rank = rank
        self.inboxes = inboxes
        self.on_stream_lost = on_stream_lost

    def _check_sender(self, context: grpc.ServicerContext) -> None:
        """With mutual TLS only the other party's certificate may send frames."""
        role = peer_role(context)
        if role is not None and role != f"party{1 - self.rank}":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{role} is not this party's peer")

    def Send(self, request: transport_pb2.Frame, context: grpc.ServicerContext) -> transport_pb2.Ack:
        self._check_sender(context)
        try:
            self.inboxes.deliver(request)
        except TransportError as exc:
            context.abort(exc.code, str(exc))
        return transport_pb2.Ack(frames=1)

    def Stream(self, request_iterator: Iterator[transport_pb2.Frame], context: grpc.ServicerContext) -> transport_pb2.Ack:
        self._check_sender(context)
        count = 0
        clean = False
        try:
            for frame in request_iterator:
                self.inboxes.deliver(frame)
                count += 1
            clean = True
        except TransportError as exc:
            context.abort(exc.code, str(exc))
        except grpc.RpcError:
            pass
        finally:
            if not clean:
                self.on_stream_lost(f"the stream from the peer broke after {count} frames")
        return transport_pb2.Ack(frames=count)

    def Ping(self, request: transport_pb2.PingRequest, context: grpc.ServicerContext) -> transport_pb2.PingReply:
        return transport_pb2.PingReply(rank=self.rank)


# -- sending -----------------------------------------------------------------

_CLOSE = object()


class PeerLink:
    """The client side: frames to the peer's ``PeerTransport``, in order, shaped."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        mode: Mode,
        shape: NetworkShape,
        limits: Limits,
        on_broken: Callable[[str], None],
        expected_role: str = "party1",
    ) -> None:
        """With ``credentials``, the handshake accepts only a server certificate of ``expected_role`` (the peer's)."""
        if mode not in ("stream", "unary"):
            raise ValueError(f"unknown transport mode {mode!r}")
        options = KEEPALIVE_OPTIONS + [
            ("grpc.max_send_message_length", limits.max_frame_bytes + GRPC_FRAME_OVERHEAD),
            ("grpc.max_receive_message_length", 1 << 20),
        ]
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = secure_channel(target, credentials, expected_role, options=options)
        self.stub = transport_pb2_grpc.PeerTransportStub(self.channel)
        # the same two methods, taking frames pre-serialized by encode_tensor_frames (or as messages)
        self._send_call = self.channel.unary_unary(SEND_METHOD, request_serializer=_wire, response_deserializer=transport_pb2.Ack.FromString)
        self._stream_call = self.channel.stream_unary(STREAM_METHOD, request_serializer=_wire, response_deserializer=transport_pb2.Ack.FromString)
        self.mode = mode
        self.shaper = Shaper(shape)
        self.on_broken = on_broken
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._call: grpc.Future | None = None
        self._closing = False

    def send(self, frames: Iterable[bytes | transport_pb2.Frame], deadline: float) -> None:
        """Send frames (serialized, or messages) in order; in stream mode this returns before they arrive
        (each frame is queued as soon as ``frames`` yields it).

        The shaper charges each frame its serialized size."""
        if self.mode == "unary":
            self._send_unary(frames, deadline)
            return
        with self._lock:
            q = self._stream_queue()
            for frame in frames:
                q.put((frame, self.shaper.release_time(_size(frame))))

    def _send_unary(self, frames: Iterable[bytes | transport_pb2.Frame], deadline: float) -> None:
        for frame in frames:
            sleep_until(self.shaper.release_time(_size(frame)))
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise SessionFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while sending to the peer")
            try:
                self._send_call(frame, timeout=timeout, wait_for_ready=True)
            except grpc.RpcError as exc:
                raise SessionFailed(exc.code(), f"sending to the peer failed: {exc.details()}") from exc

    def _stream_queue(self) -> queue.SimpleQueue:
        if self._queue is None:
            q: queue.SimpleQueue = queue.SimpleQueue()
            call = self._stream_call.future(_drain(q), wait_for_ready=True)
            call.add_done_callback(lambda f, q=q: self._stream_done(f, q))
            self._queue, self._call = q, call
        return self._queue

    def reset(self) -> None:
        """Drop the current stream (the peer is gone); the next send opens a new one."""
        with self._lock:
            call, self._queue, self._call = self._call, None, None
        if call is not None:
            call.cancel()

    def _stream_done(self, call: grpc.Future, q: queue.SimpleQueue) -> None:
        with self._lock:
            current = self._queue is q
            if current:
                self._queue, self._call = None, None
        if self._closing or not current:
            return  # closed or reset on purpose: not news
        try:
            error = call.exception()
        except grpc.FutureCancelledError:
            error = None
        reason = f"the stream to the peer ended: {error.details() if isinstance(error, grpc.RpcError) else error}"
        logger.warning("%s", reason)
        self.on_broken(reason)

    def ping(self, timeout: float) -> bool:
        try:
            self.stub.Ping(transport_pb2.PingRequest(), timeout=timeout)
            return True
        except grpc.RpcError:
            return False

    def close(self) -> None:
        self._closing = True
        with self._lock:
            if self._queue is not None:
                self._queue.put(_CLOSE)
            call = self._call
        if call is not None:
            try:
                call.result(timeout=2.0)
            except (grpc.RpcError, grpc.FutureTimeoutError, grpc.FutureCancelledError):
                call.cancel()
        self.channel.close()


def _size(frame: bytes | transport_pb2.Frame) -> int:
    return len(frame) if isinstance(frame, bytes) else frame.ByteSize()


def _drain(q: queue.SimpleQueue) -> Iterator[bytes | transport_pb2.Frame]:
    """The request iterator of a stream: frames in order, each held until its release time."""
    while True:
        item = q.get()
        if item is _CLOSE:
            return
        frame, release = item
        sleep_until(release)
        yield frame


# -- endpoint and sessions ----------------------------------------------------


class Session:
    """One session's ordered channel to the peer: tensors out, tensors in, a deadline."""

    def __init__(self, endpoint: "Endpoint", session_id: str, deadline: float) -> None:
        self.endpoint = endpoint
        self.session_id = session_id
        self.deadline = deadline
        self.rank = endpoint.rank
        self.inbox = endpoint.inboxes.open(session_id)
        self._seq = 0
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.messages_sent = 0
        self.messages_received = 0
        self._aside: dict[str, collections.deque[Message]] = {}  # kind -> messages that came while the other kind was awaited
        self._aside_count = 0
        self._aside_bytes = 0

    @property
    def bytes_received(self) -> int:
        return self.inbox.bytes_received

    def send_tensor(self, tag: str, tensor: torch.Tensor) -> None:
        if self.inbox.failure is not None:
            raise self.inbox.failure
        with self._lock:
            chunk = min(SEND_CHUNK_BYTES, self.endpoint.limits.max_frame_bytes)
            count, frames = iter_tensor_frames(self.session_id, self._seq, self.rank, tag, tensor, chunk)
            self._seq += count
            self.endpoint.link.send(frames, self.deadline)  # queues each frame as it is made
        self.bytes_sent += tensor.numel() * tensor.element_size()
        self.messages_sent += 1

    def recv_tensor(self, tag: str) -> torch.Tensor:
        """The next message of ``tag``'s kind (:func:`tag_kind`), which must carry ``tag``.

        Each kind is received in the peer's sending order. A message of the other kind that comes first is
        kept aside for a later receive of its kind, at most ``Limits.max_aside_messages`` messages and
        ``max_aside_bytes`` bytes (beyond that the session fails with RESOURCE_EXHAUSTED); a message of
        the same kind with another tag fails the session (INVALID_ARGUMENT), as does anything else that
        breaks the protocol. One thread receives on a session at a time."""
        message = self._take_aside(tag) if self._aside_count else None
        if message is None:
            message = self.inbox.get(self.deadline)
            if message.tag != tag:
                message = self._sort_out(tag, message)
        self.messages_received += 1
        return message.tensor

    def _sort_out(self, tag: str, message: Message) -> Message:
        """``message`` came while a ``tag`` message was awaited: keep it aside if it is of the other kind, and
        go on until the awaited one comes."""
        want = tag_kind(tag)
        while message.tag != tag:
            kind = tag_kind(message.tag)
            if kind == want:
                self._fail(grpc.StatusCode.INVALID_ARGUMENT, f"expected a {tag!r} message, got {message.tag!r}")
            self._put_aside(kind, message, tag)
            message = self.inbox.get(self.deadline)
        return message

    def _put_aside(self, kind: str, message: Message, awaited: str) -> None:
        nbytes = message.tensor.numel() * message.tensor.element_size()
        limits = self.endpoint.limits
        if self._aside_count + 1 > limits.max_aside_messages or self._aside_bytes + nbytes > limits.max_aside_bytes:
            self._fail(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"while waiting for a {awaited!r} message, more than {limits.max_aside_messages} messages or "
                f"{limits.max_aside_bytes} bytes of the other kind came (the last: {message.tag!r}, {nbytes} bytes); "
                "the peer does not follow the same protocol",
            )
        self._aside.setdefault(kind, collections.deque()).append(message)
        self._aside_count += 1
        self._aside_bytes += nbytes

    def _take_aside(self, tag: str) -> Message | None:
        """The oldest message kept aside of ``tag``'s kind (None if there is none), which must carry ``tag``."""
        if self.inbox.failure is not None:
            raise self.inbox.failure
        kept = self._aside.get(tag_kind(tag))
        if not kept:
            return None
        message = kept.popleft()
        self._aside_count -= 1
        self._aside_bytes -= message.tensor.numel() * message.tensor.element_size()
        if message.tag != tag:
            self._fail(grpc.StatusCode.INVALID_ARGUMENT, f"expected a {tag!r} message, got {message.tag!r}")
        return message

    @property
    def aside(self) -> tuple[int, int]:
        """Messages and bytes kept aside now (received ahead of a receive of their kind)."""
        return self._aside_count, self._aside_bytes

    def _fail(self, code: grpc.StatusCode, what: str) -> None:
        error = SessionFailed(code, f"session {self.session_id}: {what}")
        self.abort(str(error))
        raise error

    def abort(self, reason: str) -> None:
        """Fail this session here and tell the peer (best effort)."""
        self.inbox.fail(SessionFailed(grpc.StatusCode.ABORTED, f"session {self.session_id} aborted: {reason}"))
        frame = transport_pb2.Frame(session_id=self.session_id, src_rank=self.rank, kind=transport_pb2.FRAME_KIND_ABORT, reason=reason[:200])
        try:
            self.endpoint.link.send([frame], time.monotonic() + 1.0)
        except TransportError:
            pass

    def close(self) -> None:
        self.endpoint.inboxes.close(self.session_id)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Endpoint:
    """One party's transport: the ``PeerTransport`` server and the link to the peer."""

    def __init__(
        self,
        rank: int,
        listen: str,
        peer: str,
        server_credentials: grpc.ServerCredentials | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        mode: Mode = "stream",
        shape: NetworkShape = NetworkShape(),
        limits: Limits = Limits(),
        register: Callable[[grpc.Server], None] | None = None,
    ) -> None:
        """Serve ``PeerTransport`` on ``listen`` (plus whatever ``register`` adds to the same server) and link to ``peer``."""
        if rank not in (0, 1):
            raise ValueError("rank must be 0 or 1")
        tune_allocator()
        self.rank = rank
        self.limits = limits
        self.inboxes = Inboxes(limits)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"party{rank}"),
            options=SERVER_PING_OPTIONS
            + [("grpc.max_receive_message_length", limits.max_frame_bytes + GRPC_FRAME_OVERHEAD), ("grpc.so_reuseport", 0)],
        )
        add_transport_servicer(self.server, PeerTransportServicer(rank, self.inboxes, self._peer_lost))
        if register is not None:
            register(self.server)
        self.port = bind(self.server, listen, server_credentials)
        self.server.start()
        self.peer = peer
        self.link = PeerLink(peer, channel_credentials, mode, shape, limits, self._peer_lost, expected_role=f"party{1 - rank}")

    def _peer_lost(self, reason: str) -> None:
        """The peer went away: fail every open session, and reconnect for the next one."""
        if hasattr(self, "link"):
            self.link.reset()
        self.inboxes.fail_all(SessionFailed(grpc.StatusCode.UNAVAILABLE, f"peer connection lost: {reason}"))

    def session(self, session_id: str, timeout_s: float | None = None, deadline_unix_ms: int | None = None) -> Session:
        """Open a session that ends ``timeout_s`` from now, or at an absolute Unix deadline."""
        if not session_id or len(session_id) > MAX_SESSION_ID_LEN:
            raise ValueError(f"session_id must be 1..{MAX_SESSION_ID_LEN} characters")
        if deadline_unix_ms is not None:
            timeout_s = deadline_unix_ms / 1000.0 - time.time()
        if timeout_s is None:
            raise ValueError("a session needs a timeout or a deadline")
        return Session(self, session_id, time.monotonic() + timeout_s)

    def peer_reachable(self, timeout: float = 1.0) -> bool:
        return self.link.ping(timeout)

    def close(self) -> None:
        self.link.close()
        self.server.stop(grace=0.5).wait()


def add_transport_servicer(server: grpc.Server, servicer: PeerTransportServicer) -> None:
    """``PeerTransport`` as transport.proto defines it; its ``Stream`` frames are parsed by :func:`parse_frame`
    (the same message, the data not copied out of the received bytes)."""
    handlers = {
        "Send": grpc.unary_unary_rpc_method_handler(
            servicer.Send, request_deserializer=transport_pb2.Frame.FromString, response_serializer=transport_pb2.Ack.SerializeToString),
        "Stream": grpc.stream_unary_rpc_method_handler(
            servicer.Stream, request_deserializer=parse_frame, response_serializer=transport_pb2.Ack.SerializeToString),
        "Ping": grpc.unary_unary_rpc_method_handler(
            servicer.Ping, request_deserializer=transport_pb2.PingRequest.FromString,
            response_serializer=transport_pb2.PingReply.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("mpcvit.transport.v1.PeerTransport", handlers),))


def bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind ``host:port`` (port 0 = a free port); return the port."""
    port = server.add_secure_port(address, credentials) if credentials is not None else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not listen on {address}")
    return port
