"""Bring your own ViT: a timm Vision Transformer becomes a checkpoint of this project.

``import_timm_model(model)`` reads a timm ``VisionTransformer`` object;
``import_timm_weights(state, name=..., num_heads=...)`` reads its state dict
(a ``.safetensors`` file or a torch state-dict file, loaded without
unpickling arbitrary objects) with the architecture taken from a timm model
name or from the weights' shapes. Both return the project's
``VisionTransformer`` and the ``meta.json`` entries the importer knows
(normalisation, class names, where it came from); ``save_checkpoint`` writes
them as arch.json + model.safetensors + meta.json.

What maps one to one (timm name -> ours): ``patch_embed.proj`` ->
``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks.i.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm`` or ``fc_norm`` -> ``norm``,
``head``. What is rewritten exactly: a missing qkv / proj / patch bias becomes
zeros; LayerScale (``ls1.gamma``, ``ls2.gamma``, timm's ``init_values``) is
folded into the linear before it (``W' = diag(gamma) W``, ``b' = gamma b``);
position embeddings that skip the class token (``no_embed_class``) get a zero
row for it. ``global_pool`` "token" and "avg" (with the final norm before or
after pooling) are kept as ``ArchSpec.pool`` / ``norm_after_pool``.

What is refused, with the reason (``ImportRefused``, a ``ValueError``): no
classifier head, no class token, register tokens, distillation tokens,
pre-norm (CLIP's ``norm_pre``), no final norm, max / attention pooling,
pooling that includes the class token, QK-norm or other inner norms, gated
attention, a head dim other than ``embed_dim / num_heads``, activations other
than exact GeLU or ReLU, norms other than LayerNorm with one epsilon, other
block or MLP classes, non-square images or patches, dynamic image sizes.

timm itself is needed only to read a model object by duck typing (nothing
here imports it) or to build one by name (``build_timm``); see
``load_timm`` for how it is imported without a CUDA torchvision.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mpcvit.models.spec import ArchSpec
from mpcvit.models.vit import VisionTransformer

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DeiT's input normalisation
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the original (augreg) ViTs'
TIMM_NORM_EPS = 1e-6  # timm's ViT LayerNorm epsilon


class ImportRefused(ValueError):
    """The model uses something this project's ViT family cannot represent; the message says what."""


@dataclass(frozen=True)
class Preset:
    """The shape of a named timm ViT, for reading its weights without timm installed."""

    embed_dim: int
    depth: int
    num_heads: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int = 224
    patch_size: int = 16


PRESETS: dict[str, Preset] = {
    "vit_tiny_patch16_224": Preset(192, 12, 3, INCEPTION_MEAN, INCEPTION_STD),
    "vit_small_patch16_224": Preset(384, 12, 6, INCEPTION_MEAN, INCEPTION_STD),
    "vit_base_patch16_224": Preset(768, 12, 12, INCEPTION_MEAN, INCEPTION_STD),
    "deit_tiny_patch16_224": Preset(192, 12, 3, IMAGENET_MEAN, IMAGENET_STD),
    "deit_small_patch16_224": Preset(384, 12, 6, IMAGENET_MEAN, IMAGENET_STD),
    "deit_base_patch16_224": Preset(768, 12, 12, IMAGENET_MEAN, IMAGENET_STD),
}


@dataclass
class Imported:
    """An imported model and what its checkpoint's meta.json says about it."""

    model: VisionTransformer
    meta: dict[str, Any] = field(default_factory=dict)


# -- timm itself (tests, and building a model by name) ----------------------------------------------------
def load_timm() -> Any:
    """Import timm (installed with ``--no-deps`` next to ``torchvision==0.28.0``, the build made for torch 2.13).

    PyPI's torchvision wheels are CUDA builds: against torch's CPU build their C++ ops do not load, which
    torchvision tolerates except for two fake-kernel registrations (``torchvision::nms`` / ``qnms``) that it
    makes unconditionally. Declaring those two operator schemas first lets ``import torchvision`` finish;
    ViTs never call a torchvision op. Raises ``RuntimeError`` naming the install line when timm is missing.
    """
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        pass  # timm's own import says what is missing
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        _declare_torchvision_ops()
    try:
        import timm
    except ImportError as exc:
        raise RuntimeError(
            "timm is not installed: pip install --no-deps timm==1.0.31 torchvision==0.28.0 (see requirements-timm.txt)"
        ) from exc
    return timm


_DECLARED: list[Any] = []  # keeps the Library alive: its schemas vanish with it


