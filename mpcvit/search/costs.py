"""MPC costs the search reads: per-head attention, per-layer activation, whole-architecture latency.

Latency of a protocol step on a network = compute + rounds x RTT + bytes / bandwidth
(DESIGN.md, "Cost model and networks"). The search needs three numbers:

- ``head_cost(kind, spec, network)``: seconds of one attention head of ``kind``
  (its score / mixing part, the part that differs between kinds) at ``spec``'s shape;
- ``act_cost(kind, spec, n_tokens, network)``: seconds of one layer's MLP activation of
  ``kind`` applied to ``n_tokens`` tokens (``mlp_dim`` elements each);
- ``arch_latency(spec, network)``: seconds of a whole secure forward pass.

Two sources implement them:

- ``TableCostModel``: the table measured from the project's secure runtime
  (``results/cost_table.json``, read through ``protocols.costs``). Used whenever
  it is importable; this is what every reported number uses.
- ``PlaceholderCostModel``: **a clearly-marked analytical placeholder** (CrypTen-like
  round and byte counts written down by hand, not measured) so the search works before
  the table exists and in tests that must not depend on it. Every output made with it
  says ``"cost_source": "placeholder"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

from mpcvit.models.spec import ArchSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Network:
    """A network setting: bandwidth (bit/s) and round-trip time (s)."""

    name: str
    bandwidth_bps: float
    rtt_s: float

    def seconds(self, rounds: float, bytes_: float, compute_s: float = 0.0) -> float:
        """compute + rounds x RTT + bytes / bandwidth."""
        return compute_s + rounds * self.rtt_s + 8.0 * bytes_ / self.bandwidth_bps


NETWORKS: dict[str, Network] = {
    "lan": Network("lan", 3e9, 0.3e-3),
    "wan": Network("wan", 400e6, 40e-3),
}


def get_network(name: str) -> Network:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from {sorted(NETWORKS)}")
    return NETWORKS[name]


class CostModel(Protocol):
    """What the search and derive need from a cost source (seconds on a named network)."""

    source: str

    def head_cost(self, kind: str, spec: ArchSpec, network: str) -> float: ...

    def act_cost(self, kind: str, spec: ArchSpec, n_tokens: int, network: str) -> float: ...

    def arch_latency(self, spec: ArchSpec, network: str) -> float: ...


# -- the placeholder (NOT measured) ------------------------------------------------------

ELEM = 8  # bytes of one 64-bit ring element
MULT = (1, 2 * ELEM)  # Beaver product: (rounds, bytes sent per element): open x - a and y - b
CMP = (7, 1024)  # comparison / ReLU sign via A2B adder (log2(64) + 1 rounds, ~1 KiB per element)
RECIP = (30, 20 * 2 * ELEM)  # Newton reciprocal: ~10 iterations of 2 products + exp initial guess
EXP = (8, 8 * 2 * ELEM)  # limit exp: 8 squarings
GELU = (12, 500)  # erf-based GeLU: polynomial + comparisons (rough)
COMPUTE_S_PER_BYTE = 2e-9  # local int64 work, crudely proportional to the traffic


@dataclass(frozen=True)
class StepCost:
    rounds: float
    bytes: float

    def __add__(self, other: "StepCost") -> "StepCost":
        return StepCost(self.rounds + other.rounds, self.bytes + other.bytes)

    def times(self, n: float) -> "StepCost":
        """n copies computed together (batched): bytes scale, rounds do not."""
        return StepCost(self.rounds, self.bytes * n)

    def seconds(self, network: Network) -> float:
        return network.seconds(self.rounds, self.bytes, self.bytes * COMPUTE_S_PER_BYTE)


def _op(cost: tuple[int, int], elements: float) -> StepCost:
    return StepCost(cost[0], cost[1] * elements)


def placeholder_head(kind: str, spec: ArchSpec) -> StepCost:
    """Hand-written (not measured) online cost of one head's attention mixing, per party."""
    N, D = spec.num_tokens, spec.head_dim
    nn_ = N * N
    scores = _op(MULT, 2 * N * D)  # Q K^T: open Q - A, K - B
    av = _op(MULT, N * N + N * D)  # P V
    if kind == "scale":
        return _op(MULT, 2 * N * D) + _op(MULT, N * D + D * D)  # K^T V then Q (K^T V)
    if kind == "relu":
        return scores + _op(CMP, nn_) + _op(MULT, nn_) + _op(RECIP, N) + _op(MULT, nn_) + av
    if kind == "softmax":
        levels = math.ceil(math.log2(N))
        max_ = StepCost(levels * (CMP[0] + MULT[0]), nn_ * (CMP[1] + MULT[1]))
        return scores + max_ + _op(EXP, nn_) + _op(RECIP, N) + _op(MULT, nn_) + av
    if kind == "2quad":
        return scores + _op(MULT, nn_) + _op(RECIP, N) + _op(MULT, nn_) + av
    if kind == "thex":
        order_rounds = int(math.log2(spec.thex_order))
        return scores + _op(CMP, nn_) + StepCost(order_rounds, order_rounds * 2 * ELEM * nn_) + _op(RECIP, N) + _op(MULT, nn_) + av
    raise ValueError(f"unknown attention kind {kind!r}")


