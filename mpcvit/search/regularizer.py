"""The MPC-cost regulariser: expected secure latency of the relaxed architecture.

With c_{l,h,k} the measured latency of head h of layer l computing candidate k on the
chosen network, w_{l,h,k} the relaxed mixing weights (two-way: w = (alpha, 1 - alpha)),
a_{l,u} the latency of GeLU unit u of layer l (a layer, or one token's share of a layer)
over its identity, and beta_{l,u} its relaxation weight:

    E[lat] = sum_{l,h,k} w_{l,h,k} c_{l,h,k} + sum_{l,u} beta_{l,u} a_{l,u}
    R      = lambda * E[lat] / lat_ref,    lat_ref = sum_{l,h} max_k c_{l,h,k} + sum_{l,u} a_{l,u}

so dR / d alpha_{l,h} = lambda (c_relu - c_scale) / lat_ref: each head is pushed toward the
cheaper choice in proportion to the measured cost difference of its two choices, and
lambda is dimensionless (a fraction of the searchable latency).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mpcvit.search.costs import CostModel
from mpcvit.search.relaxed import RelaxedViT


@dataclass(frozen=True)
class CostTerms:
    """Per-candidate head latencies (L, H, K) and per-unit GeLU latencies (L, U) on one network (seconds)."""

    head: torch.Tensor
    act: torch.Tensor | None
    network: str

    @property
    def reference(self) -> float:
        ref = float(self.head.max(dim=-1).values.sum())
        if self.act is not None:
            ref += float(self.act.sum())
        return ref

    def to_dict(self) -> dict[str, object]:
        return {
            "network": self.network,
            "head_seconds": self.head.tolist(),
            "act_unit_seconds": None if self.act is None else self.act.tolist(),
        }


def cost_terms(model: RelaxedViT, costs: CostModel, network: str) -> CostTerms:
    """Look up every candidate's latency for ``model``'s shape on ``network``."""
    spec = model.spec
    L, H = spec.depth, spec.num_heads
    per_kind = torch.tensor([costs.head_cost(k, spec, network) for k in model.candidates])  # (K,)
    head = per_kind.expand(L, H, -1).clone()  # (L, H, K)
    act = None
    if model.act_mode != "none":
        N = spec.num_tokens
        rows = []
        for layer in range(L):
            gain = costs.act_cost(spec.act[layer], spec, N, network) - costs.act_cost("identity", spec, N, network)
            gain = max(gain, 0.0)
            rows.append([gain] if model.act_mode == "layer" else [gain / N] * N)
        act = torch.tensor(rows)  # (L, U)
    return CostTerms(head, act, network)


def expected_latency(model: RelaxedViT, terms: CostTerms) -> torch.Tensor:
    """Differentiable E[lat] of the searchable parts (seconds)."""
    lat = (model.head_weights() * terms.head).sum()
    betas = model.act_betas()
    if betas is not None and terms.act is not None:
        lat = lat + (betas * terms.act).sum()
    return lat


def cost_regulariser(model: RelaxedViT, terms: CostTerms, lam: float) -> torch.Tensor:
    """lambda * E[lat] / lat_ref (see the module docstring)."""
    return lam * expected_latency(model, terms) / max(terms.reference, 1e-12)
