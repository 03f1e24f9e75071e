"""The communication-cost benchmark: rounds, bytes and latency of every model family on LAN and WAN.

For each model x architecture shape x batch size this runs one secure
inference of the project's runtime (``protocols.runtime.SecureViT``) between
two local processes, party 0 holding random weights (costs do not depend on
values) and both holding shares of a random image, and records:

* rounds and bytes (each party's, and the total), from the runtime's
  ``CostReport`` (CrypTen's communicator counters around the forward);
* compute seconds: the wall-clock time of the forward with the transport not
  shaped (loopback; this includes the loopback's own small latency);
* latency PREDICTED on each network by
  ``compute + rounds x RTT + bytes / bandwidth`` (``bytes`` = what the busier
  party sends; the link is full duplex);
* latency MEASURED on each network (``--transport grpc``): the parties talk
  over the project's gRPC communicator (``parties.communicator``) whose sender
  side delays every frame by the one-way delay and holds it for
  ``8 n / bandwidth`` (``parties.transport.Shaper``); with ``--transport
  inprocess`` (CrypTen's gloo communicator) nothing is shaped and only the
  prediction is given;
* the per-op-kind breakdown, and a check that the secure logits open to the
  plaintext logits of the same weights.

Measuring protocol per model: share the weights once, ``--warmup`` forwards
unshaped (not recorded), ``--repeats`` unshaped forwards (compute), then per
network the shaper is switched on (both parties, after a barrier) and the
forward is repeated (``--repeats`` on LAN, ``--wan-repeats`` on WAN, for batch
sizes up to ``--wan-max-batch``; larger batches get the prediction only).
Medians are reported with min / max.

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
import math
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from benchmarks.published import NETWORKS, SOURCE, published_for
from mpcvit.models import SHAPES, VARIANTS, ArchSpec, model_spec
from mpcvit.prg import new_key

logger = logging.getLogger(__name__)

Transport = Literal["grpc", "inprocess"]

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


# -- the party side (runs in each of the two processes) ----------------------------


def _set_shape(network: str | None) -> None:
    """Switch this party's sender-side shaper (gRPC transport only) to a network, or off (None)."""
    from parties.transport import NETWORKS as SHAPES_BY_NAME
    from parties.transport import Shaper
    from protocols.crypten_compat import crypten

    comm = crypten.communicator.get()
    comm.barrier()  # nothing of the previous setting is still in flight
    comm.session.endpoint.link.shaper = Shaper(SHAPES_BY_NAME[network or "none"])


def _input_share(rank: int, spec: ArchSpec, batch: int, seed: int, precision_bits: int, master_key: bytes) -> torch.Tensor:
    """This party's share of a random [0, 1] image batch.

    Both party processes play the client here: the (public, seeded) benchmark
    image is split under a PRG key derived from the run's secret master key,
    so both derive the same split. Nothing secret is in a benchmark image.
    """
    from mpcvit.prg import derive_key
    from mpcvit.sealing import share_fixed_point

    x = torch.rand(batch, *spec.input_shape, generator=torch.Generator().manual_seed(seed + batch))
    shares = share_fixed_point(x, precision_bits=precision_bits, key=derive_key(master_key, f"input/batch{batch}"))
    return shares[rank]


@dataclass
class _Randomness:
    """This party's randomness provider; with the dealer, each forward's batch is begun before the clock starts.

    The dealer's corrections are the offline phase (``InProcessDealer`` computes
    them here, as the gRPC dealer would ahead of a request), so they are
    prepared outside the timed forward; the online forward has no dealer round.
    """

    rank: int
    kind: str
    master_key: bytes
    provider: Any = None
    dealer: Any = None

    def install(self) -> None:
        from protocols.providers import InProcessDealer, install_provider, make_provider

        self.provider = make_provider(self.kind, self.rank)
        install_provider(self.provider)
        self.dealer = InProcessDealer(self.master_key) if self.kind == "dealer" else None

    def begin(self, secure: Any, batch: int) -> None:
        if self.dealer is not None:
            plan = secure.plan(batch)  # local dry run, cached per batch size
            key, corrections = self.dealer.next_batch(self.rank, plan)
            self.provider.begin_batch(key, plan, corrections)

    def end(self) -> None:
        if self.dealer is not None:
            self.provider.end_batch()