def placeholder_act(kind: str, spec: ArchSpec, n_tokens: int) -> StepCost:
    """Hand-written (not measured) online cost of one layer's activation on ``n_tokens`` tokens."""
    n = n_tokens * spec.mlp_dim
    if kind == "identity" or n_tokens == 0:
        return StepCost(0, 0)
    if kind == "gelu":
        return _op(GELU, n)
    if kind == "relu":
        return _op(CMP, n) + _op(MULT, n)
    if kind == "quad":
        return _op(MULT, n)
    raise ValueError(f"unknown activation kind {kind!r}")


def _placeholder_layer(spec: ArchSpec, layer: int) -> StepCost:
    N, C, M = spec.num_tokens, spec.embed_dim, spec.mlp_dim
    norm = StepCost(RECIP[0] + 2, N * (RECIP[1] + 4 * ELEM * C))  # mean, variance, inverse sqrt
    if spec.norm == "affine":
        norm = StepCost(0, 0)
    qkv = _op(MULT, N * C + 3 * C * C)
    proj = _op(MULT, N * C + C * C)
    total = norm.times(2) + qkv + proj
    counts: dict[str, int] = {}
    for kind in spec.attn[layer]:
        counts[kind] = counts.get(kind, 0) + 1
    for kind, count in counts.items():  # heads of one kind: one batched op, rounds paid once
        total = total + placeholder_head(kind, spec).times(count)
    toks = spec.tokens_with_act(layer)
    n_tok = N if toks is None else len(toks)
    if spec.mlp_is_linear(layer):
        total = total + _op(MULT, N * C + C * C)  # fused fc2 . fc1
    else:
        total = total + _op(MULT, N * C + C * M) + placeholder_act(spec.act[layer], spec, n_tok) + _op(MULT, N * M + M * C)
    return total


class PlaceholderCostModel:
    """PLACEHOLDER cost source: analytical CrypTen-like counts, not measured. Replace with ``TableCostModel``."""

    source = "placeholder"

    def head_cost(self, kind: str, spec: ArchSpec, network: str) -> float:
        return placeholder_head(kind, spec).seconds(get_network(network))

    def act_cost(self, kind: str, spec: ArchSpec, n_tokens: int, network: str) -> float:
        return placeholder_act(kind, spec, n_tokens).seconds(get_network(network))

    def arch_latency(self, spec: ArchSpec, network: str) -> float:
        net = get_network(network)
        N, C = spec.num_tokens, spec.embed_dim
        total = _op(MULT, N * spec.patch_size**2 * spec.in_chans + C * spec.patch_size**2 * spec.in_chans)
        for layer in range(spec.depth):
            total = total + _placeholder_layer(spec, layer)
        total = total + _op(MULT, C + C * spec.num_classes)
        return total.seconds(net)


def get_cost_model(source: str = "auto") -> CostModel:
    """The measured table when available (``source`` "auto" or "table"), else the placeholder."""
    if source not in ("auto", "table", "placeholder"):
        raise ValueError(f"unknown cost source {source!r}; choose from auto, table, placeholder")
    if source == "placeholder":
        return PlaceholderCostModel()
    try:
        from mpcvit.search.table import TableCostModel

        return TableCostModel.load()
    except (ImportError, FileNotFoundError, KeyError, ValueError) as exc:
        if source == "table":
            raise ValueError(f"measured cost table not available: {exc}") from exc
        log.warning("measured cost table not available (%s); using the PLACEHOLDER cost model", exc)
        return PlaceholderCostModel()


def describe(model: CostModel) -> dict[str, Any]:
    return {"cost_source": model.source}
