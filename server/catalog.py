"""The models the coordinator offers: public facts read from each checkpoint's arch.json + meta.json.

The coordinator never reads weights. A model's name is its checkpoint
directory relative to ``model_dir`` (what the parties' LoadModel takes), e.g.
``vit_2_4_8`` for ``checkpoints/digits/vit_2_4_8``.

What is *listed* (``GET /v1/models``, the demo page, ``/v1/compare``'s
default) is the curated set of the folders' ``manifest.json`` files
(``mpcvit.checkpoint.Manifest``): one model per variant. A tree without any
manifest lists every checkpoint. A request may name a listed model or a
preload; any other checkpoint under ``model_dir`` only when the operator sets
``serve_unlisted`` (``Coordinator.serves``), so a client cannot make the
parties load an experiment directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpcvit.checkpoint import ARCH, MANIFEST, CheckpointError, load_manifest, load_meta, load_spec
from mpcvit.models.registry import VARIANTS
from mpcvit.models.spec import ArchSpec
from mpcvit.output_policy import OutputPolicy, PolicyError

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
    label: str = ""  # a readable name from the manifest; the name itself when none
    output_policy: str = ""  # what an answer reveals, as party 0 reported at load ("" before: meta.json's, else logits)


    @property
    def policy(self) -> str:
        """The model's output policy: party 0's (LoadModel), else what this copy of meta.json says (a hint), else logits.

        The coordinator never sets it: party 0 holds it and both parties enforce it.
        """
        if self.output_policy:
            return self.output_policy
        try:
            return str(OutputPolicy.parse(self.meta.get("output_policy"), self.spec.num_classes))
        except PolicyError:
            return "logits"

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
        self.curated: list[str] = []  # the manifests' models that exist, in manifest order
        self.default: str | None = None  # the first manifest's default
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
                entry = ModelEntry(name, spec, meta, _variant_of(name, spec), label=name)
                if old is not None:
                    entry.measured, entry.precision_bits, entry.loaded = old.measured, old.precision_bits, old.loaded
                    entry.output_policy = old.output_policy
                found[name] = entry
        self.entries = found
        self._read_manifests()

    def _read_manifests(self) -> None:
        self.curated, self.default = [], None
        if not self.model_dir.is_dir():
            return
        for path in sorted(self.model_dir.rglob(MANIFEST)):
            prefix = path.parent.relative_to(self.model_dir).as_posix()
            try:
                manifest = load_manifest(path.parent)
            except CheckpointError as exc:
                log.warning("ignoring %s", exc)
                continue
            assert manifest is not None
            full = (lambda n: n) if prefix == "." else (lambda n: f"{prefix}/{n}")
            for name in manifest.models:
                if full(name) not in self.entries:
                    log.warning("%s lists %s, which has no checkpoint", path, name)
                elif full(name) not in self.curated:
                    self.curated.append(full(name))
                    self.entries[full(name)].label = manifest.labels[name]
            if self.default is None and manifest.default is not None and full(manifest.default) in self.entries:
                self.default = full(manifest.default)

    def get(self, name: str) -> ModelEntry | None:
        return self.entries.get(name)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def listed(self) -> list[str]:
        """The curated models (manifest order), or every model when no manifest names one."""
        return list(self.curated) if self.curated else self.names()

    def compare_defaults(self) -> list[str]:
        """One listed model per variant, softmax ViT, MPCFormer, THE-X, MPCViT, MPCViT+, in that order.

        Per variant: the first in manifest order, or without a manifest the most accurate (then by name).
        """
        out: list[str] = []
        for variant in COMPARE_VARIANTS:
            candidates = [n for n in self.listed() if self.entries[n].variant == variant]
            if not self.curated:
                candidates.sort(key=lambda n: -(self.entries[n].accuracy or 0.0))  # stable: ties keep the name order
            out += candidates[:1]
        return out
