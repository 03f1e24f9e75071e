"""Accuracy vs estimated secure latency (LAN and WAN) of every trained model of a dataset: PNG + JSON.

Reads each checkpoint directory under ``--checkpoints`` (``arch.json`` + ``meta.json``),
takes its plaintext test accuracy from ``meta.json`` and estimates its secure latency on
each network from the cost table (latency = compute + rounds x RTT + bytes / bandwidth).
Marks the Pareto front per network (no other model at least as accurate and at least as
fast, one of them strictly) and, for every MPCViT / MPCViT+ point, the baselines that
dominate it.

With ``--runs``, accuracies come from a directory of run records instead (the
``meta.json`` of every run, ``<checkpoint>.json`` and ``<checkpoint>_seed<N>.json``):
the runs of one checkpoint name are its seeds, a point's accuracy is their mean, the
plot's error bar their sample standard deviation (none for one seed), and dominance
compares means. The architecture of each point still comes from ``--checkpoints``.
Records named ``*_e<N>`` (convergence probes with another epoch count) are left out.

    python -m mpcvit.search.pareto --checkpoints checkpoints/fashion-mnist \
        --runs results/fashion_mnist_runs --out results/search/pareto_fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mpcvit.checkpoint import CheckpointError, load_meta, load_spec
from mpcvit.models.spec import ArchSpec
from mpcvit.search.costs import NETWORKS, CostModel, get_cost_model

log = logging.getLogger(__name__)

LABELS: dict[str, str] = {
    "vit": "softmax ViT",
    "mpcformer": "MPCFormer",
    "thex": "THE-X",
    "relu": "all ReLU-softmax",
    "scale": "all scaling",
    "mpcvit": "MPCViT",
    "mpcvitplus": "MPCViT+",
}
OURS = ("mpcvit", "mpcvitplus")
ROLE_SUFFIX = {"reference": " (same recipe as ours)", "teacher": " (KD teacher)"}
MARKERS = {"vit": "s", "mpcformer": "^", "thex": "v", "relu": "D", "scale": "P", "mpcvit": "o", "mpcvitplus": "*"}


@dataclass
class Point:
    name: str  # checkpoint directory name
    family: str  # registry variant: vit, mpcformer, ..., mpcvit, mpcvitplus
    label: str
    accuracy: float
    latency_s: dict[str, float]
    heads: dict[str, int]
    act: list[str]
    mu: float | None
    act_summary: str
    role: str  # "baseline" (trained by 'mpcvit train'), "derived" (ours), "reference" / "teacher" (our re-runs)
    accuracy_std: float | None = None  # sample std over seeds (None: one seed)
    accuracies: tuple[float, ...] = ()  # one per seed
    distilled: bool | None = None


def accuracy_of(meta: dict[str, Any]) -> float:
    """Test accuracy (fraction) from a checkpoint's meta.json, wherever the trainer put it."""
    for holder in (meta, meta.get("metrics", {}), meta.get("result", {})):
        for key in ("test_accuracy", "accuracy", "test_acc"):
            if isinstance(holder, dict) and isinstance(holder.get(key), (int, float)):
                value = float(holder[key])
                return value / 100.0 if value > 1.0 else value
    raise CheckpointError("meta.json holds no test accuracy")


def family_of(spec: ArchSpec, name: str) -> str:
    variant = (spec.name or name).partition("_")[0]
    return variant if variant in LABELS else name.partition("_")[0]


_SEED = re.compile(r"_seed\d+$")
_PROBE = re.compile(r"_e\d+$")


def seed_accuracies(runs: Path) -> dict[str, list[float]]:
    """Checkpoint name -> the test accuracy of each of its seeds, from run records ``<name>[_seed<N>].json``."""
    groups: dict[str, list[float]] = {}
    for f in sorted(runs.glob("*.json")):
        if _PROBE.search(f.stem):
            continue
        groups.setdefault(_SEED.sub("", f.stem), []).append(accuracy_of(json.loads(f.read_text())))
    return groups