def _wire_bytes(comm: Any) -> int | None:
    stats = getattr(comm, "wire_stats", None)
    return int(stats()["bytes_sent"]) if callable(stats) else None


def _timed_forward(secure: Any, x_share: torch.Tensor, rng: _Randomness) -> tuple[torch.Tensor, dict[str, Any]]:
    """One timed forward: the offline randomness first (untimed), a barrier, then the clock around the forward."""
    from protocols.crypten_compat import crypten

    comm = crypten.communicator.get()
    rng.begin(secure, int(x_share.shape[0]))
    comm.barrier()
    wire0 = _wire_bytes(comm)
    t0 = time.perf_counter()
    logits_share, report = secure.forward_shares(x_share)
    wall = time.perf_counter() - t0
    wire1 = _wire_bytes(comm)
    rng.end()
    rec: dict[str, Any] = {"wall_s": wall, "report": report.to_dict()}
    if wire0 is not None and wire1 is not None:
        rec["wire_bytes_sent"] = wire1 - wire0
    return logits_share, rec


def _plan(job: dict[str, Any]) -> list[tuple[int, str | None, int]]:
    """(batch, network or None = unshaped, repeats) in the order the party runs them."""
    plan: list[tuple[int, str | None, int]] = []
    for b in job["batches"]:
        plan.append((b, None, job["repeats"]))
        if job["shaped"]:
            for net in job["networks"]:
                if net == "wan" and b > job["wan_max_batch"]:
                    continue
                plan.append((b, net, job["wan_repeats"] if net == "wan" else job["repeats"]))
    return plan


def bench_party(rank: int, jobs: list[dict[str, Any]], progress: Any = None) -> list[dict[str, Any]]:
    """One party's side of the whole run (every model in turn, one process pair); plain data out."""
    torch.set_num_threads(1)
    first = jobs[0]
    rng = _Randomness(rank, first["provider"], bytes.fromhex(first["master_key"]))
    rng.install()
    return [bench_model(rank, job, rng, progress) for job in jobs]


def bench_model(rank: int, job: dict[str, Any], rng: _Randomness, progress: Any = None) -> dict[str, Any]:
    """One party's side of one model's benchmark: share once, warm up, then every (batch, network) in turn."""
    from protocols.config import SecureConfig
    from protocols.runtime import SecureViT

    torch.manual_seed(job["seed"])
    spec = ArchSpec.from_dict(job["spec"])
    model, meta = None, None
    if rank == 0:
        model, meta = _owner_model(spec, job.get("checkpoint"))
    t0 = time.perf_counter()
    secure = SecureViT.share(model, spec, meta, owner=0, config=SecureConfig(provider=job["provider"]))
    out: dict[str, Any] = {"rank": rank, "share_s": time.perf_counter() - t0, "runs": [], "checks": []}
    shaped = job["transport"] == "grpc" and job["shaped"]
    for batch in job["batches"]:
        x_share = _input_share(rank, spec, batch, job["seed"], secure.precision_bits, rng.master_key)
        if shaped:
            _set_shape(None)
        for _ in range(job["warmup"]):
            _timed_forward(secure, x_share, rng)
        first_logits: torch.Tensor | None = None
        for b, net, repeats in _plan(job):
            if b != batch:
                continue
            if shaped:
                _set_shape(net)
            for _ in range(repeats):
                logits_share, rec = _timed_forward(secure, x_share, rng)
                first_logits = logits_share if first_logits is None else first_logits
                out["runs"].append({"batch": batch, "network": net, **rec})
                if progress is not None and rank == 0:
                    progress.put(1)
        if shaped:
            _set_shape(None)
        check: dict[str, Any] = {"batch": batch, "logits_share": first_logits.tolist() if first_logits is not None else None}
        if model is not None:
            from mpcvit.checkpoint import normalise_input

            x = _plain_input(spec, batch, job["seed"])
            with torch.no_grad():
                check["plain_logits"] = model(normalise_input(x, meta) if meta else x).tolist()
        out["checks"].append(check)
    return out


def _owner_model(spec: ArchSpec, checkpoint: str | None) -> tuple[Any, dict[str, Any] | None]:
    """Party 0's plaintext model: the checkpoint's trained weights, else seeded random weights."""
    from mpcvit.checkpoint import load_checkpoint
    from mpcvit.models import build_model

    if checkpoint:
        model, meta = load_checkpoint(ROOT / checkpoint)
        return model, meta
    return build_model(spec).eval(), None


