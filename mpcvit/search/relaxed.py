"""The relaxed (supernet) ViT of the MPC-aware search: every head mixes its candidate attentions.

MPCViT's two-way relaxation (the paper's default), per head h of layer l with a real
alpha in [0, 1]:

    Attn_h = alpha_h * ReLUSoftmax(A_h) V_h + (1 - alpha_h) * (A_h / N) V_h

The three-way relaxation keeps softmax in the candidates, with logits z_h over
(softmax, relu, scale) and weights w_h = softmax(z_h):

    Attn_h = w_h,softmax * softmax(A_h) V_h + w_h,relu * ReLUSoftmax(A_h) V_h + w_h,scale * (A_h / N) V_h

MPCViT+ also relaxes each GeLU, per layer (one beta per layer) or per token (one beta
per layer and token), with beta in [0, 1]:

    y = beta * GeLU(x) + (1 - beta) * x

Every candidate is computed for all heads at once (one batched op per kind), then mixed
per head. The relaxed modules subclass the model's ``Attention`` / ``Mlp`` and keep their
linear layers, so a relaxed model's weights load from, and export to, a discrete
``VisionTransformer`` of the same shape. With alphas (betas) at exactly 0 / 1 the relaxed
model computes the discrete model it derives to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from mpcvit.models.spec import ArchSpec
from mpcvit.models.vit import ACT_FUNCS, ATTN_FUNCS, Attention, Mlp, VisionTransformer

TWO_WAY: tuple[str, ...] = ("relu", "scale")
THREE_WAY: tuple[str, ...] = ("softmax", "relu", "scale")
ActMode = Literal["none", "layer", "token"]
ACT_MODES: tuple[str, ...] = ("none", "layer", "token")
ARCH_PREFIXES = ("arch_alpha", "arch_beta")


class RelaxedAttention(Attention):
    """All heads compute every candidate kind; outputs mixed per head by the architecture weights.

    Two candidates: ``arch_alpha`` (H,) is the weight of the first (ReLU-softmax), 1 - alpha of
    the second (scaling). Three candidates: ``arch_alpha`` (H, 3) are logits, mixed by their softmax.
    """

    def __init__(self, spec: ArchSpec, layer: int, candidates: tuple[str, ...] = TWO_WAY) -> None:
        super().__init__(spec, layer)
        if len(candidates) not in (2, 3) or any(k not in ATTN_FUNCS for k in candidates):
            raise ValueError(f"candidates must be 2 or 3 attention kinds, got {candidates}")
        self.candidates = candidates
        H = spec.num_heads
        init = torch.full((H,), 0.5) if len(candidates) == 2 else torch.zeros(H, len(candidates))
        self.arch_alpha = nn.Parameter(init)

    def weights(self) -> torch.Tensor:
        """(H, K) mixing weights of the K candidates, rows summing to 1."""
        if len(self.candidates) == 2:
            a = self.arch_alpha.view(-1, 1)
            return torch.cat([a, 1 - a], dim=1)
        return self.arch_alpha.softmax(dim=-1)

    def mix_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        w = self.weights()  # (H, K)
        out = torch.zeros_like(v)  # (B, H, N, D)
        for i, kind in enumerate(self.candidates):
            out = out + w[:, i].view(1, -1, 1, 1) * ATTN_FUNCS[kind](q, k, v, self.spec)
        return out


class RelaxedMlp(Mlp):
    """The MLP with its activation relaxed: beta * act(h) + (1 - beta) * h, per layer or per token."""

    def __init__(self, spec: ArchSpec, layer: int, mode: ActMode = "layer") -> None:
        super().__init__(spec, layer)
        if mode not in ("layer", "token"):
            raise ValueError(f"RelaxedMlp mode must be 'layer' or 'token', got {mode!r}")
        self.mode = mode
        self.on_act = ACT_FUNCS[spec.act[layer]]
        shape = (1, 1, 1) if mode == "layer" else (1, spec.num_tokens, 1)
        self.arch_beta = nn.Parameter(torch.full(shape, 0.5))  # (1, 1 or N, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)  # (B, N, M)
        b = self.arch_beta
        return self.fc2(b * self.on_act(h) + (1 - b) * h)


class RelaxedViT(VisionTransformer):
    """A ``VisionTransformer`` whose attention (and optionally activations) are relaxed for search."""

    def __init__(self, spec: ArchSpec, candidates: tuple[str, ...] = TWO_WAY, act_mode: ActMode = "none") -> None:
        if act_mode not in ACT_MODES:
            raise ValueError(f"unknown act mode {act_mode!r}; choose from {ACT_MODES}")
        super().__init__(spec)
        self.candidates = candidates
        self.act_mode = act_mode
        for layer, block in enumerate(self.blocks):
            relaxed = RelaxedAttention(spec, layer, candidates)
            relaxed.load_state_dict(block.attn.state_dict(), strict=False)
            block.attn = relaxed
            if act_mode != "none":
                mlp = RelaxedMlp(spec, layer, act_mode)
                mlp.load_state_dict(block.mlp.state_dict(), strict=False)
                block.mlp = mlp

    # -- parameter groups ---------------------------------------------------------------
    def arch_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters():
            if name.rsplit(".", 1)[-1] in ARCH_PREFIXES:
                yield p

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters():
            if name.rsplit(".", 1)[-1] not in ARCH_PREFIXES:
                yield p

    def weight_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights alone: loadable into a discrete ``VisionTransformer`` of this shape."""
        return {k: v for k, v in self.state_dict().items() if k.rsplit(".", 1)[-1] not in ARCH_PREFIXES}

    def load_weights_from(self, model: VisionTransformer) -> None:
        """Start from a trained discrete model's weights (e.g. the softmax teacher)."""
        missing, unexpected = self.load_state_dict(model.state_dict(), strict=False)
        bad = [k for k in missing if k.rsplit(".", 1)[-1] not in ARCH_PREFIXES]
        if bad or unexpected:
            raise ValueError(f"weights do not fit the search model: missing {bad[:5]}, unexpected {list(unexpected)[:5]}")

    # -- architecture values ------------------------------------------------------------
    @torch.no_grad()
    def clamp_arch_(self) -> None:
        """Keep two-way alphas and all betas in [0, 1] (projected gradient step)."""
        for block in self.blocks:
            if len(self.candidates) == 2:
                block.attn.arch_alpha.clamp_(0.0, 1.0)
            if self.act_mode != "none":
                block.mlp.arch_beta.clamp_(0.0, 1.0)

    def head_weights(self) -> torch.Tensor:
        """(L, H, K) mixing weights of every head's candidates."""
        return torch.stack([block.attn.weights() for block in self.blocks])

    def act_betas(self) -> torch.Tensor | None:
        """(L, 1) per-layer or (L, N) per-token betas, or None without activation search."""
        if self.act_mode == "none":
            return None
        return torch.stack([block.mlp.arch_beta.view(-1) for block in self.blocks])

    @torch.no_grad()
    def set_arch(self, head_weights: torch.Tensor | None = None, betas: torch.Tensor | None = None) -> None:
        """Set the architecture weights directly: two-way alphas (L, H) or three-way logits (L, H, 3); betas (L, U)."""
        for layer, block in enumerate(self.blocks):
            if head_weights is not None:
                block.attn.arch_alpha.copy_(head_weights[layer].reshape(block.attn.arch_alpha.shape))
            if betas is not None:
                block.mlp.arch_beta.copy_(betas[layer].reshape(block.mlp.arch_beta.shape))