def collect(root: Path, costs: CostModel, runs: Path | None = None) -> list[Point]:
    points = []
    seeds = seed_accuracies(runs) if runs is not None else {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            spec, meta = load_spec(d), load_meta(d)
            accs = seeds.get(d.name) or [accuracy_of(meta)]
        except CheckpointError as exc:
            log.warning("skipping %s: %s", d, exc)
            continue
        acc = statistics.fmean(accs)
        family = family_of(spec, d.name)
        search = spec.extra.get("search", {}) if isinstance(spec.extra, dict) else {}
        label = LABELS.get(family, family)
        mu = search.get("mu")
        if family in OURS and mu is not None:
            label = f"{label} mu={mu:g}"
        role = str(meta.get("role", "derived" if family in OURS else "baseline"))
        label += ROLE_SUFFIX.get(role, "")
        distilled = meta.get("distilled")
        if family != "vit" and isinstance(distilled, bool):
            label += " KD" if distilled else " no KD"
        points.append(Point(
            name=d.name, family=family, label=label, accuracy=acc,
            latency_s={net: costs.arch_latency(spec, net) for net in NETWORKS},
            heads=spec.count_heads(), act=list(spec.act), mu=mu, act_summary=_act_summary(spec), role=role,
            accuracy_std=statistics.stdev(accs) if len(accs) > 1 else None, accuracies=tuple(accs),
            distilled=distilled if isinstance(distilled, bool) else None,
        ))
    if not points:
        raise ValueError(f"no checkpoints with a test accuracy under {root}")
    labels = [p.label for p in points]
    for p in points:  # tell apart models that would share a label
        if labels.count(p.label) > 1:
            p.label = f"{p.label} [{p.name}]"
    return points


def _act_summary(spec: ArchSpec) -> str:
    parts = []
    for layer, kind in enumerate(spec.act):
        toks = spec.tokens_with_act(layer)
        parts.append(kind if toks is None or kind == "identity" else f"{kind}({len(toks)}/{spec.num_tokens})")
    return " ".join(parts)


def dominates(a: Point, b: Point, network: str) -> bool:
    """a is at least as accurate and as fast as b, and strictly better in one."""
    la, lb = a.latency_s[network], b.latency_s[network]
    return a.accuracy >= b.accuracy and la <= lb and (a.accuracy > b.accuracy or la < lb)


def analyse(points: list[Point]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    baselines = [p for p in points if p.family not in OURS]
    ref = next((p for p in points if p.family == "vit" and p.role == "baseline"), None)
    same_recipe = next((p for p in points if p.family == "vit" and p.role == "reference"), None)
    for net in NETWORKS:
        front = [p.name for p in points if not any(dominates(q, p, net) for q in points)]
        ours = {
            p.name: {
                "dominated_by_baselines": [q.name for q in baselines if dominates(q, p, net)],
                "dominated_by_same_recipe_baselines": [q.name for q in baselines if q.role == "reference" and dominates(q, p, net)],
            }
            for p in points if p.family in OURS
        }
        dominated_by = {p.name: [q.name for q in points if dominates(q, p, net)] for p in points}
        out[net] = {"pareto_front": front, "ours": ours, "dominated_by": dominated_by}
    for key, r in (("vs_softmax_vit", ref), ("vs_softmax_reference_same_recipe", same_recipe)):
        if r is not None:
            out[key] = {
                p.name: {
                    "accuracy_gap_points": round(100 * (r.accuracy - p.accuracy), 2),
                    "wan_latency_ratio": round(p.latency_s["wan"] / r.latency_s["wan"], 3),
                    "lan_latency_ratio": round(p.latency_s["lan"] / r.latency_s["lan"], 3),
                }
                for p in points if p is not r
            }
    return out


def plot(points: list[Point], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(NETWORKS), figsize=(12, 4.8))
    for ax, net in zip(axes, NETWORKS):
        front = sorted((p for p in points if not any(dominates(q, p, net) for q in points)), key=lambda p: p.latency_s[net])
        ax.step([p.latency_s[net] for p in front], [100 * p.accuracy for p in front], where="post", color="0.7", lw=1, zorder=1)
        for p in points:
            ours = p.family in OURS
            color = "tab:red" if ours else ("tab:blue" if p.role == "baseline" else "tab:gray")
            if p.distilled is False and p.family != "vit":
                color = "tab:cyan"  # a baseline trained without distillation
            if p.accuracy_std is not None:
                ax.errorbar(p.latency_s[net], 100 * p.accuracy, yerr=100 * p.accuracy_std, fmt="none",
                            ecolor="black", elinewidth=1, capsize=3, zorder=3)
            ax.scatter(p.latency_s[net], 100 * p.accuracy, marker=MARKERS.get(p.family, "x"), s=70 if ours else 55,
                       color=color, zorder=2, edgecolor="black", linewidth=0.5)
            seeds = f" ({len(p.accuracies)} seeds)" if len(p.accuracies) > 1 else ""
            ax.annotate(p.label + seeds, (p.latency_s[net], 100 * p.accuracy), textcoords="offset points",
                        xytext=(5, 3), fontsize=6)
        n = NETWORKS[net]
        ax.set_title(f"{net.upper()}: {n.bandwidth_bps / 1e6:g} Mbit/s, {n.rtt_s * 1e3:g} ms RTT")
        ax.set_xlabel("estimated secure latency per image (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown_table(points: list[Point], analysis: dict[str, Any]) -> str:
    """One row per model: heads, activations, accuracy, estimated LAN / WAN latency, ratio to the softmax ViT(s)."""
    same = analysis.get("vs_softmax_reference_same_recipe", {})
    full = analysis.get("vs_softmax_vit", {})
    rows = [
        "| model | checkpoint | heads | MLP activation (tokens kept) | accuracy % | seeds | LAN s | WAN s "
        "| WAN x vs softmax ViT | on LAN front | on WAN front |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: -p.latency_s["wan"]):
        heads = ", ".join(f"{k} {v}" for k, v in sorted(p.heads.items()))
        ratio = full.get(p.name, {}).get("wan_latency_ratio", same.get(p.name, {}).get("wan_latency_ratio", ""))
        fronts = ["yes" if p.name in analysis[net]["pareto_front"] else "" for net in ("lan", "wan")]
        acc = f"{100 * p.accuracy:.2f}" + (f" +- {100 * p.accuracy_std:.2f}" if p.accuracy_std is not None else "")
        rows.append(f"| {p.label} | `{p.name}` | {heads} | {p.act_summary} | {acc} | {len(p.accuracies)} | "
                    f"{p.latency_s['lan']:.2f} | {p.latency_s['wan']:.2f} | {ratio} | {fronts[0]} | {fronts[1]} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints/fashion-mnist", help="directory of checkpoint directories")
    parser.add_argument("--runs", help="directory of run records (meta.json copies, <name>[_seed<N>].json): seeds")
    parser.add_argument("--out", default="results/search/pareto_fashion_mnist", help="output stem (.png and .json)")
    parser.add_argument("--costs", dest="cost_source", choices=("auto", "table", "placeholder"), default="auto")
    parser.add_argument("--title", default="Fashion-MNIST, ViT-Lite 4_4_28: accuracy vs secure latency (2PC)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    costs = get_cost_model(args.cost_source)
    points = collect(Path(args.checkpoints), costs, Path(args.runs) if args.runs else None)
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    plot(points, stem.with_suffix(".png"), f"{args.title} [{costs.source} costs]")
    data = {
        "command": "python -m mpcvit.search.pareto " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cost_source": costs.source,
        "networks": {k: asdict(v) for k, v in NETWORKS.items()},
        "points": [asdict(p) for p in points],
        "analysis": analyse(points),
    }
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown_table(points, data["analysis"]))
    log.info("wrote %s.png and %s.json (%d models, %s costs)", stem, stem, len(points), costs.source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
