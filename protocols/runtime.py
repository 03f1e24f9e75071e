"""The secure forward pass of every ViT-Lite variant, op by op on CrypTen tensors.

``SecureViT.share`` (called by both parties, in the same order) prepares the
owner's weights in plaintext and secret-shares each once:

* the input normalisation ``(x - mean_c) / std_c`` is folded into the patch
  embedding (W' = W / std_c, b' = b - W' mean_c), so the secure input is the
  raw [0, 1] image; the class token, positions and the embedding bias become
  one additive table;
* every norm's gamma and beta are folded into the linear that follows it
  (W' = W diag(gamma), b' = b + W beta): LayerNorm becomes the bare
  (x - mu) / sqrt(var + eps), THE-X's affine norm disappears;
* 1 / sqrt(d_head) (and 1 / N for scaling heads) is folded into W_q;
* the heads of each layer are permuted so that heads of one kind are
  contiguous (qkv rows and proj columns permuted alike): each kind is one
  batched op on a slice;
* identity MLPs are fused (W2 W1, W2 b1 + b2).

Sharing uses CrypTen's input sharing from ``owner`` (pseudo-random zero
sharing, no communication). The forward then runs per block: LayerNorm,
one matmul for qkv, ONE round for the score products of every kind
(Q K^T for softmax/relu/2quad/thex heads, K^T V for scaling heads), each
kind's normalisation batched over its heads, ONE round for every
``P V`` / ``Q (K^T V)``, the projection, LayerNorm, the MLP (activation only
on the tokens that need it). In the last block only the class token's query,
MLP and final norm are computed (the head reads only the class token).
With ``fold_products`` each LayerNorm and the linear after it (qkv, fc1 or
the fused MLP, the head) are one ``ops.layernorm_linear`` (3 rounds, costed
under "norm" in the blocks, under "head" for the final norm and the head); a
final norm before an average pool stays a LayerNorm.
"""

from __future__ import annotations

import copy
import itertools
import math
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from mpcvit.models.spec import ArchSpec
from mpcvit.output_policy import OutputPolicy
from mpcvit.models.vit import VisionTransformer, head_groups
from protocols import argmax, ops
from protocols.accounting import CostReport, CostTracker, OpCost
from protocols.config import DEFAULT_CONFIG, SecureConfig, apply_config
from protocols.crypten_compat import crypten
from protocols.planning import offline
from protocols.providers import BatchSource, DealerProvider, Request, TFPProvider, current_provider, needs_corrections

import crypten.communicator as comm  # noqa: E402
from crypten.mpc import MPCTensor  # noqa: E402

log = logging.getLogger(__name__)
_LOADS = itertools.count(1)  # in-process model loads, in the order both parties make them (the default model id)

__all__ = ["SecureViT", "CostReport", "OpCost", "certified_gelu_bounds", "prepare_weights"]