def _declare_torchvision_ops() -> None:
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so the next import starts over
    if not _DECLARED:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        _DECLARED.append(lib)


def build_timm(name: str, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model by name (``pretrained=False``: nothing is downloaded)."""
    timm = load_timm()
    try:
        return timm.create_model(name, pretrained=False, **kwargs).eval()
    except RuntimeError as exc:
        raise ImportRefused(f"timm has no model {name!r}: {exc}") from exc


# -- reading a timm model object ---------------------------------------------------------------------------
def _refuse(cond: bool, reason: str) -> None:
    if cond:
        raise ImportRefused(reason)


def _is_identity(m: Any) -> bool:
    return m is None or isinstance(m, nn.Identity)


def _square(value: Any, what: str) -> int:
    if isinstance(value, int):
        return value
    a, b = tuple(value)
    _refuse(a != b, f"{what} {a}x{b} is not square; only square images and patches are supported")
    return int(a)


def _norm_eps(norm: Any, where: str) -> float:
    _refuse(not isinstance(norm, nn.LayerNorm), f"{where} is {type(norm).__name__}; only LayerNorm is supported")
    _refuse(tuple(norm.normalized_shape) != (norm.normalized_shape[0],), f"{where} normalises more than the feature dim")
    return float(norm.eps)


def _activation(act: Any, layer: int) -> str:
    kind = type(act).__name__
    approximate = getattr(act, "approximate", "none")
    if kind == "GELU" and approximate == "none":  # torch's and timm's exact (erf) GeLU
        return "gelu"
    if kind == "ReLU":
        return "relu"
    raise ImportRefused(f"block {layer} uses activation {kind}{'' if approximate == 'none' else f'({approximate})'}; "
                        "only exact GeLU or ReLU are supported")


def _check_block(blk: Any, l: int, dim: int, num_heads: int) -> tuple[str, list[float]]:
    """The block's activation and norm epsilons; refuses what a pre-norm attention + MLP block cannot hold."""
    for part in ("norm1", "attn", "norm2", "mlp"):
        _refuse(not hasattr(blk, part), f"block {l} ({type(blk).__name__}) is not a pre-norm attention + MLP block: no {part}")
    _refuse(type(blk).__name__ != "Block", f"block {l} is a {type(blk).__name__}; only timm's Block is supported")
    attn, mlp = blk.attn, blk.mlp
    _refuse(type(attn).__name__ != "Attention", f"block {l} attention is {type(attn).__name__}; only timm's Attention is supported")
    _refuse(int(attn.num_heads) != num_heads, f"block {l} has {attn.num_heads} heads, block 0 has {num_heads}")
    _refuse(int(attn.num_heads) * int(attn.head_dim) != dim, f"block {l} has head dim {attn.head_dim} x {attn.num_heads} heads != embed dim {dim}")
    for inner in ("q_norm", "k_norm", "norm"):
        _refuse(not _is_identity(getattr(attn, inner, None)), f"block {l} attention has {inner} (QK-norm / scaled norm); not supported")
    _refuse(getattr(attn, "gate", None) is not None, f"block {l} has gated attention; not supported")
    _refuse(type(mlp).__name__ != "Mlp" or not hasattr(mlp, "fc1"), f"block {l} MLP is {type(mlp).__name__}; only timm's Mlp (fc1, act, fc2) is supported")
    _refuse(not _is_identity(getattr(mlp, "norm", None)), f"block {l} MLP has an inner norm; not supported")
    for ls in ("ls1", "ls2"):
        m = getattr(blk, ls, None)
        _refuse(not (_is_identity(m) or hasattr(m, "gamma")), f"block {l} {ls} is {type(m).__name__}; only LayerScale is supported")
    return _activation(mlp.act, l), [_norm_eps(blk.norm1, f"block {l} norm1"), _norm_eps(blk.norm2, f"block {l} norm2")]


def _check_model(model: nn.Module) -> dict[str, Any]:
    """The architecture of a timm VisionTransformer, or ImportRefused with the reason."""
    _refuse(not all(hasattr(model, a) for a in ("patch_embed", "blocks", "head", "global_pool")),
            f"{type(model).__name__} is not a timm VisionTransformer (no patch_embed / blocks / head / global_pool)")
    _refuse(type(model).__name__ != "VisionTransformer",
            f"{type(model).__name__} is not supported (distilled or other ViT variants); only timm's VisionTransformer is")
    _refuse(not isinstance(model.head, nn.Linear), "the model has no classifier head (num_classes=0); import a classifier")
    _refuse(getattr(model, "cls_token", None) is None, "the model has no class token; only class-token ViTs are supported")
    _refuse(int(getattr(model, "num_reg_tokens", 0) or 0) > 0, "the model has register tokens; not supported")
    _refuse(not _is_identity(getattr(model, "norm_pre", None)), "the model has a pre-norm after the embedding (pre_norm=True, as CLIP); not supported")
    _refuse(bool(getattr(model, "dynamic_img_size", False)), "dynamic_img_size=True is not supported; export with a fixed image size")
    pool = model.global_pool
    _refuse(pool not in ("token", "avg"), f"global_pool={pool!r} is not supported; only 'token' and 'avg'")
    _refuse(getattr(model, "attn_pool", None) is not None, "attention pooling is not supported")
    _refuse(pool == "avg" and bool(getattr(model, "pool_include_prefix", False)), "average pooling over the class token too (pool_include_prefix) is not supported")
    has_norm, has_fc_norm = not _is_identity(model.norm), not _is_identity(getattr(model, "fc_norm", None))
    _refuse(not has_norm and not has_fc_norm, "the model has no final norm (final_norm=False); not supported")
    pe = model.patch_embed
    _refuse(not isinstance(getattr(pe, "proj", None), nn.Conv2d), "the patch embedding is not a single convolution; not supported")
    _refuse(not _is_identity(getattr(pe, "norm", None)), "the patch embedding has a norm; not supported")
    _refuse(bool(getattr(pe, "dynamic_img_pad", False)), "dynamic_img_pad=True is not supported")
    _refuse(getattr(pe, "img_size", None) is None, "the patch embedding has no fixed image size; not supported")
    img, patch = _square(pe.img_size, "image size"), _square(pe.patch_size, "patch size")
    conv = pe.proj
    _refuse(tuple(conv.kernel_size) != (patch, patch) or tuple(conv.stride) != (patch, patch) or tuple(conv.padding) != (0, 0),
            "the patch convolution is not kernel = stride = patch, no padding; not supported")
    _refuse(img % patch != 0, f"image size {img} is not a multiple of patch size {patch}")
    dim = int(conv.out_channels)
    heads = int(model.blocks[0].attn.num_heads)
    acts, eps = [], [_norm_eps(model.norm if has_norm else model.fc_norm, "the final norm")]
    for l, blk in enumerate(model.blocks):
        act, e = _check_block(blk, l, dim, heads)
        acts.append(act)
        eps += e
    _refuse(len(set(eps)) != 1, f"the LayerNorms use different epsilons {sorted(set(eps))}; one is supported")
    mlp_dim = int(model.blocks[0].mlp.fc1.out_features)
    _refuse(any(int(b.mlp.fc1.out_features) != mlp_dim for b in model.blocks), "the blocks' MLP widths differ; not supported")
    return dict(
        img_size=img, in_chans=int(conv.in_channels), patch_size=patch, num_classes=int(model.head.out_features),
        embed_dim=dim, depth=len(model.blocks), num_heads=heads, mlp_dim=mlp_dim, act=tuple(acts),
        norm_eps=eps[0], pool=pool, norm_after_pool=has_fc_norm, no_embed_class=bool(getattr(model, "no_embed_class", False)),
    )


def import_timm_model(model: nn.Module, name: str = "", class_names: list[str] | None = None,
                      mean: list[float] | None = None, std: list[float] | None = None) -> Imported:
    """Convert a timm VisionTransformer object (refuses what cannot be represented, with the reason).

    The input normalisation is ``mean`` / ``std`` when given, else the model's ``pretrained_cfg``'s."""
    arch = _check_model(model)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = name or str(cfg.get("architecture") or "")
    return _convert(state, arch, name, mean or cfg.get("mean"), std or cfg.get("std"), class_names)


# -- reading a state dict (with a name or the number of heads) --------------------------------------------
def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only``: no arbitrary unpickling)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{p} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"{p} is not a torch state-dict file ({type(exc).__name__}); use .safetensors or a state dict saved with torch.save") from exc
    for key in ("state_dict", "model", "model_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"{p} does not hold a state dict (name -> tensor)")
    return obj


def _arch_from_state(state: dict[str, torch.Tensor], num_heads: int, pool: str | None) -> dict[str, Any]:
    """The architecture read off the weights' names and shapes; the heads and activation cannot be, so they are given."""
    keys = set(state)
    for key, reason in (("dist_token", "a distilled DeiT (dist_token, two heads) is not supported; import the non-distilled model"),
                        ("reg_token", "the model has register tokens; not supported"),
                        ("norm_pre.weight", "the model has a pre-norm after the embedding (as CLIP); not supported"),
                        ("attn_pool.latent", "attention pooling is not supported")):
        _refuse(key in keys, reason)
    _refuse("head.weight" not in keys, "the weights have no classifier head (head.weight); import a classifier")
    _refuse("cls_token" not in keys, "the weights have no class token; only class-token ViTs are supported")
    _refuse("patch_embed.proj.weight" not in keys, "no patch_embed.proj.weight: not a timm VisionTransformer state dict")
    for k in keys:
        _refuse(".q_norm." in k or ".k_norm." in k, "the weights have QK-norm; not supported")
        _refuse(".mlp.norm." in k or ".attn.norm." in k, "the weights have inner norms; not supported")
        _refuse(".mlp.fc1_g." in k or ".mlp.fc1_x." in k or ".mlp.w12." in k, "the weights have a gated (SwiGLU) MLP; not supported")
    conv = state["patch_embed.proj.weight"]  # (E, C, p, p)
    E, C, p, p2 = conv.shape
    _refuse(p != p2, f"patch {p}x{p2} is not square")
    depth = 1 + max((int(k.split(".")[1]) for k in keys if k.startswith("blocks.")), default=-1)
    _refuse(depth == 0, "the weights have no blocks")
    has_fc_norm = "fc_norm.weight" in keys
    _refuse(not has_fc_norm and "norm.weight" not in keys, "the weights have no final norm; not supported")
    pool = pool or ("avg" if has_fc_norm else "token")
    _refuse(pool not in ("token", "avg"), f"pool {pool!r} is not supported; only 'token' and 'avg'")
    n_patch = int(state["pos_embed"].shape[1]) if "pos_embed" in keys else None
    if n_patch is None:
        raise ImportRefused("the weights have no pos_embed; give the image size through a timm model name")
    grid = math.isqrt(n_patch)
    no_embed_class = grid * grid == n_patch
    if not no_embed_class:
        grid = math.isqrt(n_patch - 1)
        _refuse(grid * grid != n_patch - 1, f"pos_embed has {n_patch} rows: not a square grid (+ class token)")
    _refuse(E % num_heads != 0, f"embed dim {E} is not a multiple of {num_heads} heads")
    return dict(
        img_size=grid * p, in_chans=int(C), patch_size=int(p), num_classes=int(state["head.weight"].shape[0]),
        embed_dim=int(E), depth=depth, num_heads=num_heads, mlp_dim=int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        act=("gelu",) * depth, norm_eps=TIMM_NORM_EPS, pool=pool, norm_after_pool=has_fc_norm, no_embed_class=no_embed_class,
    )


def import_timm_weights(state: dict[str, torch.Tensor], name: str = "", num_heads: int | None = None,
                        pool: str | None = None, class_names: list[str] | None = None,
                        mean: list[float] | None = None, std: list[float] | None = None) -> Imported:
    """Convert a timm ViT state dict. The heads come from ``num_heads`` or the preset ``name``; with timm
    installed, any timm ViT ``name`` works (the weights are loaded into ``build_timm(name)`` and read from it)."""
    preset = PRESETS.get(name)
    if num_heads is None and preset is None and name:
        timm_model = build_timm(name, num_classes=int(state["head.weight"].shape[0]) if "head.weight" in state else 0)
        try:
            timm_model.load_state_dict(state)
        except RuntimeError as exc:
            raise ImportRefused(f"the weights do not fit timm's {name}: {str(exc).splitlines()[0]}") from exc
        return import_timm_model(timm_model, name, class_names, mean, std)
    if num_heads is None:
        if preset is None:
            raise ImportRefused("the number of heads cannot be read off the weights: give a timm model name or --num-heads")
        num_heads = preset.num_heads
    arch = _arch_from_state(state, num_heads, pool)
    if preset is not None:
        _refuse((arch["embed_dim"], arch["depth"]) != (preset.embed_dim, preset.depth),
                f"the weights (dim {arch['embed_dim']}, depth {arch['depth']}) are not {name}'s (dim {preset.embed_dim}, depth {preset.depth})")
    if preset is not None:
        mean, std = mean or preset.mean, std or preset.std
    return _convert(state, arch, name, mean, std, class_names)


# -- the conversion itself -----------------------------------------------------------------------------------
def _convert(state: dict[str, torch.Tensor], arch: dict[str, Any], name: str, mean: Any, std: Any,
             class_names: list[str] | None) -> Imported:
    arch = dict(arch)
    no_embed_class = arch.pop("no_embed_class")
    act = arch.pop("act")
    H, L = arch["num_heads"], arch["depth"]
    spec = ArchSpec(**arch, attn=tuple(("softmax",) * H for _ in range(L)), act=act, norm="layernorm", name=name or "imported_vit")
    model = VisionTransformer(spec)
    ours = _map_state(state, spec, no_embed_class)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    _refuse(bool(missing), f"the weights lack {missing[:4]}: not a complete timm ViT state dict")
    for k, v in ours.items():
        _refuse(tuple(v.shape) != tuple(expected[k].shape), f"weight {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    model.load_state_dict(ours)
    model.eval()
    if class_names is not None and len(class_names) != spec.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {spec.num_classes} classes")
    mean, std = _per_channel(mean, 0.0, spec.in_chans, "mean"), _per_channel(std, 1.0, spec.in_chans, "std")
    if min(std) <= 0:
        raise ValueError(f"the normalisation's std must be positive, got {std}")
    meta: dict[str, Any] = {
        "model": spec.name,
        "normalisation": {"mean": mean, "std": std},
        "class_names": list(class_names) if class_names is not None else [str(i) for i in range(spec.num_classes)],
        "imported": {"from": "timm", "name": name or None},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return Imported(model, meta)


def _per_channel(values: Any, default: float, channels: int, what: str) -> list[float]:
    """One value per input channel: a single value (or equal ones) is repeated; other counts must match."""
    vals = [float(v) for v in (values if values is not None else (default,))]
    if len(vals) != channels:
        if len(set(vals)) != 1:
            raise ValueError(f"the normalisation {what} has {len(vals)} values for {channels} input channels; give {channels}")
        vals = vals[:1] * channels
    return vals


def _map_state(state: dict[str, torch.Tensor], spec: ArchSpec, no_embed_class: bool) -> dict[str, torch.Tensor]:
    """timm names -> ours, with LayerScale folded, missing biases as zeros, and unused timm entries refused."""
    src = {k: v.detach().float().cpu() for k, v in state.items()}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return src[key]

    def bias(key: str, n: int) -> torch.Tensor:
        return take(key) if key in src else torch.zeros(n)

    C, M = spec.embed_dim, spec.mlp_dim
    out: dict[str, torch.Tensor] = {
        "patch_embed.weight": take("patch_embed.proj.weight"),
        "patch_embed.bias": bias("patch_embed.proj.bias", C),
        "cls_token": take("cls_token"),
    }
    pos = take("pos_embed") if "pos_embed" in src else torch.zeros(1, spec.num_tokens - 1 if no_embed_class else spec.num_tokens, C)
    out["pos_embed"] = torch.cat([torch.zeros(1, 1, C), pos], dim=1) if no_embed_class else pos
    for l in range(spec.depth):
        b = f"blocks.{l}."
        g1 = take(b + "ls1.gamma") if b + "ls1.gamma" in src else torch.ones(C)
        g2 = take(b + "ls2.gamma") if b + "ls2.gamma" in src else torch.ones(C)
        for norm in ("norm1", "norm2"):
            out[b + norm + ".weight"] = take(b + norm + ".weight") if b + norm + ".weight" in src else torch.ones(C)
            out[b + norm + ".bias"] = bias(b + norm + ".bias", C)
        out[b + "attn.qkv.weight"] = take(b + "attn.qkv.weight")
        out[b + "attn.qkv.bias"] = bias(b + "attn.qkv.bias", 3 * C)
        out[b + "attn.proj.weight"] = take(b + "attn.proj.weight") * g1[:, None]  # LayerScale folded: diag(g) W
        out[b + "attn.proj.bias"] = bias(b + "attn.proj.bias", C) * g1
        out[b + "mlp.fc1.weight"] = take(b + "mlp.fc1.weight")
        out[b + "mlp.fc1.bias"] = bias(b + "mlp.fc1.bias", M)
        out[b + "mlp.fc2.weight"] = take(b + "mlp.fc2.weight") * g2[:, None]
        out[b + "mlp.fc2.bias"] = bias(b + "mlp.fc2.bias", C) * g2
    final = "fc_norm" if spec.norm_after_pool else "norm"
    out["norm.weight"] = take(final + ".weight") if final + ".weight" in src else torch.ones(C)
    out["norm.bias"] = bias(final + ".bias", C)
    out["head.weight"], out["head.bias"] = take("head.weight"), bias("head.bias", spec.num_classes)
    unused = sorted(set(src) - used)
    _refuse(bool(unused), f"the weights hold entries this ViT family has no place for: {unused[:4]}")
    return out


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
