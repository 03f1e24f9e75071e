"""Checkpoints: a directory with ``model.safetensors``, ``arch.json`` and ``meta.json``.

``arch.json`` is the model's ``ArchSpec``; ``meta.json`` holds the dataset,
input normalisation, class names, metrics and the command that made it.
Loading rebuilds exactly the model that was saved, or fails with a
``CheckpointError`` that says what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mpcvit.models.spec import ArchSpec
from mpcvit.models.vit import VisionTransformer

if TYPE_CHECKING:
    from mpcvit.data import DatasetInfo

WEIGHTS, ARCH, META = "model.safetensors", "arch.json", "meta.json"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, corrupt, or does not match its architecture."""


def save_checkpoint(directory: str | Path, model: VisionTransformer, meta: dict[str, Any]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(d / WEIGHTS))
    (d / ARCH).write_text(model.spec.to_json() + "\n")
    (d / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return d


def load_spec(directory: str | Path) -> ArchSpec:
    d = Path(directory)
    if not (d / ARCH).is_file():
        raise CheckpointError(f"{d} is not a checkpoint: no {ARCH} (make one with 'mpcvit train', or bring a timm model in with 'mpcvit import')")
    try:
        return ArchSpec.from_json((d / ARCH).read_text())
    except ValueError as exc:
        raise CheckpointError(f"{d / ARCH}: {exc}") from exc


def load_meta(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / META
    if not p.is_file():
        raise CheckpointError(f"{Path(directory)} is not a checkpoint: no {META}")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{p} must hold a JSON object")
    return meta


def load_checkpoint(directory: str | Path) -> tuple[VisionTransformer, dict[str, Any]]:
    """Rebuild the saved model (in eval mode) and return it with its metadata."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    spec = load_spec(d)
    meta = load_meta(d)
    if not (d / WEIGHTS).is_file():
        raise CheckpointError(f"{d} has no {WEIGHTS}")
    try:
        state = load_file(str(d / WEIGHTS))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{d / WEIGHTS} is corrupt: {exc}") from exc
    model = VisionTransformer(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{d}: weights do not match arch.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{d}: weight {k} has shape {tuple(v.shape)}, arch.json needs {tuple(expected[k].shape)}")
    model.load_state_dict(state)
    model.eval()
    return model, meta


def normalise_input(x: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Apply the checkpoint's input normalisation to images in [0, 1], shape (B, C, H, W)."""
    norm = meta.get("normalisation", {})
    mean = torch.tensor(norm.get("mean", [0.0]), dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(norm.get("std", [1.0]), dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def checkpoint_label(directory: str | Path, meta: dict[str, Any]) -> str:
    """How a checkpoint is named to people: its folder's name, with the architecture when that differs.

    ``mpcvit_4_4_28_mu0.1 (mpcvit_4_4_28)``: the searched models of one shape share ``meta["model"]``, so the
    folder is what tells them apart.
    """
    name = Path(directory).resolve().name
    arch = meta.get("model")
    return f"{name} ({arch})" if arch and arch != name else name


def class_names(meta: dict[str, Any]) -> list[str] | None:
    """The checkpoint's class names: meta.json's ``class_names`` (or an older ``classes``), else its dataset's."""
    for key in ("class_names", "classes"):
        names = meta.get(key)
        if isinstance(names, list) and names:
            return [str(c) for c in names]
    dataset = meta.get("dataset")
    if not dataset:
        return None
    from mpcvit.data import dataset_info

    try:
        return list(dataset_info(str(dataset)).class_names)
    except (ValueError, OSError):
        return None


NORM_TOLERANCE = 1e-3  # normalisations this close are the same (published stats are rounded)


def _fmt(values: Any) -> str:
    return " ".join(f"{float(v):g}" for v in values)


def fit_to_dataset(what: str, spec: ArchSpec, meta: dict[str, Any], dataset: str, info: DatasetInfo,
                   own_normalisation: bool, flag: str) -> dict[str, list[float]]:
    """Check that a checkpoint (a teacher, or a search's start) fits ``dataset``; return the input normalisation to use.

    The checkpoint must name the dataset (an imported one names it with ``mpcvit import --dataset``),
    take its input shape and have its number of classes. Its input normalisation must be the
    dataset's, unless ``own_normalisation`` (the command's ``flag``): then the run uses the
    checkpoint's. Raises ``CheckpointError`` with one line, naming the checkpoint ``what``, saying what to do.
    """
    d, imported = what, "imported" in meta
    named = meta.get("dataset")
    if not named:
        how = f"re-run its 'mpcvit import' with --dataset {dataset}" if imported else f'add "dataset": "{dataset}" to its meta.json'
        raise CheckpointError(f"{d} names no dataset: if it was trained on {dataset}, {how}")
    if named != dataset:
        raise CheckpointError(f"{d} was trained on {named!r}, not {dataset!r}")
    if spec.input_shape != info.input_shape or spec.num_classes != info.num_classes:
        hint = ""
        if imported:
            c, h, _ = info.input_shape
            hint = (f"; import a timm model made for it (--timm-arg in_chans={c} --timm-arg img_size={h} "
                    f"--timm-arg num_classes={info.num_classes}, a patch_size dividing {h})")
        raise CheckpointError(f"{d} takes {spec.input_shape} -> {spec.num_classes} classes, "
                              f"{dataset} is {info.input_shape} -> {info.num_classes} classes{hint}")
    ours = meta.get("normalisation") or {}
    theirs = info.normalisation()
    same = all(len(ours.get(k, ())) == len(theirs[k])
               and all(abs(float(a) - float(b)) < NORM_TOLERANCE for a, b in zip(ours[k], theirs[k])) for k in ("mean", "std"))
    if same:
        return theirs
    if "mean" not in ours or "std" not in ours:
        raise CheckpointError(f"{d} records no input normalisation (meta.json 'normalisation': mean and std)")
    if own_normalisation:
        return {"mean": [float(v) for v in ours["mean"]], "std": [float(v) for v in ours["std"]]}
    theirs_args = f"--mean {_fmt(theirs['mean'])} --std {_fmt(theirs['std'])}"
    reimport = f", or re-import it with {theirs_args} if it was trained that way" if imported else ""
    raise CheckpointError(
        f"{d} expects inputs normalised with mean {_fmt(ours['mean'])} std {_fmt(ours['std'])}, {dataset} is normalised "
        f"with mean {_fmt(theirs['mean'])} std {_fmt(theirs['std'])}: pass {flag} to use the checkpoint's{reimport}"
    )


# -- the curated set of a checkpoint folder ----------------------------------------

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """``<folder>/manifest.json``: the checkpoints of a folder that are offered by default, and the default one.

    ``{"default": NAME, "models": [{"name": NAME, "label": TEXT}, ...]}``, names relative to the folder,
    one model per variant. Other checkpoints in the folder stay loadable by name; they are just not listed.
    """

    models: tuple[str, ...]
    labels: dict[str, str]
    default: str | None


def load_manifest(folder: str | Path) -> Manifest | None:
    """The folder's manifest, None when it has none; ``CheckpointError`` when it is malformed."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        entries = raw["models"]
        names = tuple(str(e["name"]) for e in entries)
        labels = {str(e["name"]): str(e.get("label") or e["name"]) for e in entries}
        default = raw.get("default")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a valid manifest ({exc.__class__.__name__}: {exc})") from exc
    if default is not None and default not in names:
        raise CheckpointError(f"{path}: the default {default!r} is not one of its models")
    return Manifest(names, labels, None if default is None else str(default))