# -- plaintext preparation (both parties run it; only the owner's values are used) ----
def _fold_norm(w: torch.Tensor, b: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear(W, b) after a norm's affine (gamma, beta): W diag(gamma), b + W beta."""
    return w * gamma[None, :], b + w @ beta


def _norm_affine(norm: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return norm.weight.detach().double(), norm.bias.detach().double()


def head_order(spec: ArchSpec, layer: int) -> tuple[list[int], list[tuple[str, int, int]]]:
    """Heads permuted so each kind is contiguous: (old index per new position, [(kind, start, count)])."""
    groups = head_groups(spec.attn[layer])
    order: list[int] = []
    slices: list[tuple[str, int, int]] = []
    for kind, idx in groups.items():
        slices.append((kind, len(order), len(idx)))
        order += idx
    return order, slices


def _feature_perm(order: list[int], head_dim: int) -> torch.Tensor:
    return torch.tensor([h * head_dim + d for h in order for d in range(head_dim)])


def _embed_params(model: VisionTransformer, spec: ArchSpec, meta: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    norm = (meta or {}).get("normalisation", {})
    mean = torch.tensor(norm.get("mean", [0.0] * spec.in_chans), dtype=torch.float64).expand(spec.in_chans)
    std = torch.tensor(norm.get("std", [1.0] * spec.in_chans), dtype=torch.float64).expand(spec.in_chans)
    if bool((std <= 0).any()):
        raise ValueError("meta['normalisation']['std'] must be positive")
    w = model.patch_embed.weight.detach().double() / std.view(1, -1, 1, 1)  # (E, C, p, p)
    b = model.patch_embed.bias.detach().double() - (w * mean.view(1, -1, 1, 1)).sum((1, 2, 3))
    pos = model.pos_embed.detach().double()[0].clone()  # (N, E)
    pos[0] += model.cls_token.detach().double()[0, 0]
    pos[1:] += b
    return {"embed.w_t": w.reshape(w.shape[0], -1).t().contiguous(), "embed.pos": pos}


def _block_params(model: VisionTransformer, spec: ArchSpec, l: int) -> dict[str, torch.Tensor]:
    blk = model.blocks[l]
    C, H, D, N = spec.embed_dim, spec.num_heads, spec.head_dim, spec.num_tokens
    order, slices = head_order(spec, l)
    perm = _feature_perm(order, D)
    w, b = blk.attn.qkv.weight.detach().double(), blk.attn.qkv.bias.detach().double()
    w, b = _fold_norm(w, b, *_norm_affine(blk.norm1))
    scale = torch.empty(C, dtype=torch.float64)
    for kind, start, count in slices:
        scale[start * D : (start + count) * D] = D**-0.5 / (N if kind == "scale" else 1)
    rows = torch.cat([perm, perm + C, perm + 2 * C])
    w, b = w[rows].clone(), b[rows].clone()
    w[:C] *= scale[:, None]
    b[:C] *= scale
    p: dict[str, torch.Tensor] = {f"b{l}.qkv.w_t": w.t().contiguous(), f"b{l}.qkv.b": b}
    pw = blk.attn.proj.weight.detach().double()[:, perm]
    p[f"b{l}.proj.w_t"], p[f"b{l}.proj.b"] = pw.t().contiguous(), blk.attn.proj.bias.detach().double()
    g2 = _norm_affine(blk.norm2)
    if spec.mlp_is_linear(l):
        fw, fb = blk.mlp.fused_linear()
        fw, fb = _fold_norm(fw.detach().double(), fb.detach().double(), *g2)
        p[f"b{l}.fused.w_t"], p[f"b{l}.fused.b"] = fw.t().contiguous(), fb
    else:
        w1, b1 = _fold_norm(blk.mlp.fc1.weight.detach().double(), blk.mlp.fc1.bias.detach().double(), *g2)
        p[f"b{l}.fc1.w_t"], p[f"b{l}.fc1.b"] = w1.t().contiguous(), b1
        p[f"b{l}.fc2.w_t"] = blk.mlp.fc2.weight.detach().double().t().contiguous()
        p[f"b{l}.fc2.b"] = blk.mlp.fc2.bias.detach().double()
    return p


def prepare_weights(model: VisionTransformer, spec: ArchSpec, meta: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The folded, permuted plaintext weights the parties share (float64, name -> tensor, in sharing order)."""
    params = _embed_params(model, spec, meta)
    for l in range(spec.depth):
        params.update(_block_params(model, spec, l))
    hw, hb = _fold_norm(model.head.weight.detach().double(), model.head.bias.detach().double(), *_norm_affine(model.norm))
    params["head.w_t"], params["head.b"] = hw.t().contiguous(), hb
    return params


def certified_gelu_bounds(plain: dict[str, torch.Tensor], spec: ArchSpec) -> dict[int, float]:
    """Per GeLU layer, a bound on |GeLU input| that holds for EVERY image: sqrt(C) |W'_j| + |b'_j| (max over j).

    The layer's input is fc1 of a LayerNorm's output, and a LayerNorm's output
    before its affine has norm sqrt(C var / (var + eps)) <= sqrt(C) whatever
    the image; with the affine folded into fc1 (W' = W diag(gamma), b' = b +
    W beta: ``prepare_weights``) Cauchy-Schwarz gives |u_j| <= |W'_j| sqrt(C) +
    |b'_j|. Read from the owner's prepared weights ``plain``; models without
    LayerNorm ("affine" norm) get no bound.
    """
    if spec.norm != "layernorm":
        return {}
    out: dict[int, float] = {}
    for l in range(spec.depth):
        if spec.act[l] == "gelu" and not spec.mlp_is_linear(l):
            w, b = plain[f"b{l}.fc1.w_t"].double(), plain[f"b{l}.fc1.b"].double()
            out[l] = float((w.norm(dim=0) * math.sqrt(spec.embed_dim) + b.abs()).max())
    return out


def _fourier_layers(plain: dict[str, torch.Tensor] | None, spec: ArchSpec, config: SecureConfig, owner: int) -> tuple[int, ...]:
    """The GeLU layers that run ``ops.gelu_fourier``: chosen by the owner from its certificate, announced to the peer.

    With ``config.gelu == "fourier"`` the owner marks each GeLU layer whose
    ``certified_gelu_bounds`` times ``ops.FOURIER_MARGIN`` is within
    ``ops.FOURIER_RANGE`` and broadcasts the marks (one public bit per layer:
    which GeLU protocol the layer runs, the same kind of fact as the
    architecture; one round at load). The other party accepts a mark only on
    a GeLU layer. Any other ``gelu`` setting: none, and nothing is sent.
    """
    if config.gelu != "fourier":
        return ()
    rank = comm.get().get_rank()
    marks = torch.zeros(spec.depth, dtype=torch.int64)
    if rank == owner:
        assert plain is not None
        for l, bound in certified_gelu_bounds(plain, spec).items():
            marks[l] = int(bound * ops.FOURIER_MARGIN <= ops.FOURIER_RANGE)
    marks = comm.get().broadcast(marks, owner)
    return tuple(l for l in range(spec.depth)
                 if int(marks[l]) == 1 and spec.act[l] == "gelu" and not spec.mlp_is_linear(l))


# -- the secure model ----------------------------------------------------------------------
@dataclass
class _Ctx:
    tracker: CostTracker
    layer: str = ""

    def section(self, kind: str):  # noqa: ANN201 - a context manager
        return self.tracker.section(kind, self.layer)


class SecureViT:
    """A ViT-Lite whose weights are secret-shared between two parties; evaluates secret-shared images.

    Build it with ``SecureViT.share`` in both parties. ``forward`` maps an
    ``MPCTensor`` (B, C, H, W) of [0, 1] pixels to shared logits (B, classes);
    ``forward_shares`` does the same on this party's int64 share and returns
    this party's int64 share of the logits with a ``CostReport``.

    With the dealer provider installed, the randomness of a forward must be
    planned: ``plan(batch_size)`` is a *local* dry run (each party alone, once
    per batch size, over ``protocols.planning.offline``: nothing is sent to or
    received from the peer; ``share`` plans batch size 1) on zero-valued
    stand-ins of the weights that records the request list; then either ``batch_source`` (given to ``share``) supplies
    each forward's seed and corrections, or the caller runs
    ``provider.begin_batch(seed, plan, corrections)`` before
    ``forward_shares`` and ``provider.end_batch()`` after it.

    Several threads may run ``forward_shares`` on one instance at once (a
    party serving concurrent sessions, each thread inside its own
    ``parties.communicator.installed``): a forward only reads the shared
    weights, keeps its costs in local variables, and ``plan`` runs its dry
    run on a copy whose weights are zero stand-ins, under a lock.
    """

    def __init__(self, spec: ArchSpec, params: dict[str, MPCTensor], config: SecureConfig, owner: int,
                 batch_source: BatchSource | None = None, output_policy: OutputPolicy = OutputPolicy()) -> None:
        self.spec = spec
        self.output_policy = output_policy  # what a forward reveals: the logits, or only the top K indices
        self.params = params
        self.config = config
        self.owner = owner
        self.batch_source = batch_source
        self.precision_bits: int = config.precision_bits
        self.last_costs: CostReport | None = None
        self._plans: dict[int, list[Request]] = {}
        self._plan_costs: dict[int, CostReport] = {}
        self._plan_lock = threading.Lock()
        self.fixed: dict[str, ops.FixedWeight] = {}  # weights whose Beaver mask was opened at load
        self.fourier_layers: tuple[int, ...] = ()  # GeLU layers on ops.gelu_fourier (``_fourier_layers``)
        self.model_id: int | None = None

    # -- construction ---------------------------------------------------------------
    @classmethod
    def share(cls, model: VisionTransformer | None, spec: ArchSpec, meta: dict | None = None, owner: int = 0,
              config: SecureConfig = DEFAULT_CONFIG, batch_source: BatchSource | None = None,
              model_id: int | None = None, model_keys: Any = None,
              output_policy: OutputPolicy = OutputPolicy()) -> "SecureViT":
        """Called by BOTH parties at model load, in the same order: party ``owner`` passes the plaintext model
        (and meta), the other passes None + the spec. Weights are secret-shared once and cached as shares.
        ``output_policy`` (the same on both parties: the owner's, ``mpcvit.output_policy``) fixes what every
        forward returns: the logits' shares, or only shares of the top K indices (``protocols.argmax``).
        The input normalisation (meta["normalisation"]) is folded into the patch-embedding weights, so the
        secure input is the raw [0, 1] image. Identity MLPs are fused (W2 W1) here."""
        apply_config(config)
        rank = comm.get().get_rank()
        if rank == owner:
            if model is None:
                raise ValueError(f"party {owner} owns the model and must pass it")
            if model.spec != spec:
                raise ValueError("the model's spec differs from the spec both parties agreed on")
            plain = prepare_weights(model, spec, meta)
        else:
            with torch.random.fork_rng():  # a throwaway skeleton: only the shapes are used
                plain = {k: torch.zeros_like(v) for k, v in prepare_weights(VisionTransformer(spec), spec, None).items()}
        shared = {name: crypten.cryptensor(t.float(), src=owner) for name, t in plain.items()}
        secure = cls(spec, shared, config, owner, batch_source, output_policy)
        secure.fourier_layers = _fourier_layers(plain if rank == owner else None, spec, config, owner)
        provider = current_provider()
        keys = model_keys if model_keys is not None else batch_source  # whatever hands out model keys
        if config.fixed_weight_masks and isinstance(provider, DealerProvider) and hasattr(keys, "model_key"):
            secure._open_weight_masks(next(_LOADS) if model_id is None else model_id, keys)
        if isinstance(provider, DealerProvider):
            secure.plan(1)
        return secure

    def _open_weight_masks(self, model_id: int, keys: Any) -> None:
        """Draw every weight's fixed Beaver mask from this load's model key and open W - b (one round, at load).

        ``model_id`` is the same on both parties (on the gRPC parties a 128-bit
        id party 0 draws from its cryptographic PRG and sends party 1 with the
        architecture; the load's ordinal in-process, under a fresh master key);
        the dealer derives the same masks from both parties' model keys for
        every later batch, and hands each party its key of an id once, ever.
        """
        rank = comm.get().get_rank()
        provider = current_provider()
        provider.begin_model(model_id, keys.model_key(rank, model_id))
        names = [k for k in sorted(self.params) if k.endswith(".w_t") and self.params[k].dim() == 2]
        opened = ops.open_weight_masks([(self.params[k], model_id, i) for i, k in enumerate(names)])
        self.fixed = dict(zip(names, opened))
        self.model_id = model_id
        log.info("opened the fixed masks of %d weights for model load %x", len(names), model_id)

    def _w(self, name: str) -> "MPCTensor | ops.FixedWeight":
        """A weight for ``ops.linear``: its fixed-mask form when the mask was opened at load."""
        return self.fixed.get(name) or self.params[name]

    # -- planning (dealer) ------------------------------------------------------------
    def plan(self, batch_size: int) -> list[Request]:
        """The randomness requests of one forward on ``batch_size`` images (a local dry run, cached).

        Runs the forward on zero shares of the image and of every weight over
        ``protocols.planning.offline()``: no message reaches the peer, and no
        real share is touched.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        with self._plan_lock:
            if batch_size in self._plans:
                return self._plans[batch_size]
            provider = current_provider()
            if not isinstance(provider, DealerProvider):
                raise RuntimeError("plan() needs the dealer provider installed (protocols.providers.install_provider)")
            C, S = self.spec.in_chans, self.spec.img_size
            t0 = time.perf_counter()
            dry = copy.copy(self)  # the same model with zero stand-ins for its weights; self.params stays as it is
            dry.params = {k: _zero_like(v) for k, v in self.params.items()}
            with offline(provider.party_rank), provider.recording() as requests:
                tracker = CostTracker(requests)  # inside: it reads the stand-in's counters, at the start and at the end
                dry._forward(ops.public_zeros(batch_size, C, S, S), tracker)
                costs = tracker.report(provider="dealer", batch_size=batch_size)  # the stand-in's counts
            self._plans[batch_size] = list(requests)
            self._plan_costs[batch_size] = costs
            log.info("planned %d randomness requests for batch size %d in %.1f s", len(requests), batch_size, time.perf_counter() - t0)
        return self._plans[batch_size]

    def planned_costs(self, batch_size: int) -> CostReport:
        """The online rounds and bytes of one forward as the dry run of ``plan(batch_size)`` counted them
        (exact: every protocol is data-oblivious), its ``seconds`` the dry run's local compute, and
        ``dealer_bytes`` the plan's corrections. Nothing is exchanged to know them."""
        plan = self.plan(batch_size)
        report = self._plan_costs[batch_size]
        report.dealer_bytes = sum(r.correction_bytes() for r in plan)
        return report

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: MPCTensor) -> MPCTensor:
        """(B, C, H, W) shared [0, 1] image -> (B, classes) shared logits; costs in ``self.last_costs``."""
        out, self.last_costs = self._forward_costs(x)
        return out

    def _forward_costs(self, x: MPCTensor) -> tuple[MPCTensor, CostReport]:
        tracker = CostTracker()
        out = self._forward(x, tracker)
        return out, tracker.report(provider=_provider_name(), batch_size=int(x.size(0)))

    def forward_shares(self, x_share: torch.Tensor) -> tuple[torch.Tensor, CostReport]:
        """This party's int64 share (B, C, H, W) of the fixed-point image in; this party's int64 share of the
        logits (B, classes) out, plus the costs of this forward. Under a ``label`` / ``topk:K`` output policy the
        share is of the K indices (B, K; scale 1), re-randomised by a zero sharing (``protocols.argmax.rerandomise``)."""
        expect = self.spec.input_shape
        if x_share.dtype != torch.int64 or x_share.dim() != 4 or tuple(x_share.shape[1:]) != expect:
            raise ValueError(f"expected an int64 share of shape (B, {', '.join(map(str, expect))}), got {x_share.dtype} {tuple(x_share.shape)}")
        B = int(x_share.shape[0])
        if B < 1:
            raise ValueError("empty batch")
        provider = current_provider()
        own_batch = isinstance(provider, DealerProvider) and self.batch_source is not None
        dealer_bytes = 0
        if isinstance(provider, DealerProvider):
            plan = self.plan(B)
            rank = comm.get().get_rank()
            dealer_bytes = sum(r.correction_bytes(rank) for r in plan) if needs_corrections(rank, plan) else 0
            if own_batch:
                assert self.batch_source is not None
                seed, corrections = self.batch_source.next_batch(comm.get().get_rank(), plan)
                provider.begin_batch(seed, plan, corrections)
        x = MPCTensor.from_shares(x_share, precision=self.precision_bits)
        out, costs = self._forward_costs(x)
        if own_batch:
            provider.end_batch()
        costs.dealer_bytes = dealer_bytes
        if isinstance(provider, DealerProvider):  # each op's share of the material, from the plan's dry run
            planned = self._plan_costs[B]
            for table, ref in ((costs.per_op, planned.per_op), (costs.per_layer, planned.per_layer),
                               (costs.per_layer_op, planned.per_layer_op)):
                for key, op in table.items():
                    op.dealer_bytes = ref[key].dealer_bytes if key in ref else 0
        if isinstance(out, MPCTensor):
            return out._tensor.share.clone(), costs
        return argmax.rerandomise(out), costs  # the indices' shares: each alone uniform, only their sum means anything

    def _forward(self, x: MPCTensor, tracker: CostTracker) -> "MPCTensor | torch.Tensor":
        """The shared logits (an ``MPCTensor``), or under a label / top-k policy this party's int64 shares of the
        indices (B, K), computed under 2PC from the logits (section ``output-label`` / ``output-topk`` of the costs)."""
        logits = self._logits(x, tracker)
        policy = self.output_policy
        if policy.reveals_logits:
            return logits
        with tracker.section(f"output-{policy.kind}", "head"):
            return argmax.topk(logits, policy.k)

    def _logits(self, x: MPCTensor, tracker: CostTracker) -> MPCTensor:
        ctx = _Ctx(tracker, "embed")
        t = self._embed(x, ctx)
        token_pool = self.spec.pool == "token"  # the head reads only the class token: the last block computes only it
        for l in range(self.spec.depth):
            ctx.layer = f"layer{l}"
            t = self._block(t, l, ctx, cls_only=token_pool and l == self.spec.depth - 1)
        ctx.layer = "head"
        if self._folds() and (token_pool or self.spec.norm_after_pool):
            f = t[:, 0] if token_pool else t[:, 1:].sum(dim=1).div(int(t.size(1)) - 1)
            with ctx.section("head"):  # the final norm and the head in 3 rounds (costed as the head: costs.py reads it)
                return ops.layernorm_linear(f, self.config.layernorm_eps, self._w("head.w_t"), self.params["head.b"])
        with ctx.section("norm"):
            f = self._norm(t[:, 0]) if token_pool else self._pool_avg(t)
        with ctx.section("head"):
            return ops.linear(f, self._w("head.w_t"), self.params["head.b"])

    def _pool_avg(self, t: MPCTensor) -> MPCTensor:
        """``pool="avg"``: the mean of the patch tokens, (B, C), with the final norm before or after it.

        The mean is a local sum and a division by the public token count (local truncation, no round)."""
        n = int(t.size(1)) - 1
        if self.spec.norm_after_pool:
            return self._norm(t[:, 1:].sum(dim=1).div(n))
        return self._norm(t[:, 1:]).sum(dim=1).div(n)

    # -- pieces ---------------------------------------------------------------------------
    def _embed(self, x: MPCTensor, ctx: _Ctx) -> MPCTensor:
        s = self.spec
        B, C, G, p = int(x.size(0)), s.in_chans, s.grid, s.patch_size
        with ctx.section("embed"):
            patches = x.reshape(B, C, G, p, G, p).permute(0, 2, 4, 1, 3, 5).reshape(B, G * G, C * p * p)
            emb = ops.linear(patches, self._w("embed.w_t"), None)  # (B, N-1, E)
            t = crypten.cat([ops.public_zeros(B, 1, s.embed_dim), emb], dim=1)  # (B, N, E)
            return t + self.params["embed.pos"]

    def _norm(self, x: MPCTensor) -> MPCTensor:
        if self.spec.norm == "affine":  # gamma, beta live in the next linear
            return x
        return ops.layernorm(x, self.config.layernorm_eps)

    def _folds(self) -> bool:
        """Whether each LayerNorm folds its 1/sigma into the linear after it (``ops.layernorm_linear``)."""
        return self.spec.norm == "layernorm" and ops.folds_layernorm()

    def _norm_linear(self, x: MPCTensor, name: str, ctx: _Ctx) -> MPCTensor:
        """linear ``name`` (weight and bias) of the norm of x: 3 rounds folded (section "norm"), else norm, then linear."""
        w, b = self._w(f"{name}.w_t"), self.params[f"{name}.b"]
        if self._folds():
            with ctx.section("norm"):
                return ops.layernorm_linear(x, self.config.layernorm_eps, w, b)
        with ctx.section("norm"):
            h = self._norm(x)
        with ctx.section("linear"):
            return ops.linear(h, w, b)

    def _block(self, x: MPCTensor, l: int, ctx: _Ctx, cls_only: bool) -> MPCTensor:
        p = self.params
        qkv = self._norm_linear(x, f"b{l}.qkv", ctx)  # (B, N, 3C)
        o = self._attention(qkv, l, ctx, cls_only)  # (B, Nq, C)
        if cls_only:
            x = x[:, :1]
        with ctx.section("linear"):
            x = x + ops.linear(o, self._w(f"b{l}.proj.w_t"), p[f"b{l}.proj.b"])
        return x + self._mlp(x, l, ctx, cls_only)

    def _attention(self, qkv: MPCTensor, l: int, ctx: _Ctx, cls_only: bool) -> MPCTensor:
        s = self.spec
        B, N = int(qkv.size(0)), int(qkv.size(1))
        H, D = s.num_heads, s.head_dim
        qkv = qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cls_only:
            q = q[:, :, :1]
        _, slices = head_order(s, l)
        first: list[ops.Product] = []
        for kind, a, n in slices:
            kt = k[:, a : a + n].transpose(-2, -1)  # (B, n, D, N)
            first.append(("matmul", kt, v[:, a : a + n]) if kind == "scale" else ("matmul", q[:, a : a + n], kt))
        with ctx.section("attention-matmul"):
            scores = ops.beaver_products(first)  # scale: K^T V (B, n, D, D); others: Q K^T (B, n, Nq, N)
        second: list[ops.Product] = []
        for (kind, a, n), sc in zip(slices, scores):
            if kind == "scale":
                second.append(("matmul", q[:, a : a + n], sc))
                continue
            with ctx.section(f"attention-{kind}"):
                second.append(("matmul", self._normalise(kind, sc), v[:, a : a + n]))
        with ctx.section("attention-matmul"):
            outs = ops.beaver_products(second)  # each (B, n, Nq, D)
            o = outs[0] if len(outs) == 1 else crypten.cat(outs, dim=1)
            return o.transpose(1, 2).reshape(B, int(o.size(2)), H * D)

    def _normalise(self, kind: str, sc: MPCTensor) -> MPCTensor:
        s = self.spec
        if kind == "softmax":
            return ops.softmax_rows(sc)
        if kind == "relu":
            return ops.relu_rows(sc, s.relu_eps)
        if kind == "2quad":
            return ops.quad_rows(sc, s.quad_c)
        if kind == "thex":
            return ops.thex_rows(sc, s.thex_order, s.relu_eps)
        raise ValueError(f"unknown attention kind {kind!r}")

    def _mlp(self, x: MPCTensor, l: int, ctx: _Ctx, cls_only: bool) -> MPCTensor:
        """The MLP of the norm of x (the norm runs here, with the first linear: ``_norm_linear``)."""
        p, s = self.params, self.spec
        if s.mlp_is_linear(l):
            return self._norm_linear(x, f"b{l}.fused", ctx)
        u = self._norm_linear(x, f"b{l}.fc1", ctx)  # (B, n, M)
        kind = s.act[l]
        toks = s.tokens_with_act(l)
        n = int(u.size(1))
        if toks is not None:
            toks = tuple(t for t in toks if t < n)  # the class-only last layer keeps token 0
        act = ops.ACTIVATIONS[kind]
        if kind == "gelu" and l in self.fourier_layers:
            act = _gelu_certified
        with ctx.section(f"activation-{kind}"):
            u = _apply_on_tokens(act, u, toks)
        with ctx.section("linear"):
            return ops.linear(u, self._w(f"b{l}.fc2.w_t"), p[f"b{l}.fc2.b"])


def _gelu_certified(u: MPCTensor) -> MPCTensor:
    """GeLU on a layer whose inputs the owner certified within ``ops.FOURIER_RANGE``: the Fourier GeLU where it runs."""
    return ops.gelu_fourier(u) if ops.gelu_fourier_fits(u) else ops.gelu_configured(u)


def _apply_on_tokens(act: Any, u: MPCTensor, toks: tuple[int, ...] | None) -> MPCTensor:
    """act(u) on tokens ``toks`` (dim 1) only, identity elsewhere; the activation runs on those tokens alone."""
    n = int(u.size(1))
    if toks is None or len(toks) == n:
        return act(u)
    if not toks:
        return u
    rest = [t for t in range(n) if t not in toks]
    sel = act(u.index_select(1, torch.tensor(toks)))
    parts = crypten.cat([sel, u.index_select(1, torch.tensor(rest))], dim=1)
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.tensor(list(toks) + rest)] = torch.arange(n)
    return parts.index_select(1, inverse)


def _zero_like(x: MPCTensor) -> MPCTensor:
    """Zero shares with the shape and scale of ``x`` (a stand-in for a weight in a dry run)."""
    z = x.clone()
    z._tensor.share.zero_()
    return z


def _provider_name() -> str:
    provider = current_provider()
    if isinstance(provider, DealerProvider):
        return "dealer"
    if isinstance(provider, TFPProvider) or getattr(provider, "NAME", "") == "TFP":
        return "tfp"
    return str(getattr(provider, "NAME", "unknown")).lower()

