"""A JAX twin of ``mpcvit.models.vit``: the same ViT-Lite family, from the same spec and weights.

Every attention kind (softmax, ReLU-softmax, scaling, 2Quad, THE-X), every
activation (GeLU, Quad, ReLU, identity, per-token choices) and both norms
(LayerNorm, THE-X's affine map) follow the torch definitions line by line, so
the twin's plaintext logits equal the torch model's (``tests/benchmarks/
test_spu.py`` checks 1e-4). The same function, compiled by SPU, is what the
SPU runner evaluates under MPC.

The spec is ``arch.json`` read as a plain dict (this module runs where torch and
the project are not installed). Weights are the torch ``state_dict`` as numpy
arrays (``model.safetensors`` read with ``safetensors.numpy``).

Preparation in plaintext, as party 0 would do before sharing: the patch
convolution becomes one matrix (a stride-p conv on p x p patches is a matmul),
and an MLP whose activation is the identity on every token is fused into one
linear map, as the project's export does. Nothing else is folded: SPU sees the
model as written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]
LAYERNORM_EPS = 1e-5  # torch.nn.LayerNorm's default


# -- spec helpers (the same rules as ArchSpec) ---------------------------------------


def num_tokens(spec: Mapping[str, Any]) -> int:
    return (spec["img_size"] // spec["patch_size"]) ** 2 + 1


def tokens_with_act(spec: Mapping[str, Any], layer: int) -> list[int] | None:
    toks = spec.get("act_tokens")
    return None if toks is None else toks[layer]


def mlp_is_linear(spec: Mapping[str, Any], layer: int) -> bool:
    toks = tokens_with_act(spec, layer)
    return spec["act"][layer] == "identity" or (toks is not None and len(toks) == 0)


def head_groups(kinds: list[str]) -> dict[str, list[int]]:
    """Head indices of each attention kind, in first-seen order (as the torch model groups them)."""
    groups: dict[str, list[int]] = {}
    for h, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(h)
    return groups


# -- plaintext preparation (numpy) ---------------------------------------------------


def prepare_params(state: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> Params:
    """The twin's parameter tree from a torch ``state_dict`` (numpy arrays, float32)."""
    f = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
    C = spec["embed_dim"]
    p: Params = {
        "patch_w": f["patch_embed.weight"].reshape(C, -1).T,  # (Cin p p, C)
        "patch_b": f["patch_embed.bias"],
        "cls": f["cls_token"].reshape(1, C),
        "pos": f["pos_embed"].reshape(-1, C),
        "norm": _norm(f, "norm"),
        "head_w": f["head.weight"].T,
        "head_b": f["head.bias"],
        "blocks": [],
    }
    for l in range(spec["depth"]):
        pre = f"blocks.{l}."
        blk: Params = {
            "norm1": _norm(f, pre + "norm1"),
            "norm2": _norm(f, pre + "norm2"),
            "qkv_w": f[pre + "attn.qkv.weight"].T,
            "qkv_b": f[pre + "attn.qkv.bias"],
            "proj_w": f[pre + "attn.proj.weight"].T,
            "proj_b": f[pre + "attn.proj.bias"],
        }
        w1, b1 = f[pre + "mlp.fc1.weight"], f[pre + "mlp.fc1.bias"]
        w2, b2 = f[pre + "mlp.fc2.weight"], f[pre + "mlp.fc2.bias"]
        if mlp_is_linear(spec, l):
            blk["fused_w"] = (w2.astype(np.float64) @ w1).T.astype(np.float32)  # (C, C)
            blk["fused_b"] = (w2.astype(np.float64) @ b1 + b2).astype(np.float32)
        else:
            blk.update(fc1_w=w1.T, fc1_b=b1, fc2_w=w2.T, fc2_b=b2)
        p["blocks"].append(blk)
    return p


def _norm(f: Mapping[str, np.ndarray], name: str) -> Params:
    return {"w": f[name + ".weight"], "b": f[name + ".bias"]}


