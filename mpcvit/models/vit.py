"""ViT-Lite with per-head attention choices and per-layer (or per-token) activation choices.

Conv patch embedding, class token, learnable positions, pre-norm blocks; the
class token's final feature (or the patch tokens' mean, ``pool="avg"``) feeds
a linear head. Let A = Q K^T / sqrt(d_head)
and N the number of tokens. Per head, the attention is one of:

- ``softmax``: softmax(A) V
- ``relu`` (ReLU-softmax): ReLU(A) / (sum_j ReLU(A) + eps) V
- ``scale``: (A / N) V, computed as Q (K^T V) / (sqrt(d) N)
- ``2quad`` (MPCFormer): (A + c)^2 / sum_j (A + c)^2 V, c = 5
- ``thex`` (THE-X's ReLU-polynomial softmax estimate): e(A) / (sum_j e(A) + eps) V,
  e(x) = ReLU(1 + x / n)^n with n = ``thex_order`` (the limit (1 + x/n)^n -> exp(x),
  made non-negative by the ReLU)

Heads of one kind in a layer are computed together, in one batched op.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from mpcvit.models.spec import ArchSpec

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, ArchSpec], torch.Tensor]


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, h, N, N)


def attn_softmax(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
    return _scores(q, k).softmax(dim=-1) @ v


def attn_relu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
    r = F.relu(_scores(q, k))
    return (r / (r.sum(dim=-1, keepdim=True) + spec.relu_eps)) @ v


def attn_scale(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
    N, D = q.shape[-2], q.shape[-1]
    return q @ (k.transpose(-2, -1) @ v) * (D**-0.5 / N)  # (B, h, N, D)


def attn_2quad(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
    s = (_scores(q, k) + spec.quad_c).square()
    return (s / s.sum(dim=-1, keepdim=True)) @ v


def thex_exp(x: torch.Tensor, order: int) -> torch.Tensor:
    """THE-X's ReLU-polynomial estimate of exp: ReLU(1 + x / n)^n."""
    return F.relu(1 + x / order) ** order


def attn_thex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
    e = thex_exp(_scores(q, k), spec.thex_order)
    return (e / (e.sum(dim=-1, keepdim=True) + spec.relu_eps)) @ v


ATTN_FUNCS: dict[str, AttnFn] = {
    "softmax": attn_softmax,
    "relu": attn_relu,
    "scale": attn_scale,
    "2quad": attn_2quad,
    "thex": attn_thex,
}


def quad_gelu(x: torch.Tensor) -> torch.Tensor:
    """MPCFormer's Quad GeLU: 0.125 x^2 + 0.25 x + 0.5."""
    return 0.125 * x.square() + 0.25 * x + 0.5


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


ACT_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "quad": quad_gelu,
    "relu": F.relu,
    "identity": identity,  # a named function, so models pickle (they travel to party processes)
}


class AffineNorm(nn.Module):
    """THE-X's LayerNorm replacement: a learned per-channel affine map, gamma * x + beta."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def make_norm(spec: ArchSpec) -> nn.Module:
    return nn.LayerNorm(spec.embed_dim, eps=spec.norm_eps) if spec.norm == "layernorm" else AffineNorm(spec.embed_dim)


def pool_token(features: torch.Tensor) -> torch.Tensor:
    """The class token's feature, (B, C)."""
    return features[:, 0]


def pool_avg(features: torch.Tensor) -> torch.Tensor:
    """The mean feature of the patch tokens (the class token left out), (B, C)."""
    return features[:, 1:].mean(dim=1)


POOL_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"token": pool_token, "avg": pool_avg}


