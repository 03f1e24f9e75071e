"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``.

A name is ``<variant>_<shape>``, e.g. ``vit_7_4_32`` (softmax ViT, depth 7, 4
heads, 32x32 images). Shapes follow DESIGN.md's ViT-Lite family; variants fill
in the per-head / per-layer choices. ``overrides`` replace any ``ArchSpec``
field (``attn``, ``act``, ``num_classes``, ...), which is how MPCViT / MPCViT+
models are built from a searched architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mpcvit.models.spec import ArchSpec
from mpcvit.models.vit import VisionTransformer

# shape name -> ArchSpec shape fields
SHAPES: dict[str, dict[str, int]] = {
    # CIFAR-10/100, as in the paper
    "7_4_32": dict(img_size=32, in_chans=3, patch_size=4, num_classes=10, embed_dim=256, depth=7, num_heads=4, mlp_dim=512),
    # Tiny-ImageNet, as in the paper
    "9_12_64": dict(img_size=64, in_chans=3, patch_size=4, num_classes=200, embed_dim=192, depth=9, num_heads=12, mlp_dim=384),
    # Fashion-MNIST (28x28x1), the same shape scaled down
    "4_4_28": dict(img_size=28, in_chans=1, patch_size=4, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_dim=128),
    # sklearn digits (8x8x1), tests and CI
    "2_4_8": dict(img_size=8, in_chans=1, patch_size=2, num_classes=10, embed_dim=32, depth=2, num_heads=4, mlp_dim=64),
}


def _uniform(shape: dict[str, int], attn: str, act: str, norm: str = "layernorm") -> dict[str, Any]:
    return dict(
        attn=tuple((attn,) * shape["num_heads"] for _ in range(shape["depth"])),
        act=(act,) * shape["depth"],
        norm=norm,
    )


def _mpcvit_default(shape: dict[str, int], linear_mlp: bool) -> dict[str, Any]:
    """A placeholder MPCViT layout (half the heads ReLU-softmax, half scaling) until a search supplies one."""
    H, L = shape["num_heads"], shape["depth"]
    attn = tuple(tuple("relu" if h < H // 2 else "scale" for h in range(H)) for _ in range(L))
    act = tuple("identity" if linear_mlp and l >= L // 2 else "gelu" for l in range(L))
    return dict(attn=attn, act=act, norm="layernorm")


VARIANTS: dict[str, Callable[[dict[str, int]], dict[str, Any]]] = {
    "vit": lambda s: _uniform(s, "softmax", "gelu"),
    "mpcformer": lambda s: _uniform(s, "2quad", "quad"),
    "thex": lambda s: _uniform(s, "thex", "relu", norm="affine"),
    "relu": lambda s: _uniform(s, "relu", "gelu"),
    "scale": lambda s: _uniform(s, "scale", "gelu"),
    "mpcvit": lambda s: _mpcvit_default(s, linear_mlp=False),
    "mpcvitplus": lambda s: _mpcvit_default(s, linear_mlp=True),
}

VARIANT_DOCS: dict[str, str] = {
    "vit": "softmax attention, GeLU (the baseline)",
    "mpcformer": "MPCFormer: 2Quad attention, Quad GeLU",
    "thex": "THE-X: ReLU-polynomial softmax estimate, ReLU, affine norm",
    "relu": "every head ReLU-softmax, GeLU",
    "scale": "every head scaling attention, GeLU",
    "mpcvit": "MPCViT: heads mix ReLU-softmax and scaling (pass attn= from a search)",
    "mpcvitplus": "MPCViT+: MPCViT plus linearised MLPs (pass attn=, act=, act_tokens= from a search)",
}


def list_models() -> list[str]:
    return [f"{v}_{s}" for v in VARIANTS for s in SHAPES]


def parse_name(name: str) -> tuple[str, str]:
    variant, _, shape = name.partition("_")
    if variant not in VARIANTS or shape not in SHAPES:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(list_models())}")
    return variant, shape


def model_spec(name: str, **overrides: Any) -> ArchSpec:
    """The ArchSpec of a registered model, with any field overridden."""
    variant, shape = parse_name(name)
    fields: dict[str, Any] = dict(SHAPES[shape])
    fields.update(VARIANTS[variant](SHAPES[shape]))
    fields["name"] = name
    unknown = set(overrides) - set(ArchSpec.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown override(s) for {name}: {sorted(unknown)}")
    fields.update(overrides)
    if ("depth" in overrides or "num_heads" in overrides) and not ({"attn", "act"} & set(overrides)):
        fields.update(VARIANTS[variant]({**SHAPES[shape], **{k: fields[k] for k in ("depth", "num_heads")}}))
    return ArchSpec.from_dict(fields)


def variant_of(spec: ArchSpec, variant: str) -> ArchSpec:
    """``spec``'s shape, pooling and norm epsilon with a variant's attention / activation / norm choices.

    Where the variant computes GeLU, a layer keeps ``spec``'s own activation (GeLU or ReLU), so that
    ``spec``'s weights start the new model as closely as the variant allows. Named ``<variant>_<spec.name>``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    layout = VARIANTS[variant](dict(depth=spec.depth, num_heads=spec.num_heads))
    layout["act"] = tuple(spec.act[l] if kind == "gelu" else kind for l, kind in enumerate(layout["act"]))
    name = f"{variant}_{spec.name}" if spec.name else variant
    return spec.with_(**layout, act_tokens=None, name=name, extra={})


def create_model(name: str, **overrides: Any) -> VisionTransformer:
    """Build a registered model; unknown names or fields fail loudly."""
    return VisionTransformer(model_spec(name, **overrides))


def build_model(spec: ArchSpec) -> VisionTransformer:
    return VisionTransformer(spec)