def random_state(spec: Mapping[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """A torch-shaped ``state_dict`` of random weights (costs do not depend on values)."""
    rng = np.random.default_rng(seed)
    C, M, L = spec["embed_dim"], spec["mlp_dim"], spec["depth"]
    cin, ps, K = spec["in_chans"], spec["patch_size"], spec["num_classes"]

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, np.float32)

    s = {"patch_embed.weight": w(C, cin, ps, ps), "patch_embed.bias": zeros(C), "cls_token": w(1, 1, C),
         "pos_embed": w(1, num_tokens(spec), C), "norm.weight": ones(C), "norm.bias": zeros(C),
         "head.weight": w(K, C), "head.bias": zeros(K)}
    for l in range(L):
        pre = f"blocks.{l}."
        s.update({pre + "norm1.weight": ones(C), pre + "norm1.bias": zeros(C), pre + "norm2.weight": ones(C),
                  pre + "norm2.bias": zeros(C), pre + "attn.qkv.weight": w(3 * C, C), pre + "attn.qkv.bias": zeros(3 * C),
                  pre + "attn.proj.weight": w(C, C), pre + "attn.proj.bias": zeros(C), pre + "mlp.fc1.weight": w(M, C),
                  pre + "mlp.fc1.bias": zeros(M), pre + "mlp.fc2.weight": w(C, M), pre + "mlp.fc2.bias": zeros(C)})
    return s


# -- the forward pass (jax) ----------------------------------------------------------


def _scores(q: jax.Array, k: jax.Array) -> jax.Array:
    return q @ jnp.swapaxes(k, -2, -1) * q.shape[-1] ** -0.5  # (B, h, N, N)


def attn_softmax(q: jax.Array, k: jax.Array, v: jax.Array, spec: Mapping[str, Any]) -> jax.Array:
    return jax.nn.softmax(_scores(q, k), axis=-1) @ v


def attn_relu(q: jax.Array, k: jax.Array, v: jax.Array, spec: Mapping[str, Any]) -> jax.Array:
    r = jax.nn.relu(_scores(q, k))
    return (r / (r.sum(axis=-1, keepdims=True) + spec.get("relu_eps", 1e-2))) @ v


def attn_scale(q: jax.Array, k: jax.Array, v: jax.Array, spec: Mapping[str, Any]) -> jax.Array:
    N, D = q.shape[-2], q.shape[-1]
    return q @ (jnp.swapaxes(k, -2, -1) @ v) * (D**-0.5 / N)  # (B, h, N, D)


def attn_2quad(q: jax.Array, k: jax.Array, v: jax.Array, spec: Mapping[str, Any]) -> jax.Array:
    s = jnp.square(_scores(q, k) + spec.get("quad_c", 5.0))
    return (s / s.sum(axis=-1, keepdims=True)) @ v


def thex_exp(x: jax.Array, order: int) -> jax.Array:
    """THE-X's ReLU-polynomial estimate of exp: ReLU(1 + x / n)^n (n a power of two: repeated squaring)."""
    y = jax.nn.relu(1 + x / order)
    for _ in range(int(np.log2(order))):
        y = y * y
    return y


def attn_thex(q: jax.Array, k: jax.Array, v: jax.Array, spec: Mapping[str, Any]) -> jax.Array:
    e = thex_exp(_scores(q, k), spec.get("thex_order", 4))
    return (e / (e.sum(axis=-1, keepdims=True) + spec.get("relu_eps", 1e-2))) @ v


ATTN_FUNCS: dict[str, Callable[..., jax.Array]] = {
    "softmax": attn_softmax, "relu": attn_relu, "scale": attn_scale, "2quad": attn_2quad, "thex": attn_thex,
}


def gelu(x: jax.Array) -> jax.Array:
    """torch's default GeLU, x Phi(x) with the exact erf."""
    return jax.nn.gelu(x, approximate=False)


def quad_gelu(x: jax.Array) -> jax.Array:
    """MPCFormer's Quad GeLU: 0.125 x^2 + 0.25 x + 0.5."""
    return 0.125 * jnp.square(x) + 0.25 * x + 0.5


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GeLU's tanh approximation, ``jax.nn.gelu``'s default: what a JAX or Flax model gets unless it asks
    for the exact erf, and SPU's cheaper setting, so the one ``benchmarks.spu_bench`` compares against
    (``gelu_form = "tanh"``, its default); torch's exact erf form is the labelled second setting."""
    return jax.nn.gelu(x, approximate=True)


ACT_FUNCS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu, "quad": quad_gelu, "relu": jax.nn.relu, "identity": lambda x: x,
}


