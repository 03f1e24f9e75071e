"""Deriving a discrete architecture (an ``ArchSpec``) from searched alphas / betas.

Two rules:

- **ratio mu** (the paper's): rank all L x H heads over all layers by their score (two-way:
  alpha; three-way: 1 - w_scale), keep the top round(mu L H) as their preferred expensive
  kind (ReLU-softmax; three-way: the larger of w_softmax, w_relu), the rest scaling. GeLU
  units (layers or tokens) keep GeLU when beta >= 0.5, or the top ``act_mu`` fraction.
- **latency budget** on a network: start from the cheapest architecture (every head
  scaling, every searched GeLU the identity) and upgrade units greedily in order of
  accuracy proxy (alpha or beta) per second of extra cost, keeping an upgrade only while
  the whole architecture's estimated latency stays within the budget.

Layers whose GeLU goes on every token become linear MLPs (``act = identity``); the
runtime fuses their two linears (``ArchSpec.mlp_is_linear``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpcvit.models.spec import ArchSpec
from mpcvit.search.costs import CostModel

RESULT_FILE = "alphas.json"


@dataclass(frozen=True)
class SearchResult:
    """What a search leaves behind: base spec, candidates and the architecture weights."""

    base: ArchSpec
    candidates: tuple[str, ...]
    act_mode: str
    head_weights: list[list[list[float]]]  # (L, H, K)
    betas: list[list[float]] | None  # (L, U)
    info: dict[str, Any]

    def head_score(self, layer: int, head: int) -> float:
        """Accuracy proxy of keeping the head expensive: the weight off the cheapest (scaling) candidate."""
        w = self.head_weights[layer][head]
        return 1.0 - w[self.candidates.index("scale")] if "scale" in self.candidates else max(w)

    def head_upgrade(self, layer: int, head: int) -> str:
        """The expensive kind a kept head takes: the heaviest-weighted non-scaling candidate."""
        w = self.head_weights[layer][head]
        options = [(w[i], -i, k) for i, k in enumerate(self.candidates) if k != "scale"]
        return max(options)[2]

    def cheap_kind(self) -> str:
        return "scale" if "scale" in self.candidates else self.candidates[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_spec": self.base.to_dict(),
            "candidates": list(self.candidates),
            "act_mode": self.act_mode,
            "head_weights": self.head_weights,
            "betas": self.betas,
            **self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchResult":
        try:
            base = ArchSpec.from_dict(d["base_spec"])
            result = cls(
                base=base,
                candidates=tuple(d["candidates"]),
                act_mode=str(d["act_mode"]),
                head_weights=d["head_weights"],
                betas=d.get("betas"),
                info={k: v for k, v in d.items() if k not in ("base_spec", "candidates", "act_mode", "head_weights", "betas")},
            )
        except KeyError as exc:
            raise ValueError(f"search result lacks {exc}") from exc
        L, H = base.depth, base.num_heads
        if len(result.head_weights) != L or any(len(r) != H for r in result.head_weights):
            raise ValueError(f"search result head weights are not {L} x {H}")
        return result


def load_search(directory: str | Path) -> SearchResult:
    p = Path(directory) / RESULT_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run 'mpcvit search --out {directory}' first")
    try:
        return SearchResult.from_dict(json.loads(p.read_text()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from exc


# -- building a spec from per-unit decisions --------------------------------------------


def _build(result: SearchResult, attn: list[list[str]], act_keep: list[list[bool]] | None, name_extra: dict[str, Any]) -> ArchSpec:
    base = result.base
    act, act_tokens = list(base.act), None
    if act_keep is not None:
        act, tokens = [], []
        for layer, keep in enumerate(act_keep):
            on = base.act[layer]
            if result.act_mode == "layer":
                act.append(on if keep[0] else "identity")
                tokens.append(None)
            else:
                kept = tuple(t for t, k in enumerate(keep) if k)
                if not kept:
                    act.append("identity")
                    tokens.append(None)
                else:
                    act.append(on)
                    tokens.append(None if len(kept) == len(keep) else kept)
        act_tokens = None if all(t is None for t in tokens) else tuple(tokens)
    variant = "mpcvitplus" if result.act_mode != "none" else "mpcvit"
    shape = base.name.partition("_")[2] if "_" in base.name else ""
    return base.with_(
        attn=attn,
        act=act,
        act_tokens=act_tokens,
        name=f"{variant}_{shape}" if shape else variant,
        extra={"search": {**name_extra, "candidates": list(result.candidates), "act_mode": result.act_mode}},
    )


def _ranked(scores: list[tuple[float, int, int]]) -> list[tuple[float, int, int]]:
    """Highest score first; ties broken by (layer, unit) order so derivations are deterministic."""
    return sorted(scores, key=lambda s: (-s[0], s[1], s[2]))


def derive_ratio(result: SearchResult, mu: float, act_mu: float | None = None) -> ArchSpec:
    """Keep the top ``mu`` fraction of heads (over all layers) expensive, the rest scaling."""
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    if act_mu is not None and not 0.0 <= act_mu <= 1.0:
        raise ValueError(f"act_mu must be in [0, 1], got {act_mu}")
    L, H = result.base.depth, result.base.num_heads
    n_keep = int(math.floor(mu * L * H + 0.5))
    attn = [[result.cheap_kind()] * H for _ in range(L)]
    heads = _ranked([(result.head_score(l, h), l, h) for l in range(L) for h in range(H)])
    for _, l, h in heads[:n_keep]:
        attn[l][h] = result.head_upgrade(l, h)
    act_keep = None
    if result.betas is not None:
        units = [(b, l, u) for l, row in enumerate(result.betas) for u, b in enumerate(row)]
        if act_mu is None:
            kept = {(l, u) for b, l, u in units if b >= 0.5}
        else:
            n_act = int(math.floor(act_mu * len(units) + 0.5))
            kept = {(l, u) for _, l, u in _ranked(units)[:n_act]}
        act_keep = [[(l, u) in kept for u in range(len(row))] for l, row in enumerate(result.betas)]
    return _build(result, attn, act_keep, {"rule": "ratio", "mu": mu, "act_mu": act_mu})


def derive_budget(result: SearchResult, budget_s: float, network: str, costs: CostModel) -> ArchSpec:
    """Greedy: upgrade heads / GeLU units by proxy per extra second while the latency fits ``budget_s``."""
    L, H = result.base.depth, result.base.num_heads
    attn = [[result.cheap_kind()] * H for _ in range(L)]
    act_keep = None if result.betas is None else [[False] * len(row) for row in result.betas]
    info = {"rule": "budget", "budget_s": budget_s, "network": network, "cost_source": costs.source}

    def latency() -> float:
        return costs.arch_latency(_build(result, attn, act_keep, info), network)

    floor = latency()
    if floor > budget_s:
        raise ValueError(f"budget {budget_s:.3f} s is below the cheapest architecture's {floor:.3f} s on {network}")
    base = result.base
    moves: list[tuple[float, str, int, int]] = []
    cheap = costs.head_cost(result.cheap_kind(), base, network)
    for l in range(L):
        for h in range(H):
            extra = max(costs.head_cost(result.head_upgrade(l, h), base, network) - cheap, 1e-9)
            moves.append((result.head_score(l, h) / extra, "head", l, h))
    if result.betas is not None:
        N = base.num_tokens
        for l, row in enumerate(result.betas):
            gain = costs.act_cost(base.act[l], base, N, network) - costs.act_cost("identity", base, N, network)
            unit = gain if result.act_mode == "layer" else gain / N
            for u, b in enumerate(row):
                moves.append((b / max(unit, 1e-9), "act", l, u))
    moves.sort(key=lambda m: (-m[0], m[1], m[2], m[3]))
    for _, what, l, u in moves:
        if what == "head":
            attn[l][u] = result.head_upgrade(l, u)
            if latency() > budget_s:
                attn[l][u] = result.cheap_kind()
        else:
            assert act_keep is not None
            act_keep[l][u] = True
            if latency() > budget_s:
                act_keep[l][u] = False
    spec = _build(result, attn, act_keep, {**info, "estimated_latency_s": latency()})
    return spec
