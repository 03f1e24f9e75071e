"""The architecture spec: a model's shape and every MPC-relevant choice, as plain JSON.

``ArchSpec`` says which attention each head of each layer computes, which
activation each layer's MLP uses (and, for MPCViT+, on which tokens), and which
norm the blocks use. It is all a checkpoint's ``arch.json`` holds, and all that
party 1 needs to evaluate a model whose weights it never sees in plaintext.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

AttnKind = Literal["softmax", "relu", "scale", "2quad", "thex"]
ActKind = Literal["gelu", "quad", "relu", "identity"]
NormKind = Literal["layernorm", "affine"]
PoolKind = Literal["token", "avg"]

ATTN_KINDS: tuple[str, ...] = get_args(AttnKind)
ACT_KINDS: tuple[str, ...] = get_args(ActKind)
NORM_KINDS: tuple[str, ...] = get_args(NormKind)
POOL_KINDS: tuple[str, ...] = get_args(PoolKind)


@dataclass(frozen=True)
class ArchSpec:
    """Shape and per-head / per-layer choices of a ViT-Lite model.

    ``attn[l][h]`` is the attention kind of head ``h`` in layer ``l``.
    ``act[l]`` is the MLP activation of layer ``l``. ``act_tokens[l]``, when
    not None, lists the token indices (0 = class token) on which layer ``l``
    applies ``act[l]``; every other token passes through unchanged (identity):
    MPCViT+'s per-token GeLU linearisation. A layer whose activation is
    ``identity`` on every token has its two linear layers fused at export.

    ``pool`` says what the head reads: the class token's feature (``token``)
    or the mean of the patch tokens' features (``avg``, the class token left
    out, as timm's ``global_pool="avg"``). The final norm runs on every token
    before pooling, or on the pooled feature when ``norm_after_pool`` (timm's
    ``fc_norm``). ``norm_eps`` is the LayerNorm epsilon of the plaintext model
    (timm's ViTs use 1e-6).
    """

    img_size: int
    in_chans: int
    patch_size: int
    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    attn: tuple[tuple[str, ...], ...]
    act: tuple[str, ...]
    act_tokens: tuple[tuple[int, ...] | None, ...] | None = None
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    pool: str = "token"
    norm_after_pool: bool = False
    relu_eps: float = 1e-2
    quad_c: float = 5.0
    thex_order: int = 4
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # -- derived shape -------------------------------------------------------
    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2 + 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.img_size, self.img_size)

    # -- checks ----------------------------------------------------------------
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"invalid architecture spec: {msg}")

        for k in ("img_size", "in_chans", "patch_size", "num_classes", "embed_dim", "depth", "num_heads", "mlp_dim"):
            need(isinstance(getattr(self, k), int) and getattr(self, k) > 0, f"{k} must be a positive integer")
        need(self.img_size % self.patch_size == 0, "img_size must be a multiple of patch_size")
        need(self.embed_dim % self.num_heads == 0, "embed_dim must be a multiple of num_heads")
        need(len(self.attn) == self.depth, f"attn has {len(self.attn)} layers, depth is {self.depth}")
        for l, heads in enumerate(self.attn):
            need(len(heads) == self.num_heads, f"attn[{l}] has {len(heads)} heads, expected {self.num_heads}")
            for k in heads:
                need(k in ATTN_KINDS, f"attn[{l}] has unknown kind {k!r}; choose from {ATTN_KINDS}")
        need(len(self.act) == self.depth, f"act has {len(self.act)} layers, depth is {self.depth}")
        for l, k in enumerate(self.act):
            need(k in ACT_KINDS, f"act[{l}] is unknown kind {k!r}; choose from {ACT_KINDS}")
        if self.act_tokens is not None:
            need(len(self.act_tokens) == self.depth, "act_tokens needs one entry (or null) per layer")
            for l, toks in enumerate(self.act_tokens):
                if toks is None:
                    continue
                need(all(0 <= t < self.num_tokens for t in toks), f"act_tokens[{l}] has a token outside 0..{self.num_tokens - 1}")
                need(len(set(toks)) == len(toks), f"act_tokens[{l}] repeats a token")
        need(self.norm in NORM_KINDS, f"unknown norm {self.norm!r}; choose from {NORM_KINDS}")
        need(self.norm_eps > 0, "norm_eps must be positive")
        need(self.pool in POOL_KINDS, f"unknown pool {self.pool!r}; choose from {POOL_KINDS}")
        need(isinstance(self.norm_after_pool, bool), "norm_after_pool must be true or false")
        need(self.relu_eps > 0, "relu_eps must be positive")
        need(self.thex_order in (2, 4, 8), "thex_order must be 2, 4 or 8")

    # -- helpers ---------------------------------------------------------------
    def tokens_with_act(self, layer: int) -> tuple[int, ...] | None:
        """Tokens on which layer ``layer`` applies its activation (None = all)."""
        if self.act_tokens is None:
            return None
        return self.act_tokens[layer]

    def mlp_is_linear(self, layer: int) -> bool:
        """True when the layer's MLP is one linear map (its two linears can be fused)."""
        toks = self.tokens_with_act(layer)
        return self.act[layer] == "identity" or (toks is not None and len(toks) == 0)

    def count_heads(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for heads in self.attn:
            for k in heads:
                out[k] = out.get(k, 0) + 1
        return out

    def summary(self) -> str:
        heads = ", ".join(f"{k}={v}" for k, v in sorted(self.count_heads().items()))
        acts = ", ".join(f"{k}={self.act.count(k)}" for k in sorted(set(self.act)))
        return (
            f"{self.depth}x{self.num_heads} heads, dim {self.embed_dim}, mlp {self.mlp_dim}, "
            f"{self.img_size}x{self.img_size}x{self.in_chans}/{self.patch_size}; heads: {heads}; act: {acts}; norm: {self.norm}"
            + ("" if self.pool == "token" else f"; pool: {self.pool}" + (" then norm" if self.norm_after_pool else ""))
        )

    def with_(self, **changes: Any) -> "ArchSpec":
        return replace(self, **_normalise(changes))

    # -- JSON ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attn"] = [list(h) for h in self.attn]
        d["act"] = list(self.act)
        d["act_tokens"] = None if self.act_tokens is None else [None if t is None else list(t) for t in self.act_tokens]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArchSpec":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"invalid architecture spec: unknown fields {sorted(unknown)}")
        try:
            return cls(**_normalise(dict(d)))
        except TypeError as exc:
            raise ValueError(f"invalid architecture spec: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"architecture spec is not valid JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise ValueError("architecture spec must be a JSON object")
        return cls.from_dict(d)


def _normalise(d: dict[str, Any]) -> dict[str, Any]:
    """Lists from JSON -> tuples, so specs are hashable and compare by value."""
    if "attn" in d and d["attn"] is not None:
        d["attn"] = tuple(tuple(h) for h in d["attn"])
    if "act" in d and d["act"] is not None:
        d["act"] = tuple(d["act"])
    if "act_tokens" in d and d["act_tokens"] is not None:
        d["act_tokens"] = tuple(None if t is None else tuple(int(i) for i in t) for t in d["act_tokens"])
    return d