def norm(x: jax.Array, p: Params, kind: str) -> jax.Array:
    if kind == "affine":  # THE-X: gamma x + beta
        return x * p["w"] + p["b"]
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = jnp.square(xc).mean(axis=-1, keepdims=True)
    return xc * jax.lax.rsqrt(var + LAYERNORM_EPS) * p["w"] + p["b"]


def attention(x: jax.Array, blk: Params, spec: Mapping[str, Any], layer: int) -> jax.Array:
    B, N, C = x.shape
    H = spec["num_heads"]
    qkv = (x @ blk["qkv_w"] + blk["qkv_b"]).reshape(B, N, 3, H, C // H)
    q, k, v = jnp.transpose(qkv, (2, 0, 3, 1, 4))  # each (B, H, N, D)
    groups = head_groups(list(spec["attn"][layer]))
    if len(groups) == 1:
        (kind,) = groups
        o = ATTN_FUNCS[kind](q, k, v, spec)
    else:
        order = [h for idx in groups.values() for h in idx]
        restore = np.argsort(order)
        outs, start = [], 0
        for kind, idx in groups.items():
            sel = np.asarray(order[start:start + len(idx)])
            outs.append(ATTN_FUNCS[kind](q[:, sel], k[:, sel], v[:, sel], spec))
            start += len(idx)
        o = jnp.concatenate(outs, axis=1)[:, restore]  # (B, H, N, D)
    return jnp.swapaxes(o, 1, 2).reshape(B, N, C) @ blk["proj_w"] + blk["proj_b"]


def mlp(x: jax.Array, blk: Params, spec: Mapping[str, Any], layer: int) -> jax.Array:
    if "fused_w" in blk:
        return x @ blk["fused_w"] + blk["fused_b"]
    h = x @ blk["fc1_w"] + blk["fc1_b"]
    act = ACT_FUNCS[spec["act"][layer]]
    if act is gelu and spec.get("gelu_form", "erf") == "tanh":  # spu_bench's default (SPU's best setting); plain twin: erf
        act = gelu_tanh
    toks = tokens_with_act(spec, layer)
    if toks is None:
        h = act(h)
    else:  # MPCViT+: the activation on the listed tokens only, the others pass through
        idx = np.asarray(sorted(toks))
        h = h.at[:, idx].set(act(h[:, idx]))
    return h @ blk["fc2_w"] + blk["fc2_b"]


def forward(params: Params, x: jax.Array, spec: Mapping[str, Any]) -> jax.Array:
    """Logits (B, num_classes) of a normalised image batch (B, C, H, W)."""
    B, cin, Hh, Ww = x.shape
    ps = spec["patch_size"]
    g = Hh // ps
    patches = x.reshape(B, cin, g, ps, g, ps).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, cin * ps * ps)
    t = patches @ params["patch_w"] + params["patch_b"]  # (B, N-1, C)
    cls = jnp.broadcast_to(params["cls"], (B, 1, t.shape[-1]))
    t = jnp.concatenate([cls, t], axis=1) + params["pos"]  # (B, N, C)
    kind = spec.get("norm", "layernorm")
    for l, blk in enumerate(params["blocks"]):
        t = t + attention(norm(t, blk["norm1"], kind), blk, spec, l)
        t = t + mlp(norm(t, blk["norm2"], kind), blk, spec, l)
    t = norm(t, params["norm"], kind)
    return t[:, 0] @ params["head_w"] + params["head_b"]
