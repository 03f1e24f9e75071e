"""mpcvit: private inference of MPC-friendly Vision Transformers (MPCViT / MPCViT+) over 2PC."""

from mpcvit.models import ArchSpec, VisionTransformer, build_model, create_model, list_models, model_spec

__version__ = "0.1.0"
__all__ = ["ArchSpec", "VisionTransformer", "build_model", "create_model", "list_models", "model_spec"]
