"""The models the coordinator offers: public facts read from each checkpoint's arch.json + meta.json.

The coordinator never reads weights. A model's name is its checkpoint
directory relative to ``model_dir`` (what the parties' LoadModel takes), e.g.
``vit_2_4_8`` for ``checkpoints/digits/vit_2_4_8``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpcvit.checkpoint import ARCH, CheckpointError, load_meta, load_spec
from mpcvit.models.registry import VARIANTS
from mpcvit.models.spec import ArchSpec

log = logging.getLogger(__name__)

# /v1/compare's default order: the baselines, then ours.
COMPARE_VARIANTS: tuple[str, ...] = ("vit", "mpcformer", "thex", "mpcvit", "mpcvitplus")


@dataclass
class ModelEntry:
    """One servable model: what any client may know about it."""

    name: str
    spec: ArchSpec
    meta: dict[str, Any]
    variant: str
    measured: dict[str, Any] | None = None  # costs of the last batch-of-one forward, once seen
    precision_bits: int = 16
    loaded: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    @property
    def classes(self) -> list[str]:
        names = self.meta.get("classes") or self.meta.get("class_names")
        if isinstance(names, list) and len(names) == self.spec.num_classes:
            return [str(c) for c in names]
        return [str(i) for i in range(self.spec.num_classes)]

    @property
    def accuracy(self) -> float | None:
        """The plaintext test accuracy recorded in meta.json, as a fraction or percent, whichever it holds."""
        for source in (self.meta, self.meta.get("metrics") or {}):
            for key in ("test_accuracy", "test_acc", "accuracy", "acc"):
                value = source.get(key) if isinstance(source, dict) else None
                if isinstance(value, (int, float)):
                    return float(value)
        return None


def _variant_of(name: str, spec: ArchSpec) -> str:
    for candidate in (spec.name, Path(name).name):
        head = candidate.partition("_")[0]
        if head in VARIANTS:
            return head
    return "custom"


class Catalog:
    """Model entries by name, scanned from ``model_dir`` (sub-directories holding an arch.json)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self.entries: dict[str, ModelEntry] = {}
        self.refresh()

    def refresh(self) -> None:
        found: dict[str, ModelEntry] = {}
        if not self.model_dir.is_dir():
            log.warning("model directory %s does not exist: no models to serve", self.model_dir)
        else:
            for arch in sorted(self.model_dir.rglob(ARCH)):
                d = arch.parent
                name = d.relative_to(self.model_dir).as_posix()
                if name == ".":
                    name = d.name
                try:
                    spec, meta = load_spec(d), load_meta(d)
                except CheckpointError as exc:
                    log.warning("skipping %s: %s", d, exc)
                    continue
                old = self.entries.get(name)
                entry = ModelEntry(name, spec, meta, _variant_of(name, spec))
                if old is not None:
                    entry.measured, entry.precision_bits, entry.loaded = old.measured, old.precision_bits, old.loaded
                found[name] = entry
        self.entries = found

    def get(self, name: str) -> ModelEntry | None:
        return self.entries.get(name)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def compare_defaults(self) -> list[str]:
        """The softmax ViT, MPCFormer, THE-X, MPCViT and MPCViT+ models that exist, in that order."""
        out: list[str] = []
        for variant in COMPARE_VARIANTS:
            out += [n for n in self.names() if self.entries[n].variant == variant]
        return out