def _plain_input(spec: ArchSpec, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + batch)
    return torch.rand(batch, *spec.input_shape, generator=g)


# -- the parent side -------------------------------------------------------------------


def _job(entry: ModelEntry, settings: BenchSettings) -> dict[str, Any]:
    return {
        "spec": entry.spec.to_dict(), "batches": list(settings.batches), "networks": list(settings.networks),
        "repeats": settings.repeats, "wan_repeats": settings.wan_repeats, "wan_max_batch": settings.wan_max_batch,
        "warmup": settings.warmup, "seed": settings.seed, "transport": settings.transport,
        "shaped": settings.shaped and settings.transport == "grpc",
        "provider": settings.provider, "checkpoint": entry.checkpoint,
    }


def runs_per_entry(settings: BenchSettings) -> int:
    job = {"batches": list(settings.batches), "networks": list(settings.networks), "repeats": settings.repeats,
           "wan_repeats": settings.wan_repeats, "wan_max_batch": settings.wan_max_batch,
           "shaped": settings.shaped and settings.transport == "grpc"}
    return sum(r for _, _, r in _plan(job))


def run_entries(entries: list[ModelEntry], settings: BenchSettings, progress: Any = None) -> list[list[dict[str, Any]]]:
    """Both parties' raw results, per model: ``[[rank0, rank1] for each entry]`` (one local process pair)."""
    from parties.pair import PairConfig, run_pair

    backend = "grpc" if settings.transport == "grpc" else "gloo"
    config = PairConfig(backend=backend, session_timeout_s=settings.timeout_s)  # type: ignore[arg-type]
    jobs = [_job(e, settings) for e in entries]
    master_key = new_key().hex()  # the simulated dealer's and client's secret, handed to both parties
    for job in jobs:
        job["master_key"] = master_key
    raw0, raw1 = run_pair(bench_party, jobs, progress, config=config, timeout_s=settings.timeout_s)
    return [[a, b] for a, b in zip(raw0, raw1)]


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _sent(report: dict[str, Any]) -> int:
    """Bytes one party sent: ``bytes_sent``, else half of CrypTen's sent + received count (every opening is symmetric)."""
    if "bytes_sent" in report:
        return int(report["bytes_sent"])
    return int(report.get("bytes", 0)) // 2


