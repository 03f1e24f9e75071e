"""Per-op cost accounting of a secure forward pass: rounds, bytes and seconds from the communicator's counters.

``CostTracker.section(kind, layer)`` reads ``comm.get().get_communication_stats()``
before and after an op and adds the difference to the op kind's and the
layer's totals. CrypTen counts, per party, the ring elements it sends plus
those it receives (an all_reduce of n elements counts 2n, as in its docs);
``bytes`` keeps that figure (comparable with plain CrypTen's), and
``bytes_sent`` / ``bytes_received`` split it in half: every collective of the
runtime is symmetric between the two parties (openings), apart from CrypTen's
truncation-free 2PC path, so the split is exact for our ops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from protocols.crypten_compat import crypten

import crypten.communicator as comm  # noqa: E402


@dataclass
class OpCost:
    """Rounds, bytes (sent + received, one party) and seconds of one op or a sum of ops."""

    rounds: int = 0
    bytes: int = 0
    seconds: float = 0.0
    dealer_bytes: int = 0  # the dealer's material for this op, both parties together (from the plan's dry run)

    def add(self, other: "OpCost") -> None:
        self.rounds += other.rounds
        self.bytes += other.bytes
        self.seconds += other.seconds
        self.dealer_bytes += other.dealer_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "bytes": self.bytes, "seconds": round(self.seconds, 4), "dealer_bytes": self.dealer_bytes}


@dataclass
class CostReport:
    """Costs of one secure forward pass as one party counts them.

    ``rounds``: communication rounds (collective calls); ``bytes_sent`` and
    ``bytes_received``: online traffic with the peer; ``seconds``: wall time of
    the forward; ``per_op`` / ``per_layer``: the same split by op kind
    ("linear", "attention-softmax", "norm", "activation-gelu", "embed",
    "head", ...) and by layer ("embed", "layer0", ..., "head").
    ``dealer_bytes``: offline traffic (the dealer's corrections; rank 0), not
    part of the online figures.
    """

    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    per_op: dict[str, OpCost] = field(default_factory=dict)
    per_layer: dict[str, OpCost] = field(default_factory=dict)
    per_layer_op: dict[str, OpCost] = field(default_factory=dict)
    provider: str = "dealer"
    rank: int = 0
    batch_size: int = 1
    dealer_bytes: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_sent + self.bytes_received

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "bytes": self.bytes,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 4),
            "provider": self.provider,
            "rank": self.rank,
            "batch_size": self.batch_size,
            "dealer_bytes": self.dealer_bytes,
            "per_op": {k: v.to_dict() for k, v in self.per_op.items()},
            "per_layer": {k: v.to_dict() for k, v in self.per_layer.items()},
            "per_layer_op": {k: v.to_dict() for k, v in self.per_layer_op.items()},
        }


def _stats() -> tuple[int, int]:
    s = comm.get().get_communication_stats()
    return int(s["rounds"]), int(s["bytes"])


class CostTracker:
    """Accumulates per-op and per-layer costs over one forward pass (sections must not nest)."""

    def __init__(self, requests: list[Any] | None = None) -> None:
        self._requests = requests  # a provider's recording (a plan's dry run): each section's dealer bytes from it
        self.per_op: dict[str, OpCost] = {}
        self.per_layer: dict[str, OpCost] = {}
        self.per_layer_op: dict[str, OpCost] = {}  # "layer0/attention-relu" -> cost
        self._t0 = time.perf_counter()
        self._start = _stats()

    @contextmanager
    def section(self, kind: str, layer: str) -> Iterator[None]:
        r0, b0 = _stats()
        n0 = len(self._requests) if self._requests is not None else 0
        t0 = time.perf_counter()
        try:
            yield
        finally:
            r1, b1 = _stats()
            dealer = 0
            if self._requests is not None:
                dealer = sum(r.correction_bytes(0) + r.correction_bytes(1) for r in self._requests[n0:])
            cost = OpCost(r1 - r0, b1 - b0, time.perf_counter() - t0, dealer)
            self.per_op.setdefault(kind, OpCost()).add(cost)
            self.per_layer.setdefault(layer, OpCost()).add(cost)
            self.per_layer_op.setdefault(f"{layer}/{kind}", OpCost()).add(cost)

    def report(self, **fields: Any) -> CostReport:
        r1, b1 = _stats()
        total_bytes = b1 - self._start[1]
        return CostReport(
            rounds=r1 - self._start[0],
            bytes_sent=total_bytes // 2,
            bytes_received=total_bytes - total_bytes // 2,
            seconds=time.perf_counter() - self._t0,
            per_op=self.per_op,
            per_layer=self.per_layer,
            per_layer_op=self.per_layer_op,
            rank=comm.get().get_rank(),
            **fields,
        )


def ensure_counting() -> None:
    """Turn on the communicator's counters (they count only when ``cfg.communicator.verbose``)."""
    crypten.cfg.communicator.verbose = True