def head_groups(kinds: tuple[str, ...]) -> dict[str, list[int]]:
    """Head indices of each attention kind, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for h, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(h)
    return groups


class Attention(nn.Module):
    def __init__(self, spec: ArchSpec, layer: int) -> None:
        super().__init__()
        self.spec = spec
        self.num_heads = spec.num_heads
        self.qkv = nn.Linear(spec.embed_dim, 3 * spec.embed_dim)
        self.proj = nn.Linear(spec.embed_dim, spec.embed_dim)
        self.groups = head_groups(spec.attn[layer])
        # Mixed layers gather the heads of each kind with one index_select on a device-resident order
        # (a Python list index would copy to the device and wait for it on every call), then restore it.
        order = [h for idx in self.groups.values() for h in idx]
        self.register_buffer("head_order", torch.tensor(order), persistent=False)
        self.register_buffer("head_restore", torch.tensor(sorted(range(len(order)), key=order.__getitem__)), persistent=False)
        bounds = list(accumulate((len(idx) for idx in self.groups.values()), initial=0))
        self.group_slices = [(kind, slice(a, b)) for kind, a, b in zip(self.groups, bounds, bounds[1:])]

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, D)
        return q, k, v

    def mix_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Each group of heads with its own attention kind, in one op per kind."""
        if len(self.groups) == 1:
            (kind,) = self.groups
            return ATTN_FUNCS[kind](q, k, v, self.spec)
        q, k, v = (t.index_select(1, self.head_order) for t in (q, k, v))  # heads grouped by kind
        outs = [ATTN_FUNCS[kind](q[:, s], k[:, s], v[:, s], self.spec) for kind, s in self.group_slices]
        return torch.cat(outs, dim=1).index_select(1, self.head_restore)  # (B, H, N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.split_heads(x)
        o = self.mix_heads(q, k, v)  # (B, H, N, D)
        return self.proj(o.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, spec: ArchSpec, layer: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(spec.embed_dim, spec.mlp_dim)
        self.fc2 = nn.Linear(spec.mlp_dim, spec.embed_dim)
        self.act_kind = spec.act[layer]
        self.act = ACT_FUNCS[self.act_kind]
        toks = spec.tokens_with_act(layer)
        mask = torch.ones(spec.num_tokens, dtype=torch.bool)
        if toks is not None:
            mask = torch.zeros(spec.num_tokens, dtype=torch.bool)
            mask[list(toks)] = True
        self.register_buffer("act_mask", mask.view(1, -1, 1), persistent=False)  # (1, N, 1)
        self.all_tokens = toks is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = self.act(h) if self.all_tokens else torch.where(self.act_mask, self.act(h), h)
        return self.fc2(h)

    def fused_linear(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) of fc2(fc1(x)) as one linear map, for a layer whose activation is the identity."""
        w = self.fc2.weight @ self.fc1.weight  # (C, C)
        b = self.fc2.weight @ self.fc1.bias + self.fc2.bias
        return w, b


class Block(nn.Module):
    def __init__(self, spec: ArchSpec, layer: int) -> None:
        super().__init__()
        self.norm1 = make_norm(spec)
        self.attn = Attention(spec, layer)
        self.norm2 = make_norm(spec)
        self.mlp = Mlp(spec, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT-Lite built from an ``ArchSpec``; ``model.spec`` is all a checkpoint needs to rebuild it."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        C = spec.embed_dim
        self.patch_embed = nn.Conv2d(spec.in_chans, C, kernel_size=spec.patch_size, stride=spec.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.randn(1, spec.num_tokens, C) * 0.02)
        self.blocks = nn.ModuleList(Block(spec, l) for l in range(spec.depth))
        self.norm = make_norm(spec)
        self.pool = POOL_FUNCS[spec.pool]
        self.head = nn.Linear(C, spec.num_classes)
        self.apply(_init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if tuple(x.shape[1:]) != self.spec.input_shape:
            raise ValueError(f"expected input of shape (B, {', '.join(map(str, self.spec.input_shape))}), got {tuple(x.shape)}")
        t = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N-1, C)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1)  # (B, N, C)
        return t + self.pos_embed

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All token features after the final norm (before it when the norm follows pooling), (B, N, C)."""
        t = self.embed(x)
        for block in self.blocks:
            t = block(t)
        return t if self.spec.norm_after_pool else self.norm(t)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        f = self.pool(features)  # (B, C)
        return self.head(self.norm(f) if self.spec.norm_after_pool else f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