def summarise_entry(entry: ModelEntry, settings: BenchSettings, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result row per (batch, network) of one model, from both parties' raw results."""
    rows = []
    for batch in settings.batches:
        runs0 = [r for r in raw[0]["runs"] if r["batch"] == batch]
        runs1 = [r for r in raw[1]["runs"] if r["batch"] == batch]
        base0 = [r for r in runs0 if r["network"] is None]
        base1 = [r for r in runs1 if r["network"] is None]
        walls = [max(a["wall_s"], b["wall_s"]) for a, b in zip(base0, base1)]
        rep0, rep1 = base0[0]["report"], base1[0]["report"]
        rounds = int(max(rep0.get("rounds", 0), rep1.get("rounds", 0)))
        sent0, sent1 = _sent(rep0), _sent(rep1)
        wire = [r.get("wire_bytes_sent") for r in base0[:1] + base1[:1]]
        compute = _stats(walls)
        check = _check(raw, batch)
        for net_name in settings.networks:
            net = NETWORKS[net_name]
            shaped_runs = [max(a["wall_s"], b["wall_s"]) for a, b in zip(runs0, runs1) if a["network"] == net_name]
            pub = published_for(entry.label, entry.arch)
            predicted = net.predict(compute["median"], rounds, max(sent0, sent1))
            exchange = net.predict_exchange(compute["median"], rounds, max(sent0, sent1))
            measured = _stats(shaped_runs) if shaped_runs else None
            row: dict[str, Any] = {
                "model": entry.label, "variant": entry.variant, "arch": entry.arch, "name": f"{entry.variant}_{entry.arch}",
                "network": net_name, "batch": batch, "transport": settings.transport,
                "rounds": rounds,
                "bytes": {"party0_sent": sent0, "party1_sent": sent1, "total": sent0 + sent1,
                          "wire_party0_sent": wire[0], "wire_party1_sent": wire[1] if len(wire) > 1 else None},
                "dealer_bytes": rep0.get("dealer_bytes"),
                "compute_s": compute,
                "latency_predicted_s": predicted,
                "latency_predicted_exchange_s": exchange,
                "latency_measured_s": measured,
                "latency_measured_note": _measured_note(settings, net_name, batch, bool(shaped_runs)),
                "per_op": _per_op(rep0, rep1),
                "per_layer": rep0.get("per_layer"),
                "runtime_seconds": rep0.get("seconds"),
                "share_s": raw[0].get("share_s"),
                "accuracy": entry.accuracy,
                "arch_source": entry.arch_source,
                "published": None,
                "check": check,
            }
            if pub is not None and net_name == "wan" and batch == 1:  # the published figures are batch 1
                ours = measured["median"] if measured else predicted
                row["published"] = {
                    "label": pub.label, "dataset": pub.dataset, "accuracy": pub.accuracy, "wan_seconds": pub.wan_seconds,
                    "ratio_ours_over_published": ours / pub.wan_seconds, "ours_from": "measured" if measured else "predicted",
                    "source": SOURCE,
                }
            rows.append(row)
    return rows


def _measured_note(settings: BenchSettings, net: str, batch: int, measured: bool) -> str:
    if measured:
        return "measured over the gRPC transport with its sender-side shaper (one-way delay RTT/2 + bandwidth)"
    if settings.transport == "inprocess":
        return "not measured: the inprocess (gloo) transport is not shaped; prediction only"
    if not settings.shaped:
        return "not measured: shaping switched off (quick mode); prediction only"
    return f"not measured: WAN is measured for batch <= {settings.wan_max_batch}; prediction only"


def _per_op(rep0: dict[str, Any], rep1: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-op-kind rounds, bytes (both parties' sent) and seconds, from the two CostReports."""
    ops0 = _op_table(rep0)
    ops1 = _op_table(rep1)
    out: dict[str, dict[str, float]] = {}
    for kind in ops0:
        a, b = ops0[kind], ops1.get(kind, {})
        out[kind] = {
            "rounds": float(max(a.get("rounds", 0), b.get("rounds", 0))),
            "bytes_party0": float(_sent(a)),
            "bytes_party1": float(_sent(b)) if b else 0.0,
            "seconds": float(max(a.get("seconds", 0.0), b.get("seconds", 0.0))),
        }
    return out


def _op_table(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for key in ("per_op", "per_op_kind", "ops", "by_op"):
        table = report.get(key)
        if isinstance(table, dict):
            return {str(k): (v if isinstance(v, dict) else {"seconds": v}) for k, v in table.items()}
    return {}


def _check(raw: list[dict[str, Any]], batch: int) -> dict[str, Any] | None:
    """Open the secure logits of the first measured forward and compare them with plaintext."""
    from mpcvit.sealing import reconstruct_fixed_point

    c0 = next((c for c in raw[0].get("checks", []) if c["batch"] == batch), None)
    c1 = next((c for c in raw[1].get("checks", []) if c["batch"] == batch), None)
    if not c0 or not c1 or c0.get("logits_share") is None or c1.get("logits_share") is None or "plain_logits" not in c0:
        return None
    secure = reconstruct_fixed_point(torch.tensor(c0["logits_share"]), torch.tensor(c1["logits_share"]))
    plain = torch.tensor(c0["plain_logits"], dtype=torch.float64)
    return {
        "max_abs_logit_error": float((secure - plain).abs().max()),
        "top1_agreement": float((secure.argmax(-1) == plain.argmax(-1)).double().mean()),
    }


def environment() -> dict[str, Any]:
    """Machine, versions and git commit, for results.json."""
    from protocols.crypten_compat import crypten

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform(),
                    "load_average_1_5_15": list(os.getloadavg())},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "crypten": getattr(crypten, "__version__", "0.4.1")},
        "git": _git_state(),
        "command": " ".join(["mpcvit", "bench", *sys.argv[2:]]) if len(sys.argv) > 1 and sys.argv[1] == "bench" else " ".join(sys.argv),
    }


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()]
    code = [p for p in dirty if p.startswith(CODE_DIRS)]
    return {"commit": git("rev-parse", "HEAD"), "dirty_paths": len(dirty), "uncommitted_code": code, "code_sha256": code_fingerprint()}


