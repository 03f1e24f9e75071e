"""A CrypTen ``Communicator`` over the gRPC transport, for exactly two parties.

:class:`GrpcCommunicator` maps every collective CrypTen's protocols use onto
ordered messages of one :class:`parties.transport.Session`. With two parties
every collective is at most one exchange (one round):

* ``all_reduce(x)``: send own ``x_i``, receive ``x_{1-i}``, return
  ``x_0 (+) x_1`` (``+`` on Z_2^64 for SUM, XOR for BXOR, ...); one round,
  both directions at once. ``all_gather`` is the same exchange without the sum.
* ``reduce`` / ``gather`` / ``broadcast`` / ``scatter`` / ``send`` / ``recv``:
  one message in one direction.
* ``barrier``: an exchange of an empty tensor.
* Point-to-point messages (``send``, ``isend``, ``irecv``, ``recv``,
  ``send_obj``, ``recv_obj``) are matched apart from the collectives, as
  torch.distributed matches them: an ``irecv`` may stay pending across
  collectives (``Session.recv_tensor`` keeps what arrives early aside).
* ``all_reduce`` / ``reduce`` of a tensor that requires grad return a result
  with its autograd graph (the in-place shortcut is for the rest).
* ``send_obj`` / ``recv_obj`` / ``broadcast_obj``: plain values only (None,
  bool, int, float, str, lists, tuples, str-keyed dicts, ``torch.Size``, small
  tensors), as JSON in a uint8 tensor. Nothing received is unpickled.

Statistics are kept by CrypTen's own ``_logging`` decorator
(``crypten/communicator/communicator.py``) applied to methods of the same
names, so rounds, bytes and time are counted exactly as
``DistributedCommunicator`` counts them (when ``cfg.communicator.verbose``).
Wire bytes sent and received are counted on the session regardless.

Checks that ride along: :meth:`GrpcCommunicator.arm_check` arms a few
int64 words (the dealer material's commitment) that the next int64
exchange (``all_reduce``, ``all_gather``, ``barrier``) carries after the
payload; each party compares the peer's words with its own as the exchange
completes and both raise :class:`MaterialMismatch` when they differ. It
adds 16 bytes and no round: the first opening of a forward (or of a model
load) is one anyway. What the peer learns is the commitment it already
holds when both are honest. :meth:`GrpcCommunicator.settle_check` makes the
exchange on its own (one round) if nothing carried it, so a check is never
skipped.

Installing: :func:`installed` is the ONE place where CrypTen is made to use
it. Every CrypTen call site goes through ``crypten.communicator.get()``,
which the compat shim answers per thread
(``protocols.crypten_compat.thread_communicator``): inside the ``with``
block, the calling thread's CrypTen talks over this communicator, with its
own PRNG slots keyed with the peer over it (``crypten._setup_prng``: one
isend/irecv exchange and one broadcast), while other threads run other
sessions.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Callable, Iterator

import grpc
import torch
from torch.distributed import ReduceOp

from parties.transport import DTYPES, Session, SessionFailed, dtype_name
from protocols.crypten_compat import crypten, current_communicator, thread_communicator

from crypten.communicator.communicator import Communicator, _logging  # noqa: E402  (after the compat shim)

logger = logging.getLogger(__name__)

MAX_OBJ_BYTES = 1 << 20
P2P = "p2p"  # the tags of point-to-point messages (transport.tag_kind): matched apart from the collectives'
P2P_OBJ = "p2p.obj"

_REDUCERS: dict[Any, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    ReduceOp.SUM: torch.add,
    ReduceOp.PRODUCT: torch.mul,
    ReduceOp.MIN: torch.minimum,
    ReduceOp.MAX: torch.maximum,
    ReduceOp.BAND: torch.bitwise_and,
    ReduceOp.BOR: torch.bitwise_or,
    ReduceOp.BXOR: torch.bitwise_xor,
}


def _combine(combine: Callable[..., torch.Tensor], own: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """``own (op) theirs``, written into ``theirs`` (the received tensor is fresh and ours: no second allocation) unless
    autograd is involved: ``out=`` refuses an input that requires grad, and the result must then carry its graph."""
    if own.requires_grad or theirs.requires_grad:
        return combine(own, theirs)
    return combine(own, theirs, out=theirs)


def _reducer(op: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    for known, fn in _REDUCERS.items():
        if op == known:
            return fn
    raise ValueError(f"unsupported reduce op {op!r}")


class MaterialMismatch(SessionFailed):
    """The two parties' dealer material does not match (their commitments differ): nothing computed on it may be
    returned. DATA_LOSS, which the coordinator answers by retrying once on fresh material."""

    def __init__(self, what: str) -> None:
        super().__init__(grpc.StatusCode.DATA_LOSS,
                         f"dealer material mismatch: the two parties hold different {what} (a dealer restarted or was replaced "
                         "between their fetches, or a ticket was used differently); nothing was revealed, retry on fresh material")


class _Done:
    """A completed request (``isend``: the frame is queued in order)."""

    def wait(self) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class _PendingRecv:
    """An ``irecv``: receives into ``tensor`` when waited on, after every earlier irecv."""

    def __init__(self, comm: "GrpcCommunicator", tensor: torch.Tensor) -> None:
        self.comm = comm
        self.tensor = tensor
        self.done = False

    def wait(self) -> None:
        self.comm._complete_irecvs_through(self)

    def is_completed(self) -> bool:
        return self.done


class GrpcCommunicator(Communicator):
    """CrypTen's communicator interface over one gRPC :class:`Session` (world size 2)."""

    BYTES_PER_ELEMENT = 8

    def __init__(self, session: Session, name: str | None = None) -> None:
        self.session = session
        self.rank = session.rank
        self.world_size = 2
        self.peer = 1 - self.rank
        self._name = name or f"rank{self.rank}"
        self._pending_irecvs: list[_PendingRecv] = []
        self._check: tuple[torch.Tensor, str] | None = None  # words the next int64 exchange carries (arm_check)
        self.checks_passed = 0
        self.reset_communication_stats()

    # -- identity ------------------------------------------------------------
    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size

    def set_name(self, name: str) -> None:
        if not isinstance(name, str):
            raise ValueError("party name must be a string")
        self._name = name

    def get_name(self) -> str:
        return self._name

    def get_distributed_backend(self) -> str:
        return "grpc"

    # -- helpers -------------------------------------------------------------
    def _check_peer(self, other: int | None) -> None:
        if other is not None and other != self.peer:
            raise ValueError(f"rank {self.rank} can only talk to rank {self.peer}, not {other}")

    def _send(self, tag: str, tensor: torch.Tensor) -> None:
        self.session.send_tensor(tag, tensor)

    def _recv(self, tag: str, like: torch.Tensor | None = None) -> torch.Tensor:
        received = self.session.recv_tensor(tag)
        if like is None:
            return received
        if received.numel() != like.numel() or received.dtype != like.dtype:
            raise SessionFailed(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{tag}: peer sent {received.dtype}{tuple(received.shape)}, expected {like.dtype}{tuple(like.shape)}",
            )
        return received.reshape(like.shape)  # torch.distributed also only checks the element count

    def _exchange(self, tag: str, tensor: torch.Tensor) -> torch.Tensor:
        """One round: send own tensor, receive the peer's (same shape and dtype); carries an armed check."""
        if self._check is not None and tensor.dtype == torch.int64:
            (own, what), self._check = self._check, None
            n = own.numel()
            both = torch.cat([tensor.reshape(-1), own])
            self._send(tag, both)
            received = self._recv(tag, both)
            if not torch.equal(received[-n:], own):
                raise MaterialMismatch(what)
            self.checks_passed += 1
            return received[:-n].reshape(tensor.shape)
        self._send(tag, tensor)
        return self._recv(tag, tensor)

    # -- material checks -----------------------------------------------------
    def arm_check(self, commitment: bytes, what: str) -> None:
        """Have the next int64 exchange carry ``commitment`` (a multiple of 8 bytes) and compare it with the peer's.

        Both parties must arm at the same point of the same data-oblivious
        protocol (both do: right after fetching the material the forward or load
        is about to use). Arming again before the check was carried replaces it.
        """
        if not commitment or len(commitment) % 8:
            raise ValueError("a check is a non-empty multiple of 8 bytes")
        self._check = (torch.frombuffer(bytearray(commitment), dtype=torch.int64).clone(), what)

    def settle_check(self) -> None:
        """Make the armed check's exchange now if no exchange carried it (one round; never needed by a real forward)."""
        if self._check is not None:
            self._exchange("check", torch.empty(0, dtype=torch.int64))

    @property
    def check_pending(self) -> bool:
        return self._check is not None

    def _exchange_batch(self, tag: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """One round for a list: packed into one message per dtype, in order."""
        if len({t.dtype for t in tensors}) != 1:
            return [self._exchange(tag, t) for t in tensors]
        flat = torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.empty(0, dtype=torch.int64)
        theirs = self._exchange(tag, flat)
        return [part.reshape(t.shape) for part, t in zip(theirs.split([t.numel() for t in tensors]), tensors)]

    def _complete_irecvs_through(self, request: _PendingRecv | None) -> None:
        """Finish pending irecvs in posting order, up to ``request`` (all of them for None)."""
        while self._pending_irecvs:
            pending = self._pending_irecvs.pop(0)
            pending.tensor.copy_(self._recv(P2P, pending.tensor))
            pending.done = True
            if pending is request:
                return

    # -- point to point ------------------------------------------------------
    @_logging
    def send(self, tensor: torch.Tensor, dst: int) -> None:
        """Send ``tensor`` to ``dst``; zero rounds of waiting here, one message."""
        self._check_peer(dst)
        self._send(P2P, tensor)

    @_logging
    def recv(self, tensor: torch.Tensor, src: int | None = None) -> torch.Tensor:
        """Receive a tensor shaped like ``tensor`` from ``src``; returns a new tensor."""
        self._check_peer(src)
        self._complete_irecvs_through(None)
        return self._recv(P2P, tensor)

    @_logging
    def isend(self, tensor: torch.Tensor, dst: int) -> _Done:
        self._check_peer(dst)
        self._send(P2P, tensor)
        return _Done()

    @_logging
    def irecv(self, tensor: torch.Tensor, src: int | None = None) -> _PendingRecv:
        """Receive into ``tensor`` in place when the request is waited on."""
        self._check_peer(src)
        request = _PendingRecv(self, tensor)
        self._pending_irecvs.append(request)
        return request

    # -- collectives ---------------------------------------------------------
    @_logging
    def scatter(self, scatter_list: list[torch.Tensor], src: int, size: Any = None, device: Any = None) -> torch.Tensor:
        """``src`` keeps its own entry and sends the peer's: one message."""
        if self.rank == src:
            self._send("scatter", scatter_list[self.peer])
            return scatter_list[self.rank]
        if size is None:
            size = scatter_list[self.rank].size()
        return self._recv("scatter", torch.empty(size, dtype=torch.long))

    @_logging
    def reduce(self, input: Any, dst: int, op: Any = ReduceOp.SUM, batched: bool = False) -> Any:
        """The non-``dst`` party sends, ``dst`` combines: one message."""
        combine = _reducer(op)
        tensors = input if batched else [input]
        if self.rank != dst:
            self._send_batch("reduce", tensors)
            return None
        theirs = self._recv_batch("reduce", tensors)
        result = [_combine(combine, own, other) for own, other in zip(tensors, theirs)]
        return result if batched else result[0]

    @_logging
    def all_reduce(self, input: Any, op: Any = ReduceOp.SUM, batched: bool = False) -> Any:
        """Both parties send their tensor and combine it with the peer's: one round."""
        combine = _reducer(op)
        if batched:
            theirs = self._exchange_batch("all_reduce", list(input))
            return [combine(own, other) for own, other in zip(input, theirs)]
        return _combine(combine, input, self._exchange("all_reduce", input))

    @_logging
    def gather(self, tensor: torch.Tensor, dst: int) -> list[torch.Tensor | None]:
        """``dst`` gets both parties' tensors in rank order, each a fresh tensor (its own is a copy, as
        torch.distributed's are: a caller may change the list's entries without touching ``tensor``)."""
        if self.rank != dst:
            self._send("gather", tensor)
            return [None]
        other = self._recv("gather", tensor)
        return [tensor.clone(), other] if self.rank == 0 else [other, tensor.clone()]

    @_logging
    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Both parties' tensors in rank order, each fresh (the caller's own is copied, never returned)."""
        other = self._exchange("all_gather", tensor)
        return [tensor.clone(), other] if self.rank == 0 else [other, tensor.clone()]

    @_logging
    def broadcast(self, input: Any, src: int, group: Any = None, batched: bool = False) -> Any:
        """``src`` sends, the other overwrites its ``input`` in place (as torch.distributed does)."""
        tensors = input if batched else [input]
        if self.rank == src:
            self._send_batch("broadcast", tensors)
        else:
            for own, received in zip(tensors, self._recv_batch("broadcast", tensors)):
                own.data.copy_(received)
        return input

    @_logging
    def barrier(self) -> None:
        self._exchange("barrier", torch.empty(0, dtype=torch.int64))

    def _send_batch(self, tag: str, tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            self._send(tag, tensor)

    def _recv_batch(self, tag: str, like: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self._recv(tag, t) for t in like]

    # -- plain objects -------------------------------------------------------
    @_logging
    def send_obj(self, obj: Any, dst: int, group: Any = None) -> None:
        """Point to point, as ``send``: ordered with send/isend, apart from collectives."""
        self._check_peer(dst)
        self._send(P2P_OBJ, encode_obj(obj))

    @_logging
    def recv_obj(self, src: int, group: Any = None) -> Any:
        self._check_peer(src)
        self._complete_irecvs_through(None)
        return decode_obj(self._recv(P2P_OBJ))

    @_logging
    def broadcast_obj(self, obj: Any, src: int, group: Any = None) -> Any:
        if self.rank == src:
            self._send("obj", encode_obj(obj))
            return obj
        return decode_obj(self._recv("obj"))

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    def is_initialized(cls) -> bool:
        return isinstance(current_communicator(), GrpcCommunicator)

    @classmethod
    def get(cls) -> "GrpcCommunicator":
        comm = current_communicator()
        if not isinstance(comm, GrpcCommunicator):
            raise RuntimeError("no gRPC communicator in this thread; run inside parties.communicator.installed(comm)")
        return comm

    def wire_stats(self) -> dict[str, int]:
        """Payload bytes and messages that really crossed the wire in this session."""
        return {
            "bytes_sent": self.session.bytes_sent,
            "bytes_received": self.session.bytes_received,
            "messages_sent": self.session.messages_sent,
            "messages_received": self.session.messages_received,
        }


# -- plain-object codec (no pickle) ---------------------------------------------


def _to_json(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Size):
        return {"__size__": [int(s) for s in obj]}
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": dtype_name(obj.dtype), "shape": list(obj.shape), "values": obj.reshape(-1).tolist()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_json(x) for x in obj]}
    if isinstance(obj, list):
        return [_to_json(x) for x in obj]
    if isinstance(obj, dict) and all(isinstance(k, str) and not k.startswith("__") for k in obj):
        return {k: _to_json(v) for k, v in obj.items()}
    raise ValueError(f"cannot send an object of type {type(obj).__name__} between parties (only plain values; nothing is pickled)")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(x) for x in value]
    if not isinstance(value, dict):
        return value
    if "__size__" in value:
        return torch.Size(int(s) for s in value["__size__"])
    if "__tuple__" in value:
        return tuple(_from_json(x) for x in value["__tuple__"])
    if "__tensor__" in value:
        if value["__tensor__"] not in DTYPES:
            raise ValueError(f"unsupported tensor dtype {value['__tensor__']!r}")
        return torch.tensor(value["values"], dtype=DTYPES[value["__tensor__"]][0]).reshape(value["shape"])
    return {k: _from_json(v) for k, v in value.items()}


def encode_obj(obj: Any) -> torch.Tensor:
    """A plain value as UTF-8 JSON in a uint8 tensor."""
    data = json.dumps(_to_json(obj), separators=(",", ":")).encode()
    if len(data) > MAX_OBJ_BYTES:
        raise ValueError(f"object of {len(data)} bytes is larger than {MAX_OBJ_BYTES}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_obj(tensor: torch.Tensor) -> Any:
    if tensor.dtype != torch.uint8 or tensor.dim() != 1 or tensor.numel() > MAX_OBJ_BYTES:
        raise SessionFailed(grpc.StatusCode.INVALID_ARGUMENT, "an object message must be a 1-d uint8 tensor of at most 1 MiB")
    try:
        return _from_json(json.loads(tensor.numpy().tobytes().decode()))
    except (ValueError, KeyError, TypeError) as exc:
        raise SessionFailed(grpc.StatusCode.INVALID_ARGUMENT, f"malformed object message: {exc}") from exc


# -- the one place CrypTen is pointed at it -------------------------------------


@contextlib.contextmanager
def installed(comm: GrpcCommunicator, setup_prng: bool = True) -> Iterator[GrpcCommunicator]:
    """``with installed(comm):`` CrypTen computes over ``comm`` inside the block, in the calling thread only.

    With ``setup_prng`` (default) the thread gets its own CrypTen generator
    slots, keyed with fresh keys agreed with the peer over ``comm``, as
    ``crypten.init()`` does over torch.distributed; they are dropped at the
    end. Other threads may run other sessions meanwhile
    (``protocols.crypten_compat.thread_communicator``).
    """
    with thread_communicator(comm, own_generators=setup_prng):
        if setup_prng:
            crypten._setup_prng()
        yield comm
