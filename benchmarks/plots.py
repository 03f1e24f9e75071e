"""PNG plots of a benchmark's results.json (matplotlib, Agg backend).

* ``latency_<arch>.png``: latency per model on each network (measured where
  measured, predicted beside it), with the published SPU WAN figures.
* ``costs_<arch>.png``: rounds and MB (both parties) per model.
* ``per_op_<arch>.png``: rounds and MB per op kind, stacked per model.
* ``pareto_<arch>.png``: accuracy vs WAN latency, where accuracies exist
  (a checkpoint's, or the paper's for the shapes it reports, labelled so).

``python -m benchmarks.plots results/bench/results.json`` redraws them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.published import published_for  # noqa: E402

COLORS = {"measured": "#1f77b4", "predicted": "#aec7e8", "published": "#d62728"}


def _rows(doc: dict[str, Any], arch: str, network: str, batch: int) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["arch"] == arch and r["network"] == network and r["batch"] == batch]


def _names(rows: list[dict[str, Any]]) -> list[str]:
    """Model names, with the protocol set appended where the rows hold more than one (``--protocols both``)."""
    multi = len({r.get("protocols") for r in rows}) > 1
    return [f"{r['model']} ({r['protocols']})" if multi and r.get("protocols") else r["model"] for r in rows]


def plot_latency(doc: dict[str, Any], arch: str, out: Path) -> Path:
    nets = doc["settings"]["networks"]
    batch = doc["settings"]["batches"][0]
    fig, axes = plt.subplots(1, len(nets), figsize=(6.5 * len(nets), 4.6), squeeze=False)
    for ax, net in zip(axes[0], nets):
        rows = _rows(doc, arch, net, batch)
        labels = _names(rows)
        x = range(len(rows))
        w = 0.27
        measured = [r["latency_measured_s"]["median"] if r.get("latency_measured_s") else 0.0 for r in rows]
        predicted = [r["latency_predicted_s"] for r in rows]
        ax.bar([i - w for i in x], measured, w, label="ours, measured (shaped gRPC)", color=COLORS["measured"])
        ax.bar(list(x), predicted, w, label="ours, predicted: compute + rounds x RTT + bytes/bw", color=COLORS["predicted"])
        exchange = [r.get("latency_predicted_exchange_s", 0.0) for r in rows]
        ax.scatter(list(x), exchange, marker="_", s=300, color="black", zorder=3, label="ours, predicted with rounds x RTT/2")
        if net == "wan" and batch == 1:  # the published figures are batch 1
            pub = [(p.wan_seconds if (p := published_for(r["model"], arch)) else 0.0) for r in rows]
            if any(pub):
                ax.bar([i + w for i in x], pub, w, label="published (SPU, SEMI-2K)", color=COLORS["published"])
        for i, r in enumerate(rows):
            if r.get("latency_measured_s"):
                ax.text(i - w, measured[i], f"{measured[i]:.3g}", ha="center", va="bottom", fontsize=7)
            else:
                ax.text(i - w, 0, "n/m", ha="center", va="bottom", fontsize=7, color="gray")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("seconds per inference")
        ax.set_title(f"{arch}, {net.upper()}, batch {batch}")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / f"latency_{arch}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_costs(doc: dict[str, Any], arch: str, out: Path) -> Path:
    net = doc["settings"]["networks"][0]
    batch = doc["settings"]["batches"][0]
    rows = _rows(doc, arch, net, batch)
    labels = _names(rows)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4))
    a1.bar(labels, [r["rounds"] for r in rows], color="#2ca02c")
    a1.set_ylabel("rounds per inference")
    a1.set_title(f"{arch}: rounds (batch {batch})")
    a2.bar(labels, [r["bytes"]["party0_sent"] / 1e6 for r in rows], label="party 0 sent", color="#9467bd")
    a2.bar(labels, [r["bytes"]["party1_sent"] / 1e6 for r in rows], bottom=[r["bytes"]["party0_sent"] / 1e6 for r in rows],
           label="party 1 sent", color="#c5b0d5")
    a2.set_ylabel("MB per inference")
    a2.set_title(f"{arch}: bytes (batch {batch})")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        for t in ax.get_xticklabels():
            t.set_ha("right")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / f"costs_{arch}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_op(doc: dict[str, Any], arch: str, out: Path) -> Path | None:
    net = doc["settings"]["networks"][0]
    batch = doc["settings"]["batches"][0]
    rows = _rows(doc, arch, net, batch)
    kinds = sorted({k for r in rows for k in r["per_op"]})
    if not kinds:
        return None
    labels = _names(rows)
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, (metric, title) in zip(axes, [("rounds", "rounds"), ("mb", "MB, both parties")]):
        bottom = [0.0] * len(rows)
        for i, kind in enumerate(kinds):
            vals = []
            for r in rows:
                op = r["per_op"].get(kind, {})
                vals.append(op.get("rounds", 0.0) if metric == "rounds" else (op.get("bytes_party0", 0.0) + op.get("bytes_party1", 0.0)) / 1e6)
            ax.bar(labels, vals, bottom=bottom, label=kind, color=cmap(i % 20))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title(f"{arch}: {title} per op kind (batch {batch})")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        for t in ax.get_xticklabels():
            t.set_ha("right")
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = out / f"per_op_{arch}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy(row: dict[str, Any], arch: str) -> tuple[float, str] | None:
    if row.get("accuracy"):
        return float(row["accuracy"]["value"]), f"checkpoint ({row['accuracy']['dataset']})"
    pub = published_for(row["model"], arch)
    if pub is not None:
        return pub.accuracy, f"the paper's {pub.dataset} figures"
    return None


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated (lower latency and higher accuracy is better), sorted by latency."""
    front, best = [], -1.0
    for lat, acc in sorted(points):
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front


def plot_pareto(doc: dict[str, Any], arch: str, out: Path) -> Path | None:
    net = "wan" if "wan" in doc["settings"]["networks"] else doc["settings"]["networks"][0]
    rows = _rows(doc, arch, net, 1) or _rows(doc, arch, net, doc["settings"]["batches"][0])
    pts = []
    for r, name in zip(rows, _names(rows)):
        acc = _accuracy(r, arch)
        if acc is None:
            continue
        m = r.get("latency_measured_s")
        pts.append((m["median"] if m else r["latency_predicted_s"], acc[0], name, acc[1]))
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for lat, acc, label, _ in pts:
        ax.scatter(lat, acc, s=40, color="#d62728" if label.startswith("mpcvit") else "#1f77b4")
        ax.annotate(label, (lat, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = _pareto([(p[0], p[1]) for p in pts])
    ax.plot([f[0] for f in front], [f[1] for f in front], "--", color="gray", lw=1, label="Pareto front")
    sources = sorted({p[3] for p in pts})
    ax.set_xlabel(f"our secure latency on {net.upper()}, s (measured where measured)")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title(f"{arch}: accuracy ({', '.join(sources)}) vs our secure latency", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"pareto_{arch}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Every plot for every architecture of the run; returns the files written."""
    paths: list[Path] = []
    for arch in doc["settings"]["archs"]:
        paths.append(plot_latency(doc, arch, out))
        paths.append(plot_costs(doc, arch, out))
        for maybe in (plot_per_op(doc, arch, out), plot_pareto(doc, arch, out)):
            if maybe is not None:
                paths.append(maybe)
    return paths


if __name__ == "__main__":
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results/bench/results.json")
    for p in make_plots(json.loads(results.read_text()), results.parent):
        print(p)