def code_fingerprint() -> dict[str, str]:
    """SHA-256 of every source file the secure forward runs (committed or not): what exactly was measured."""
    import hashlib

    out = {}
    for d in CODE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            out[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def run_benchmark(settings: BenchSettings, show_progress: bool = True) -> dict[str, Any]:
    """Run every model of ``settings``; return the results.json document."""
    from tqdm import tqdm

    entries = resolve_entries(settings)
    env = environment()  # before the parties start: the code they import is the code fingerprinted here
    total = len(entries) * runs_per_entry(settings)
    started = time.time()
    rows: list[dict[str, Any]] = []
    import multiprocessing as mp

    progress = mp.get_context("spawn").Queue()
    with tqdm(total=total, desc="bench", unit="run", disable=not show_progress) as bar:
        raws = _run_with_progress(entries, settings, progress, bar)
    for entry, raw in zip(entries, raws):
        rows.extend(summarise_entry(entry, settings, raw))
    doc: dict[str, Any] = {
        "benchmark": "mpcvit communication-cost benchmark",
        **env,
        "settings": settings.to_dict(),
        "provider": settings.provider,
        "networks": {n: NETWORKS[n].to_dict() for n in settings.networks},
        "latency_model": "predicted = compute + rounds x RTT + 8 x bytes(busier party) / bandwidth",
        "models": [e.describe() for e in entries],
        "results": rows,
        "published_source": SOURCE,
        "wall_seconds": time.time() - started,
        "load_average_at_end": list(os.getloadavg()),
    }
    return doc


def _run_with_progress(entries: list[ModelEntry], settings: BenchSettings, progress: Any, bar: Any) -> list[list[dict[str, Any]]]:
    """Run in a thread while this one moves the progress bar (one tick per measured forward)."""
    result: dict[str, Any] = {}
    per_entry = runs_per_entry(settings)

    def target() -> None:
        try:
            result["raw"] = run_entries(entries, settings, progress)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            bar.update(progress.get(timeout=0.5))
            done = min(len(entries) - 1, int(bar.n) // max(1, per_entry))
            bar.set_postfix_str(f"{entries[done].label} {entries[done].arch}")
        except queue.Empty:
            pass
    worker.join()
    while True:
        try:
            bar.update(progress.get_nowait())
        except queue.Empty:
            break
    if "error" in result:
        raise RuntimeError(f"benchmark failed: {result['error']}") from result["error"]
    return result["raw"]


def _spec_of(model: dict[str, Any]) -> ArchSpec | None:
    """A results.json model's ArchSpec (rebuilt for older results only when it resolves the same way again)."""
    if "spec" in model:
        return ArchSpec.from_dict(model["spec"])
    settings = BenchSettings(models=(model["variant"],), archs=(model["arch"],), mus=(model["mu"],) if model.get("mu") else DEFAULT_MUS)
    for e in resolve_entries(settings):
        if e.label == model["label"] and e.arch_source == model["arch_source"]:
            return e.spec
    return None


def add_cost_table_estimates(doc: dict[str, Any]) -> None:
    """Price every batch-1 row from the measured cost table (``protocols.costs``), the model the search optimises."""
    try:
        from protocols.costs import REGENERATE, estimate, load_cost_table

        table = load_cost_table()
    except (ImportError, FileNotFoundError, ValueError) as exc:
        doc.setdefault("cost_table", {"available": False, "reason": str(exc)})
        return
    specs = {(m["label"], m["arch"]): _spec_of(m) for m in doc["models"]}
    for r in doc["results"]:
        spec = specs.get((r["model"], r["arch"]))
        if spec is None or r["batch"] != 1:
            continue
        try:
            est = estimate(spec, r["network"], table)
        except (KeyError, ValueError):
            continue
        r["cost_table_estimate"] = {"rounds": est["rounds"], "bytes_sent": est["bytes"] / 2, "seconds": est["seconds"], "latency_s": est["latency_s"]}
    doc["cost_table"] = {"available": True, "path": "results/cost_table.json", "command": table.get("command", REGENERATE)}


def write_results(doc: dict[str, Any], out: Path, plots: bool = True) -> list[Path]:
    """results.json, results.md and (optionally) the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for row in doc["results"]:
        if row["batch"] != 1:
            row["published"] = None  # the published figures are batch 1 (older results compared every batch)
    if "cost_table" not in doc or not doc["cost_table"].get("available"):
        add_cost_table_estimates(doc)
    paths = [out / "results.json", out / "results.md"]
    text = json.dumps(doc, indent=2) + "\n"
    if not paths[0].is_file() or paths[0].read_text() != text:
        paths[0].write_text(text)
    if plots:
        from benchmarks.plots import make_plots

        paths += make_plots(doc, out)
    paths[1].write_text(markdown(doc, [p.name for p in paths[2:]]))
    return paths


def rows_by(doc: dict[str, Any], network: str, batch: int, arch: str | None = None) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["network"] == network and r["batch"] == batch and (arch is None or r["arch"] == arch)]


def best_latency(row: dict[str, Any]) -> float:
    m = row.get("latency_measured_s")
    return float(m["median"]) if m else float(row["latency_predicted_s"])


def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    return f"{s:.3g}" if s < 10 else f"{s:.1f}"


# -- results.md -----------------------------------------------------------------------


def _dirty(git: dict[str, Any]) -> str:
    code = git.get("uncommitted_code")
    if code:
        return f" + uncommitted changes to {', '.join(code)} (results.json holds the SHA-256 of every source file run)"
    return " (the code that ran is committed; other paths had uncommitted changes)" if git.get("dirty_paths") else ""


def _token_note(model: dict[str, Any]) -> str:
    """MPCViT+'s per-token GeLU: on how many tokens each layer keeps it."""
    toks = model.get("spec", {}).get("act_tokens")
    if not toks:
        return ""
    spec = ArchSpec.from_dict(model["spec"])
    counts = [("all" if t is None else str(len(t))) if not spec.mlp_is_linear(l) else "0" for l, t in enumerate(toks)]
    return f" (GeLU on {', '.join(counts)} of {spec.num_tokens} tokens per layer, identity on the rest)"


def _load(avg: list[float] | None) -> str:
    return f"{avg[0]:.1f}" if avg else "not recorded"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _measured_cell(row: dict[str, Any]) -> str:
    m = row.get("latency_measured_s")
    if not m:
        return "-"
    return f"{fmt_seconds(m['median'])} [{fmt_seconds(m['min'])}-{fmt_seconds(m['max'])}] n={m['n']}"


def _check_cell(row: dict[str, Any]) -> str:
    c = row.get("check")
    return "-" if not c else f"{c['max_abs_logit_error']:.2g}"


def _acc_cell(row: dict[str, Any]) -> str:
    acc = row.get("accuracy")
    if acc:
        return f"{acc['value']:.2f} ({acc['dataset']})"
    pub = published_for(row["model"], row["arch"])
    return f"paper: {pub.accuracy:.2f} ({pub.dataset})" if pub else "-"


def _cost_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | rounds | MB sent p0 / p1 / total | compute s | predicted s (rounds x RTT) | predicted s (rounds x RTT/2) "
        "| measured s, median [min-max] | accuracy % | max abs logit error vs plaintext |",
        "|---|---:|---|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        b = r["bytes"]
        lines.append(
            f"| {r['model']} | {r['rounds']} | {_mb(b['party0_sent'])} / {_mb(b['party1_sent'])} / {_mb(b['total'])} | "
            f"{fmt_seconds(r['compute_s']['median'])} | {fmt_seconds(r['latency_predicted_s'])} | {fmt_seconds(r['latency_predicted_exchange_s'])} | "
            f"{_measured_cell(r)} | {_acc_cell(r)} | {_check_cell(r)} |"
        )
    return lines


def _published_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | published acc % | published WAN s (SPU) | ours measured s | ours predicted s | ours / published | at or below? |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        pub = r.get("published")
        if not pub:
            continue
        m = r.get("latency_measured_s")
        ratio = pub["ratio_ours_over_published"]
        lines.append(
            f"| {pub['label']} | {pub['accuracy']:.2f} | {pub['wan_seconds']:.2f} | {fmt_seconds(m['median']) if m else '-'} | "
            f"{fmt_seconds(r['latency_predicted_s'])} | {ratio:.2f}x ({pub['ours_from']}) | {'yes' if ratio <= 1.0 else 'NO'} |"
        )
    return lines


def ordering_checks(rows: list[dict[str, Any]]) -> list[str]:
    """The paper's ordering, checked on one network x batch: softmax ViT the most expensive; MPCViT below MPCFormer."""
    by = {r["model"]: r for r in rows}
    out = []
    if "vit" in by:
        costliest = max(rows, key=best_latency)
        out.append(f"- softmax ViT the most expensive: {'yes' if costliest['model'] == 'vit' else 'NO, ' + costliest['model'] + ' is'} "
                   f"(ViT {fmt_seconds(best_latency(by['vit']))} s, {by['vit']['rounds']} rounds)")
    if "mpcformer" in by:
        for label in sorted(k for k in by if k.startswith("mpcvit")):
            a, b = best_latency(by[label]), best_latency(by["mpcformer"])
            out.append(f"- {label} cheaper than MPCFormer: {'yes' if a < b else 'NO'} ({fmt_seconds(a)} s vs {fmt_seconds(b)} s; "
                       f"{by[label]['rounds']} vs {by['mpcformer']['rounds']} rounds; attention ops alone "
                       f"{_part(by[label], 'attention')} vs {_part(by['mpcformer'], 'attention')}, MLP activations alone "
                       f"{_part(by[label], 'activation')} vs {_part(by['mpcformer'], 'activation')})")
    return out


def _part(row: dict[str, Any], prefix: str) -> str:
    """Rounds and MB (both parties) of the op kinds whose name starts with ``prefix``."""
    ops = [v for k, v in row.get("per_op", {}).items() if k.startswith(prefix)]
    rounds = int(sum(o["rounds"] for o in ops))
    mb = sum(o["bytes_party0"] + o["bytes_party1"] for o in ops) / 1e6
    return f"{rounds} rounds / {mb:.0f} MB"


def _estimate_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | rounds: table / measured | MB sent per party: table / measured | latency s: table estimate / measured |",
             "|---|---|---|---|"]
    for r in rows:
        e = r["cost_table_estimate"]
        lines.append(f"| {r['model']} | {e['rounds']:.0f} / {r['rounds']} | {_mb(e['bytes_sent'])} / {_mb(r['bytes']['party0_sent'])} | "
                     f"{fmt_seconds(e['latency_s'])} / {fmt_seconds(best_latency(r))} |")
    return lines


def _per_op_table(rows: list[dict[str, Any]]) -> list[str]:
    kinds = sorted({k for r in rows for k in r["per_op"]})
    if not kinds:
        return ["(the runtime's CostReport carried no per-op breakdown)"]
    lines = ["| model | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for r in rows:
        cells = []
        for k in kinds:
            op = r["per_op"].get(k)
            cells.append("-" if not op else f"{int(op['rounds'])} r / {_mb(op['bytes_party0'] + op['bytes_party1'])} MB / {op['seconds']:.2f} s")
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict[str, Any], plot_names: list[str]) -> str:
    """results.md: the tables a person reads."""
    s = doc["settings"]
    env = doc["machine"]
    lines = [
        "# Communication-cost benchmark",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {env['cpu_count']} CPUs, {env['cpu_model']}; torch {doc['versions']['torch']}, crypten {doc['versions']['crypten']}, "
        f"python {doc['versions']['python']}; git {doc['git']['commit'][:12]}{_dirty(doc['git'])}  ",
        f"Transport: {s['transport']}{' (shaped: one-way delay RTT/2 and bandwidth in the sender)' if s['shaped'] and s['transport'] == 'grpc' else ' (not shaped: predictions only)'}; "
        f"randomness provider: {doc['provider']}; repeats {s['repeats']} (WAN {s['wan_repeats']}), warm-up {s['warmup']}; "
        f"this run took {doc['wall_seconds'] / 60:.1f} min.  ",
        f"Machine load (1-min load average) at start {_load(env.get('load_average_1_5_15'))}, at end "
        f"{_load(doc.get('load_average_at_end'))} on {env['cpu_count']} CPUs: other work shared the CPUs, so compute "
        "seconds (and the latencies that include them) are upper bounds; rounds and bytes are exact.  ",
        f"Networks: " + "; ".join(f"{n.upper()} {v['bandwidth_mbit_s']:g} Mbit/s, {v['rtt_ms']:g} ms RTT" for n, v in doc["networks"].items()) + ".  ",
        f"Predicted latency = {doc['latency_model'].removeprefix('predicted = ')}. Compute = the forward's wall-clock time over the unshaped "
        "transport (loopback). Rounds and bytes are the runtime's own counts (CrypTen's communicator counters) for one forward; "
        "weights are random (costs do not depend on values) unless a trained checkpoint exists at that shape.  ",
        "Every CrypTen round between two parties is a simultaneous exchange (both send, both wait for the other's message), "
        "so on the shaped link a round costs one one-way delay, RTT/2, not a full RTT: the measured latency follows "
        "compute + rounds x RTT/2 + bytes / bandwidth (the second prediction column), and DESIGN.md's rounds x RTT formula "
        "is an upper bound.",
        "",
        f"Full mode: {FULL_MODE_NOTE}. Quick mode (`--quick`, CI): the 2_4_8 shape, one repeat, unshaped, well under a minute.",
        "",
        "## Architectures",
        "",
        "| model | shape | heads | MLP activations | where the architecture comes from |",
        "|---|---|---|---|---|",
    ]
    for m in doc["models"]:
        heads = ", ".join(f"{k} {v}" for k, v in sorted(m["heads"].items()))
        acts = ", ".join(f"{k} {v}" for k, v in m["activations"].items()) + _token_note(m)
        lines.append(f"| {m['label']} | {m['arch']} | {heads} | {acts} | {m['arch_source']} |")
    for arch in s["archs"]:
        for batch in s["batches"]:
            for net in s["networks"]:
                rows = rows_by(doc, net, batch, arch)
                if not rows:
                    continue
                lines += ["", f"## {arch}, {net.upper()}, batch {batch}", ""] + _cost_table(rows)
                checks = ordering_checks(rows)
                if checks:
                    lines += ["", "Ordering (measured latency where measured, else predicted):", ""] + checks
        wan1 = rows_by(doc, "wan", 1, arch)
        if any(r.get("published") for r in wan1):
            lines += ["", f"## {arch}: ours vs published (WAN, batch 1)", "", f"Published: {doc['published_source']}.", ""]
            lines += _published_table(wan1)
        est_rows = [r for r in rows_by(doc, "wan" if "wan" in s["networks"] else s["networks"][0], 1, arch) if r.get("cost_table_estimate")]
        if est_rows:
            lines += ["", f"## {arch}: the cost table's estimate vs this measurement (batch 1, {est_rows[0]['network'].upper()})", "",
                      f"The search prices architectures from `{doc['cost_table']['path']}` (`{doc['cost_table']['command']}`); "
                      "its estimate prices every layer as a full layer.", ""] + _estimate_table(est_rows)
        first_net = "wan" if "wan" in s["networks"] else s["networks"][0]
        op_rows = rows_by(doc, first_net, s["batches"][0], arch)
        if op_rows:
            lines += ["", f"## {arch}: per-op breakdown (batch {s['batches'][0]}; rounds / MB both parties / compute s)", ""] + _per_op_table(op_rows)
    wire = [(r["bytes"].get("wire_party0_sent"), r["bytes"]["party0_sent"]) for r in doc["results"] if r["bytes"].get("wire_party0_sent")]
    if wire:
        ratios = [w / c for w, c in wire if c]
        lines += ["", f"Bytes cross-check: the payload bytes party 0 really put on the gRPC wire per forward are "
                  f"{min(ratios):.3f}-{max(ratios):.3f}x the runtime's count."]
    checks = [r["check"] for r in doc["results"] if r.get("check")]
    if checks:
        worst = max(c["max_abs_logit_error"] for c in checks)
        lines += ["", f"Correctness: the secure logits of the first measured forward of every model, opened, are within {worst:.3g} "
                  "of the plaintext logits of the same weights and image (last column of the cost tables). With random, untrained "
                  "weights the logits are all close to each other, so a top-1 comparison means little there; the logit error is "
                  "the check. With trained checkpoints (the quick mode's digits models) it is the runtime's usual accuracy."]
    if plot_names:
        lines += ["", "## Plots", ""] + [f"![{n}]({n})" for n in plot_names]
    return "\n".join(lines) + "\n"


def rerender(out: Path) -> list[Path]:
    """Redraw results.md and the PNGs of a finished run from its results.json."""
    doc = json.loads((out / "results.json").read_text())
    return write_results(doc, out)


if __name__ == "__main__":  # python -m benchmarks.bench results/bench  (re-render a finished run)
    for p in rerender(Path(sys.argv[1] if len(sys.argv) > 1 else "results/bench")):
        print(p)
