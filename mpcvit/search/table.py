"""The measured cost source: ``results/cost_table.json`` through ``protocols.costs``.

Per head of attention kind k (table entry ``attention-<k>``: rounds once per layer in which
the kind appears, bytes / seconds per head), on a network with round-trip time RTT and
bandwidth BW, with H heads per layer:

    head_cost(k) = seconds_k + (bytes_k / 2) * 8 / BW + rounds_k * RTT / H

(the rounds shared by a layer's heads of one kind are split evenly among its H heads, their
share when every head of the layer takes that kind). Per layer activation k applied to n of
the N tokens (entry ``activation-<k>``, per layer, all tokens):

    act_cost(k, n) = rounds_k * RTT + (seconds_k + (bytes_k / 2) * 8 / BW) * n / N    (0 when n = 0)

A whole architecture's latency is ``protocols.costs.estimate(spec, network)["latency_s"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpcvit.models.spec import ArchSpec


class TableCostModel:
    """Costs measured from the project's secure runtime (``python -m protocols.costs``)."""

    source = "table"

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table

    @classmethod
    def load(cls, path: str | Path | None = None) -> "TableCostModel":
        from protocols.costs import load_cost_table

        return cls(load_cost_table(path))

    def _entry(self, spec: ArchSpec, op: str) -> dict[str, Any]:
        from protocols.costs import shape_key

        entries = self.table["entries"][shape_key(spec)]
        if op not in entries:
            raise ValueError(f"the cost table has no {op!r} entry for shape {shape_key(spec)}")
        return entries[op]

    @staticmethod
    def _network(network: str) -> Any:
        from protocols.costs import NETWORKS

        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; choose from {sorted(NETWORKS)}")
        return NETWORKS[network]

    def _volume_seconds(self, entry: dict[str, Any], network: str) -> float:
        net = self._network(network)
        return float(entry["seconds"]) + float(entry["bytes"]) / 2 * 8 / net.bandwidth_bps

    def head_cost(self, kind: str, spec: ArchSpec, network: str) -> float:
        entry = self._entry(spec, f"attention-{kind}")
        return self._volume_seconds(entry, network) + entry["rounds"] * self._network(network).rtt_s / spec.num_heads

    def act_cost(self, kind: str, spec: ArchSpec, n_tokens: int, network: str) -> float:
        if kind == "identity" or n_tokens <= 0:
            return 0.0
        entry = self._entry(spec, f"activation-{kind}")
        frac = n_tokens / spec.num_tokens
        return entry["rounds"] * self._network(network).rtt_s + self._volume_seconds(entry, network) * frac

    def arch_latency(self, spec: ArchSpec, network: str) -> float:
        from protocols.costs import estimate

        return float(estimate(spec, network, self.table)["latency_s"])
