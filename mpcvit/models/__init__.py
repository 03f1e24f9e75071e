"""The MPC-friendly ViT-Lite family: spec, model, registry."""

from mpcvit.models.registry import SHAPES, VARIANTS, build_model, create_model, list_models, model_spec, variant_of
from mpcvit.models.spec import ACT_KINDS, ATTN_KINDS, NORM_KINDS, POOL_KINDS, ArchSpec
from mpcvit.models.vit import ATTN_FUNCS, VisionTransformer

__all__ = [
    "ACT_KINDS", "ATTN_FUNCS", "ATTN_KINDS", "NORM_KINDS", "POOL_KINDS", "SHAPES", "VARIANTS",
    "ArchSpec", "VisionTransformer", "build_model", "create_model", "list_models", "model_spec", "variant_of",
]
