"""Planning a forward pass without talking to the peer.

The dealer's plan (the list of randomness requests of one forward pass) is
recorded by running the forward once on throwaway values. That dry run must
exchange nothing with the peer: an opening made under fixed or public
randomness reveals the value it masks (party 0's weight share minus a
known mask *is* its weight share). ``offline()`` makes
``crypten.communicator.get()`` return, in the calling thread only
(``protocols.crypten_compat.thread_communicator``), an
:class:`OfflineCommunicator` that answers every collective locally (the
"peer" contributes zeros), so the dry run computes garbage but sends nothing
and receives nothing. Every protocol of the runtime is data-oblivious (the
sequence of ops, shapes and randomness requests does not depend on values),
so the recorded plan is exact; the stand-in counts rounds and bytes with
CrypTen's own decorator, so a plan also knows the online cost it will have.

``DealerProvider.recording()`` refuses to run outside ``offline()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed import ReduceOp

from protocols.crypten_compat import crypten, current_communicator, thread_communicator

from crypten.communicator.communicator import Communicator, _logging  # noqa: E402  (after the compat shim)


class _Done:
    def wait(self) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class OfflineCommunicator(Communicator):
    """A two-party communicator that never communicates: the peer's contribution to every collective is zero."""

    BYTES_PER_ELEMENT = 8

    def __init__(self, rank: int) -> None:
        if rank not in (0, 1):
            raise ValueError(f"rank must be 0 or 1, got {rank}")
        self.rank = rank
        self.world_size = 2
        self.reset_communication_stats()

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_name(self) -> str:
        return f"offline-rank{self.rank}"

    def set_name(self, name: str) -> None:  # noqa: ARG002 - the stand-in has a fixed name
        return None

    def get_distributed_backend(self) -> str:
        return "offline"

    def _pair(self, own: torch.Tensor) -> list[torch.Tensor]:
        other = torch.zeros_like(own)
        return [own, other] if self.rank == 0 else [other, own]

    @_logging
    def send(self, tensor: torch.Tensor, dst: int) -> None:  # noqa: ARG002
        return None

    @_logging
    def recv(self, tensor: torch.Tensor, src: int | None = None) -> torch.Tensor:  # noqa: ARG002
        tensor.zero_()
        return tensor

    @_logging
    def isend(self, tensor: torch.Tensor, dst: int) -> _Done:  # noqa: ARG002
        return _Done()

    @_logging
    def irecv(self, tensor: torch.Tensor, src: int | None = None) -> _Done:  # noqa: ARG002
        tensor.zero_()
        return _Done()

    @_logging
    def scatter(self, scatter_list: list[torch.Tensor], src: int, size: Any = None, async_op: bool = False) -> torch.Tensor:  # noqa: ARG002
        return scatter_list[self.rank].clone() if self.rank == src else torch.zeros(size or scatter_list[0].size(), dtype=torch.long)

    @_logging
    def reduce(self, input: Any, dst: int, op: Any = ReduceOp.SUM, batched: bool = False) -> Any:  # noqa: A002, ARG002
        return [t.clone() for t in input] if batched else input.clone()

    @_logging
    def all_reduce(self, input: Any, op: Any = ReduceOp.SUM, batched: bool = False) -> Any:  # noqa: A002, ARG002
        return [t.clone() for t in input] if batched else input.clone()

    @_logging
    def gather(self, tensor: torch.Tensor, dst: int) -> list[torch.Tensor | None]:
        return self._pair(tensor) if self.rank == dst else [None]

    @_logging
    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return self._pair(tensor)

    @_logging
    def broadcast(self, input: Any, src: int, group: Any = None, batched: bool = False) -> Any:  # noqa: A002, ARG002
        if self.rank != src:
            for t in input if batched else [input]:
                t.zero_()
        return input

    @_logging
    def barrier(self) -> None:
        return None

    def send_obj(self, obj: Any, dst: int) -> None:  # noqa: ARG002
        return None

    def recv_obj(self, src: int) -> Any:  # noqa: ARG002
        raise RuntimeError("a dry run cannot receive an object from the peer")

    def broadcast_obj(self, obj: Any, src: int, group: Any = None) -> Any:  # noqa: ARG002
        if self.rank != src:
            raise RuntimeError("a dry run cannot receive an object from the peer")
        return obj


def is_offline() -> bool:
    """True inside ``offline()`` in this thread."""
    return isinstance(current_communicator(), OfflineCommunicator)


@contextlib.contextmanager
def offline(rank: int | None = None) -> Iterator[OfflineCommunicator]:
    """Inside the block, this thread's CrypTen talks to an :class:`OfflineCommunicator` (rank: the current one's)."""
    if is_offline():
        raise RuntimeError("already planning offline in this thread")
    if rank is None:
        rank = crypten.communicator.get().get_rank()
    with thread_communicator(OfflineCommunicator(rank)) as stand_in:
        yield stand_in


__all__ = ["OfflineCommunicator", "is_offline", "offline"]
