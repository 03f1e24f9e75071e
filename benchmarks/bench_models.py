"""Benchmark settings and model entries: what ``mpcvit bench`` runs, and where each architecture comes from.

The architectures: ``vit``, ``mpcformer``, ``thex``, ``relu``, ``scale`` are the
registry's presets. ``mpcvit`` (one entry per ``--mu``) and ``mpcvitplus``
come, in this order of preference, from a searched arch JSON of the same shape
in ``results/search/``; from a searched arch of another shape, its per-layer
ReLU-softmax head counts scaled to this shape; or from the paper's head ratio
mu (``round(mu x L x H)`` ReLU-softmax heads, the rest scaling, the ReLU-softmax
heads filling the first layers). Each result says which (``arch_source``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from benchmarks.published import NETWORKS
from mpcvit.models import SHAPES, VARIANTS, ArchSpec, model_spec

logger = logging.getLogger(__name__)

Transport = Literal["grpc", "inprocess"]
# SecureConfig() (DCF sign gates, the select gate on ReLU-softmax heads, the Fourier GeLU on certified layers: the
# current runtime) / the same with the one-round product gate on ReLU-softmax heads (the runtime before the select
# gate) / that with the spline GeLU everywhere (the runtime before the Fourier GeLU) / SecureConfig.fss1() (the runtime before the
# whole-cost work) / SecureConfig.circuits() (small-ring comparison circuits, the runtime before DCF sign gates)
PROTOCOLS = ("fss", "product", "spline", "fss1", "circuits")
PROTOCOL_AGE = ("circuits", "fss1", "spline", "product", "fss")  # oldest first: a run's side-by-side tables put each older set against the newest

ROOT = Path(__file__).resolve().parents[1]
SEARCH_DIR = ROOT / "results" / "search"
CHECKPOINT_DIRS: dict[str, Path] = {"2_4_8": ROOT / "checkpoints" / "digits", "4_4_28": ROOT / "checkpoints" / "fashion-mnist"}
DATASET_OF_SHAPE: dict[str, str] = {"2_4_8": "digits", "4_4_28": "fashion-mnist", "7_4_32": "cifar10", "9_12_64": "tiny-imagenet"}

CODE_DIRS = ("protocols/", "parties/", "benchmarks/", "mpcvit/models/")  # what a secure forward executes
DEFAULT_MODELS = ("vit", "mpcformer", "thex", "mpcvit", "mpcvitplus")
ALL_MODELS = ("vit", "mpcformer", "thex", "relu", "scale", "mpcvit", "mpcvitplus")
DEFAULT_MUS = (0.7, 0.1)
PLUS_BASE_MU = 0.7
QUICK_ARCH = "2_4_8"

FULL_MODE_NOTE = (
    "the committed run (vit_7_4_32 shape, 8 models, LAN + WAN measured, batch 1, 3 repeats, 2 on WAN) took 6 minutes "
    "on this 2-core machine when quiet (16 minutes with an earlier, costlier runtime while other jobs kept its load "
    "average near 20); batch 8 (results/bench/batch8/, LAN measured, "
    "WAN predicted, 5 models) is a separate run"
)


# -- settings and model entries ------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """What to run; every field ends up in results.json."""

    models: tuple[str, ...] = DEFAULT_MODELS
    archs: tuple[str, ...] = ("7_4_32",)
    networks: tuple[str, ...] = ("lan", "wan")
    batches: tuple[int, ...] = (1,)
    transport: Transport = "grpc"
    repeats: int = 3
    wan_repeats: int = 2
    wan_max_batch: int = 1
    warmup: int = 1
    mus: tuple[float, ...] = DEFAULT_MUS
    provider: str = "dealer"
    protocols: tuple[str, ...] = ("fss",)
    seed: int = 0
    quick: bool = False
    shaped: bool = True
    timeout_s: float = 10800.0

    def __post_init__(self) -> None:
        for m in self.models:
            if m not in ALL_MODELS:
                raise ValueError(f"unknown model {m!r}; choose from {', '.join(ALL_MODELS)}")
        for a in self.archs:
            if a not in SHAPES and not is_checkpoint_arch(a):
                raise ValueError(f"unknown architecture {a!r}; choose from {', '.join(SHAPES)} or give a checkpoint directory")
        for n in self.networks:
            if n not in NETWORKS:
                raise ValueError(f"unknown network {n!r}; choose from {', '.join(NETWORKS)}")
        if not self.models or not self.archs or not self.networks or not self.batches:
            raise ValueError("models, archs, networks and batches must each name at least one")
        if any(b < 1 or b > 64 for b in self.batches):
            raise ValueError("batch sizes must be in 1..64")
        if self.transport not in ("grpc", "inprocess"):
            raise ValueError("transport must be grpc or inprocess")
        if self.repeats < 1 or self.wan_repeats < 1 or self.warmup < 0:
            raise ValueError("repeats must be >= 1 and warmup >= 0")
        if any(not 0.0 < mu <= 1.0 for mu in self.mus):
            raise ValueError("every mu must be in (0, 1]")
        if self.provider not in ("dealer", "tfp"):
            raise ValueError("provider must be dealer or tfp")
        if not self.protocols or any(p not in PROTOCOLS for p in self.protocols) or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols must name each of {', '.join(PROTOCOLS)} at most once")

    def runs_protocols(self) -> tuple[str, ...]:
        """The protocol sets actually run, in order: TFP makes no DCF keys, so under it ``fss`` and ``fss1`` run the circuits."""
        out: list[str] = []
        for p in self.protocols:
            eff = effective_protocols(p, self.provider)
            if eff not in out:
                out.append(eff)
        return tuple(out)

    @classmethod
    def quick_mode(cls, **overrides: Any) -> "BenchSettings":
        """CI: the tiny 2_4_8 shape, one repeat, no warm-up, no shaping delays, every model."""
        fields: dict[str, Any] = dict(
            models=ALL_MODELS, archs=(QUICK_ARCH,), networks=("lan", "wan"), batches=(1,), transport="inprocess",
            repeats=1, wan_repeats=1, warmup=0, quick=True, shaped=False, timeout_s=300.0,
        )
        fields.update(overrides)
        fields["quick"] = True
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def secure_config(kind: str, provider: str) -> Any:
    """The runtime's ``SecureConfig`` for a protocol set (``protocols.config.runtime_config``): ``fss`` the default,
    ``product`` the default with the ReLU-softmax heads on the one-round product gate, ``spline`` that with the
    spline GeLU everywhere, ``fss1`` ``SecureConfig.fss1()``, ``circuits``
    ``SecureConfig.circuits()``."""
    from protocols.config import runtime_config

    if kind not in PROTOCOLS:
        raise ValueError(f"unknown protocols {kind!r}; choose from {', '.join(PROTOCOLS)}")
    return runtime_config(kind, provider=provider)


def effective_protocols(kind: str, provider: str) -> str:
    """What ``secure_config(kind, provider)`` runs: ``kind`` itself (``fss`` or ``fss1``) only where the config kept
    the DCF sign gates, else ``circuits``."""
    return kind if secure_config(kind, provider).comparison == "fss" else "circuits"


@dataclass(frozen=True)
class ModelEntry:
    """One model to benchmark at one shape: its label, spec, where the spec came from, and its accuracy if known."""

    label: str
    variant: str
    arch: str
    spec: ArchSpec
    arch_source: str
    accuracy: dict[str, Any] | None = None
    mu: float | None = None
    checkpoint: str | None = None  # trained weights (party 0 loads them); None = random weights

    def describe(self) -> dict[str, Any]:
        heads = self.spec.count_heads()
        acts = {k: self.spec.act.count(k) for k in sorted(set(self.spec.act))}
        return {
            "label": self.label, "variant": self.variant, "arch": self.arch, "mu": self.mu,
            "arch_source": self.arch_source, "heads": heads, "activations": acts, "norm": self.spec.norm,
            "summary": self.spec.summary(), "accuracy": self.accuracy,
            "weights": _public_path(self.checkpoint) if self.checkpoint else "random (seeded)", "spec": self.spec.to_dict(),
        }


def _public_path(path: str) -> str:
    """A checkpoint path as results.json shows it: relative to the repository, else only its name."""
    p = Path(path)
    if not p.is_absolute():
        return path
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def _label_mu(mu: float) -> str:
    return f"mpcvit-mu{mu:g}"


def _search_specs() -> list[tuple[Path, ArchSpec]]:
    """Every loadable ArchSpec JSON under results/search/ (searched and derived architectures)."""
    out: list[tuple[Path, ArchSpec]] = []
    if not SEARCH_DIR.is_dir():
        return out
    for path in sorted(SEARCH_DIR.rglob("*.json")):
        try:
            d = json.loads(path.read_text())
            if isinstance(d, dict) and {"attn", "act", "depth"} <= set(d):
                out.append((path, ArchSpec.from_dict(d)))
        except (ValueError, OSError, TypeError):
            continue
    return out


def _relu_ratio(spec: ArchSpec) -> float:
    heads = spec.count_heads()
    return heads.get("relu", 0) / max(1, spec.depth * spec.num_heads)


def _is_plus(spec: ArchSpec) -> bool:
    return any(spec.mlp_is_linear(l) or spec.act_tokens is not None and spec.act_tokens[l] is not None for l in range(spec.depth))


def _file_mu(path: Path) -> float | None:
    """The ratio a derived arch file names (``mpcvit_mu0.7.json`` -> 0.7), if it names one."""
    import re

    m = re.search(r"mu_?([0-9]+(?:\.[0-9]+)?)", path.stem)
    return float(m.group(1)) if m else None


def _find_searched(mu: float | None, plus: bool) -> list[tuple[Path, ArchSpec]]:
    """Searched specs of MPCViT (mixing relu/scale heads) at ratio ``mu`` (any ratio for MPCViT+).

    A file that names its ratio (``..._mu0.7.json``) matches on that name; otherwise
    its share of ReLU-softmax heads must round to ``mu``.
    """
    found = []
    for path, spec in _search_specs():
        kinds = set(spec.count_heads())
        if not kinds <= {"relu", "scale", "softmax"} or "scale" not in kinds:
            continue
        if _is_plus(spec) != plus:
            continue
        named = _file_mu(path)
        if mu is not None and named is not None and abs(named - mu) > 1e-9:
            continue
        if mu is not None and named is None and abs(_relu_ratio(spec) - mu) > 0.5 / (spec.depth * spec.num_heads) + 1e-9:
            continue
        found.append((path, spec))
    return sorted(found, key=lambda f: (_file_mu(f[0]) is None, str(f[0])))  # ratio-derived files before budget-derived ones


def paper_ratio_attn(shape: dict[str, int], mu: float) -> tuple[tuple[str, ...], ...]:
    """``round(mu L H)`` ReLU-softmax heads filling the first layers, the rest scaling (the paper's ratio, no search)."""
    L, H = shape["depth"], shape["num_heads"]
    n_relu = round(mu * L * H)
    return tuple(tuple("relu" if l * H + h < n_relu else "scale" for h in range(H)) for l in range(L))


def scaled_attn(source: ArchSpec, shape: dict[str, int], mu: float | None = None) -> tuple[tuple[str, ...], ...]:
    """A searched head pattern moved to another shape.

    Target layer l reads the ReLU-softmax density of source layer
    floor(l L_s / L); ``round(mu L H)`` ReLU-softmax heads (mu defaults to the
    source's ratio) go to the densest layers first (earlier layers on ties),
    the rest are scaling heads.
    """
    L, H = shape["depth"], shape["num_heads"]
    ratio = _relu_ratio(source) if mu is None else mu
    n_relu = round(ratio * L * H)
    density = [source.attn[min(source.depth - 1, l * source.depth // L)].count("relu") / source.num_heads for l in range(L)]
    counts = [0] * L
    for l in sorted(range(L), key=lambda i: (-density[i], i)):
        counts[l] = min(H, n_relu)
        n_relu -= counts[l]
    return tuple(tuple("relu" if h < counts[l] else "scale" for h in range(H)) for l in range(L))


def scaled_mlp(source: ArchSpec, shape: dict[str, int]) -> tuple[tuple[str, ...], tuple[tuple[int, ...] | None, ...] | None]:
    """Per-layer MLP choices of a searched MPCViT+ moved to another shape: ``(act, act_tokens)``.

    Target layer l copies source layer floor(l L_s / L): linear where it is
    linear, GeLU on every token where it keeps every token, and GeLU on the
    same fraction of tokens where it keeps some (the first tokens: costs depend
    on the count, not on which tokens).
    """
    L = shape["depth"]
    n_tokens = (shape["img_size"] // shape["patch_size"]) ** 2 + 1
    act, toks = [], []
    for l in range(L):
        s = min(source.depth - 1, l * source.depth // L)
        kept = source.tokens_with_act(s)
        if source.mlp_is_linear(s):
            act.append("identity")
            toks.append(None)
        else:
            act.append("gelu")
            toks.append(None if kept is None else tuple(range(max(1, round(len(kept) / source.num_tokens * n_tokens)))))
    return tuple(act), (tuple(toks) if any(t is not None for t in toks) else None)


def mpcvit_entry(arch: str, mu: float) -> ModelEntry:
    shape = SHAPES[arch]
    name = f"mpcvit_{arch}"
    label = _label_mu(mu)
    searched = _find_searched(mu, plus=False)
    same = [(p, s) for p, s in searched if (s.depth, s.num_heads, s.embed_dim, s.img_size) == tuple(shape[k] for k in ("depth", "num_heads", "embed_dim", "img_size"))]
    if same:
        path, spec = same[0]
        spec = model_spec(name, attn=spec.attn, act=spec.act)
        return ModelEntry(label, "mpcvit", arch, spec, f"searched: {path.relative_to(ROOT)}", mu=mu)
    if searched:
        path, src = searched[0]
        spec = model_spec(name, attn=scaled_attn(src, shape, mu), act=("gelu",) * shape["depth"])
        return ModelEntry(label, "mpcvit", arch, spec,
                          f"searched pattern of {path.relative_to(ROOT)} scaled to {arch} (same ratio, densest searched layers first)", mu=mu)
    spec = model_spec(name, attn=paper_ratio_attn(shape, mu), act=("gelu",) * shape["depth"])
    return ModelEntry(label, "mpcvit", arch, spec, f"paper's head ratio mu={mu:g}: ReLU-softmax heads fill the first layers, the rest scaling (no search at this shape)", mu=mu)


def mpcvitplus_entry(arch: str, base_mu: float = PLUS_BASE_MU) -> ModelEntry:
    shape = SHAPES[arch]
    name = f"mpcvitplus_{arch}"
    searched = _find_searched(None, plus=True)
    same = [(p, s) for p, s in searched if s.depth == shape["depth"] and s.num_heads == shape["num_heads"] and s.img_size == shape["img_size"]]
    if same:
        path, spec = same[0]
        spec = model_spec(name, attn=spec.attn, act=spec.act, act_tokens=spec.act_tokens)
        return ModelEntry("mpcvitplus", "mpcvitplus", arch, spec, f"searched: {path.relative_to(ROOT)}", mu=_relu_ratio(spec))
    if searched:
        path, src = searched[0]
        act, act_tokens = scaled_mlp(src, shape)
        spec = model_spec(name, attn=scaled_attn(src, shape), act=act, act_tokens=act_tokens)
        return ModelEntry("mpcvitplus", "mpcvitplus", arch, spec,
                          f"searched pattern of {path.relative_to(ROOT)} scaled to {arch} (same ratios, densest searched layers first)",
                          mu=_relu_ratio(spec))
    base = mpcvit_entry(arch, base_mu)
    default_act = VARIANTS["mpcvitplus"](shape)["act"]
    spec = model_spec(name, attn=base.spec.attn, act=default_act)
    source = f"{base.arch_source}; plus the registry's MPCViT+ MLPs (GeLU in the first half of the layers, linear and fused after)"
    return ModelEntry("mpcvitplus", "mpcvitplus", arch, spec, source, mu=base_mu)


def checkpoint_dir(arch: str, label: str, variant: str) -> Path | None:
    """A trained checkpoint of this model at this shape (``checkpoints/<dataset>/...``), if one exists."""
    root = CHECKPOINT_DIRS.get(arch)
    if root is None or not root.is_dir():
        return None
    dirs = sorted(d for d in root.iterdir() if (d / "arch.json").is_file() and (d / "meta.json").is_file())
    if variant == "mpcvit" and label.startswith("mpcvit-mu"):
        mu = label.removeprefix("mpcvit-mu")
        tags = {f"mu{mu}", f"mu_{mu}", f"mu{mu.replace('.', '')}", f"_{mu}", f"-{mu}"}
        match = [d for d in dirs if d.name.startswith("mpcvit") and not d.name.startswith("mpcvitplus") and any(t in d.name for t in tags)]
    elif variant == "mpcvitplus":
        match = [d for d in dirs if d.name.startswith("mpcvitplus")]
    else:
        match = [d for d in dirs if d.name == f"{variant}_{arch}"]
    return match[0] if match else None


def checkpoint_accuracy(directory: Path, arch: str) -> dict[str, Any] | None:
    """Test accuracy from a trained checkpoint's meta.json."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    acc = _find_accuracy(meta) if isinstance(meta, dict) else None
    if acc is None:
        return None
    return {"value": acc, "dataset": meta.get("dataset", DATASET_OF_SHAPE.get(arch)), "source": str(directory.relative_to(ROOT))}


def _find_accuracy(meta: dict[str, Any]) -> float | None:
    for key in ("test_accuracy", "accuracy"):
        if isinstance(meta.get(key), (int, float)):
            return _percent(meta[key])
    metrics = meta.get("metrics")
    if isinstance(metrics, dict):
        for key in ("test_accuracy", "accuracy", "test_acc", "acc"):
            if isinstance(metrics.get(key), (int, float)):
                return _percent(metrics[key])
    return None


def _percent(x: float) -> float:
    return float(x) * 100.0 if x <= 1.0 else float(x)


def is_checkpoint_arch(arch: str) -> bool:
    """An ``--arch`` entry that names a checkpoint directory (e.g. one ``mpcvit import`` wrote) instead of a shape."""
    return arch not in SHAPES and (Path(arch) / "arch.json").is_file()


def checkpoint_entry(path: str) -> ModelEntry:
    """A checkpoint given as ``--arch``: its own architecture and weights, whatever ``--models`` says.

    Stored relative to the repository when it lies inside it (results.json names no path of this machine)."""
    from mpcvit.checkpoint import load_meta, load_spec

    d = Path(path).resolve()
    spec, meta = load_spec(d), load_meta(d)
    where = str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else d.name
    variant = spec.name.partition("_")[0] if spec.name.partition("_")[0] in VARIANTS else "imported"
    source = f"checkpoint {where}" + (f" (imported from timm's {meta['imported'].get('name')})" if isinstance(meta.get("imported"), dict) else "")
    acc = _find_accuracy(meta)
    accuracy = None if acc is None else {"value": acc, "dataset": meta.get("dataset"), "source": where}
    return ModelEntry(d.name, variant, d.name, spec, source, accuracy, None, str(d))


def resolve_entries(settings: BenchSettings) -> list[ModelEntry]:
    """The model entries of a run, in the order of ``settings.models`` (``mpcvit`` gives one per mu);
    an arch that is a checkpoint directory gives one entry, that checkpoint."""
    entries: list[ModelEntry] = []
    for arch in settings.archs:
        if is_checkpoint_arch(arch):
            entries.append(checkpoint_entry(arch))
            continue
        for m in settings.models:
            if m == "mpcvit":
                made = [mpcvit_entry(arch, mu) for mu in settings.mus]
            elif m == "mpcvitplus":
                made = [mpcvitplus_entry(arch)]
            else:
                made = [ModelEntry(m, m, arch, model_spec(f"{m}_{arch}"), "registry preset")]
            for e in made:
                entries.append(_with_checkpoint(e))
    return entries


def _with_checkpoint(entry: ModelEntry) -> ModelEntry:
    """Use a trained checkpoint's weights, architecture and accuracy where one exists at this shape."""
    from mpcvit.checkpoint import CheckpointError, load_spec

    d = checkpoint_dir(entry.arch, entry.label, entry.variant)
    if d is None:
        return entry
    try:
        spec = load_spec(d)
    except CheckpointError as exc:
        logger.warning("ignoring checkpoint %s: %s", d, exc)
        return entry
    source = entry.arch_source if entry.variant not in ("mpcvit", "mpcvitplus") else f"trained checkpoint {d.relative_to(ROOT)}"
    mu = _relu_ratio(spec) if entry.variant in ("mpcvit", "mpcvitplus") else entry.mu
    return ModelEntry(entry.label, entry.variant, entry.arch, spec, source, checkpoint_accuracy(d, entry.arch), mu, str(d.relative_to(ROOT)))
