"""mpcvit: private inference of MPC-friendly Vision Transformers (MPCViT / MPCViT+) over 2PC."""

import os

# Idle OpenMP threads sleep instead of spinning. Party processes, training and
# the coordinator often share a few cores; spinning threads then starve each
# other (a 2-thread training step went from 5.6 s to 0.21 s under load). Must be
# set before torch loads its OpenMP runtime; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mpcvit.models import ArchSpec, VisionTransformer, build_model, create_model, list_models, model_spec

__version__ = "0.1.0"
__all__ = ["ArchSpec", "VisionTransformer", "build_model", "create_model", "list_models", "model_spec"]
