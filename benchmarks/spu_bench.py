"""Our runtime beside SecretFlow SPU on the same models, machine and link: one table.

SPU side: ``benchmarks/spu/runner.py`` in the SPU environment (``make
spu-env``), called as a subprocess per model: the JAX twin of the same
ArchSpec, random weights (costs do not depend on values), one random image,
SEMI2K 2PC, FM64, 18 fraction bits, two SPU nodes over brpc on loopback;
on a network it is also measured through a delaying relay when asked.

Our side: the committed benchmark runs (``results/bench/results.json`` for
7_4_32, ``results/bench/9_12_64/results.json``), same labels and specs
(the same ``resolve_entries``), batch 1.

Both engines' latency is predicted with the formula the benchmark validated,
compute + rounds x RTT / 2 + bytes / bandwidth (bytes = the busier party's
sent bytes). For SPU, rounds = send actions of the busier party: in a
two-party SPU protocol every message exchange has each party send once, so
one send action per party is one round; SPU sends nothing it could batch
into a concurrent message, so this counts rounds exactly or over-counts
slightly (a one-sided send, e.g. the party-0-only correction, counts too).

    python -m benchmarks.spu_bench --arch 7_4_32 --out results/spu
    python -m benchmarks.spu_bench --arch 9_12_64 --models vit,mpcformer,mpcvit --mus 0.1 --out results/spu
    python -m benchmarks.spu_bench --agreement --out results/spu      # trained Fashion-MNIST checkpoints
    python -m benchmarks.spu_bench --render results/spu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench import ALL_MODELS, BenchSettings, ModelEntry, resolve_entries
from benchmarks.published import NETWORKS, published_for

ROOT = Path(__file__).resolve().parents[1]
SPU_PYTHON = Path(os.environ.get("MPCVIT_SPU_PYTHON", ROOT / ".venv-spu" / "bin" / "python"))
OURS = {"7_4_32": ROOT / "results" / "bench" / "results.json", "9_12_64": ROOT / "results" / "bench" / "9_12_64" / "results.json"}
FMNIST = ROOT / "checkpoints" / "fashion-mnist"
AGREEMENT_CHECKPOINTS = ("vit_4_4_28", "mpcformer_4_4_28", "thex_4_4_28", "relu_4_4_28", "scale_4_4_28",
                         "mpcvit_4_4_28_mu0.1", "mpcvit_4_4_28_mu0.3", "mpcvit_4_4_28_mu0.7", "mpcvitplus_4_4_28_mu0.3")
LABELS = {"vit": "softmax ViT", "mpcformer": "MPCFormer", "thex": "THE-X", "relu": "all ReLU-softmax",
          "scale": "all scaling", "mpcvit-mu0.7": "MPCViT mu=0.7", "mpcvit-mu0.1": "MPCViT mu=0.1", "mpcvitplus": "MPCViT+"}
TANH = "+tanh-gelu"  # row-name suffix of the tanh rows of earlier runs (when erf was the default)
ERF = "+erf-gelu"  # row-name suffix of an SPU cost row whose twin uses torch's erf GeLU (the second setting)


def run_spu(arch_json: dict[str, Any], networks: str, weights: Path | None = None, inputs: Path | None = None) -> dict[str, Any]:
    """One model through the SPU runner (subprocess in the SPU environment)."""
    if not SPU_PYTHON.is_file():
        raise SystemExit(f"the SPU environment is absent ({SPU_PYTHON}); run 'make spu-env'")
    with tempfile.TemporaryDirectory() as tmp:
        arch, out = Path(tmp) / "arch.json", Path(tmp) / "out.json"
        arch.write_text(json.dumps(arch_json))
        cmd = [str(SPU_PYTHON), "-m", "benchmarks.spu.runner", "--arch", str(arch), "--networks", networks, "--out", str(out)]
        if weights is not None:
            cmd += ["--weights", str(weights)]
        if inputs is not None:
            cmd += ["--inputs", str(inputs)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"SPU runner failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return json.loads(out.read_text())


def spu_costs(doc: dict[str, Any]) -> dict[str, Any]:
    """Rounds (send actions), bytes and seconds of the busier party, per network run."""
    runs = {}
    for r in doc["runs"]:
        parties = r["parties"]
        runs[r["network"]] = {
            "rounds": max(p["send_actions"] for p in parties), "bytes": max(p["send_bytes"] for p in parties),
            "seconds": r["wall_s"], "max_abs_logit_error": r["max_abs_logit_error"],
            "per_op": parties[0]["per_op"]["HLO"], "mode": r["mode"],
        }
    return runs


def our_rows(arch: str) -> dict[tuple[str, str], dict[str, Any]]:
    doc = json.loads(OURS[arch].read_text())
    return {(r["model"], r["network"]): r for r in doc["results"]
            if r["batch"] == 1 and r.get("protocols") in (None, "fss")}  # the default runtime's rows (not fss1's)


def compare_arch(arch: str, models: tuple[str, ...], mus: tuple[float, ...], measure: tuple[str, ...],
                 gelu: str = "tanh") -> list[dict[str, Any]]:
    entries = resolve_entries(BenchSettings(models=models, archs=(arch,), mus=mus))
    ours = our_rows(arch)
    rows = []
    for e in entries:
        nets = "none" + "".join(f",{n}" for n in measure if e.label in MEASURE_MODELS or not MEASURE_MODELS)
        t0 = time.time()
        spec = e.spec.to_dict()
        if gelu == "tanh":
            spec["gelu_form"] = "tanh"
        doc = run_spu(spec, nets)
        spu = spu_costs(doc)
        print(f"{arch} {e.label} (GeLU {gelu}): SPU {spu['none']['rounds']} send actions, {spu['none']['bytes'] / 1e6:.1f} MB, "
              f"{spu['none']['seconds']:.2f} s ({time.time() - t0:.0f} s)", file=sys.stderr)
        row = _row(e, spu, ours, doc)
        row["spu_gelu"] = gelu
        if gelu == "erf":  # the second setting: ours is unchanged, only SPU's twin differs
            row["model"] = e.label + ERF
        rows.append(row)
    return rows


MEASURE_MODELS: set[str] = set()


def _row(e: ModelEntry, spu: dict[str, Any], ours: dict[tuple[str, str], dict[str, Any]], doc: dict[str, Any]) -> dict[str, Any]:
    base = spu["none"]
    row: dict[str, Any] = {"model": e.label, "arch": e.arch, "arch_source": e.arch_source, "spu_settings": doc["settings"],
                           "spu_compile_s": doc.get("compile_s"), "spu_per_op": base["per_op"], "spu_mode": base["mode"],
                           "spu_max_abs_logit_error_random_weights": base["max_abs_logit_error"], "networks": {}}
    for net_name, net in NETWORKS.items():
        o = ours.get((e.label, net_name))
        cell: dict[str, Any] = {
            "spu": {"rounds": base["rounds"], "bytes_sent": base["bytes"], "compute_s": base["seconds"],
                    "predicted_s": net.predict_exchange(base["seconds"], base["rounds"], base["bytes"]),
                    "measured_s": spu[net_name]["seconds"] if net_name in spu else None},
        }
        if o is not None:
            sent = max(o["bytes"]["party0_sent"], o["bytes"]["party1_sent"])
            cell["ours"] = {"rounds": o["rounds"], "bytes_sent": sent, "compute_s": o["compute_s"]["median"],
                            "predicted_s": net.predict_exchange(o["compute_s"]["median"], o["rounds"], sent),
                            "measured_s": (o["latency_measured_s"] or {}).get("median"),
                            "per_op": o["per_op"]}
            best = lambda c: c["measured_s"] if c["measured_s"] is not None else c["predicted_s"]  # noqa: E731
            cell["ratio_ours_over_spu"] = {
                "rounds": o["rounds"] / base["rounds"], "bytes": sent / base["bytes"],
                "predicted_s": cell["ours"]["predicted_s"] / cell["spu"]["predicted_s"],
                "measured_s": (cell["ours"]["measured_s"] / cell["spu"]["measured_s"]
                               if cell["ours"]["measured_s"] and cell["spu"]["measured_s"] else None),
                "best_s": best(cell["ours"]) / best(cell["spu"]),
            }
        pub = published_for(e.label, e.arch)
        if pub is not None and net_name == "wan":
            cell["published_spu_s"] = pub.wan_seconds
        row["networks"][net_name] = cell
    return row


def agreement(limit: int, names: tuple[str, ...] = AGREEMENT_CHECKPOINTS) -> list[dict[str, Any]]:
    """Trained Fashion-MNIST checkpoints: SPU logits vs the torch plaintext on real test images."""
    import torch

    from mpcvit.checkpoint import load_checkpoint
    from mpcvit.data import load_dataset

    data = load_dataset("fashion-mnist", "test")
    images = torch.stack([data[i][0] for i in range(limit)])
    out = []
    for name in names:
        d = FMNIST / name
        model, meta = load_checkpoint(d)
        norm = meta["normalisation"]
        x = (images - torch.tensor(norm["mean"]).view(1, -1, 1, 1)) / torch.tensor(norm["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            plain = model(x).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "x.npy", x.numpy())
            doc = run_spu(json.loads((d / "arch.json").read_text()), "none", d / "model.safetensors", Path(tmp) / "x.npy")
        logits = np.asarray(doc["runs"][0]["logits"])
        twin = np.asarray(doc["plain_logits"])
        row = {"checkpoint": str(d.relative_to(ROOT)), "images": limit,
               "twin_vs_torch_max_abs": float(np.abs(twin - plain).max()),
               "spu_vs_torch_max_abs": float(np.abs(logits - plain).max()),
               "top1_agreement": float((logits.argmax(-1) == plain.argmax(-1)).mean()),
               "spu_send_actions": max(p["send_actions"] for p in doc["runs"][0]["parties"])}
        print(f"agreement {name}: {row}", file=sys.stderr)
        out.append(row)
    return out


# -- render --------------------------------------------------------------------------


def label(model: str) -> str:
    if model.endswith(TANH):
        return LABELS.get(model[: -len(TANH)], model) + " (SPU tanh-GeLU)"
    if model.endswith(ERF):
        return LABELS.get(model[: -len(ERF)], model) + " (SPU erf-GeLU, second setting)"
    return LABELS.get(model, model)


def _s(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f}" if x < 100 else f"{x:.0f}")


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| shape | model | network | ours rounds | SPU send actions | ours MB | SPU MB | ours s | SPU s | ours / SPU | published SPU s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in doc.get("rows", []):
        for net, c in row["networks"].items():
            if "ours" not in c:
                continue
            o, s, r = c["ours"], c["spu"], c["ratio_ours_over_spu"]
            os_ = f"{_s(o['measured_s'])} m" if o["measured_s"] else f"{_s(o['predicted_s'])} p"
            ss = f"{_s(s['measured_s'])} m" if s["measured_s"] else f"{_s(s['predicted_s'])} p"
            lines.append(f"| {row['arch']} | {label(row['model'])} | {net} | {o['rounds']} | {s['rounds']} | "
                         f"{o['bytes_sent'] / 1e6:.1f} | {s['bytes_sent'] / 1e6:.1f} | {os_} | {ss} | {r['best_s']:.2f}x | "
                         f"{_s(c.get('published_spu_s'))} |")
    return "\n".join(lines)


def per_op_markdown(doc: dict[str, Any], arch: str, model: str) -> str:
    row = next((r for r in doc.get("rows", []) if r["arch"] == arch and r["model"] == model), None)
    if row is None:
        return ""
    spu = sorted(row["spu_per_op"].items(), key=lambda kv: -kv[1]["send_actions"])
    ours = sorted(row["networks"]["wan"]["ours"]["per_op"].items(), key=lambda kv: -kv[1]["rounds"])
    lines = [f"| SPU pphlo op ({model}, {arch}) | send actions | MB sent | s | | ours op kind | rounds | MB sent | s |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|"]
    for i in range(max(len([x for x in spu if x[1]["send_actions"]]), len(ours))):
        a = spu[i] if i < len(spu) and spu[i][1]["send_actions"] else None
        b = ours[i] if i < len(ours) else None
        left = f"{a[0]} | {a[1]['send_actions']} | {a[1]['send_bytes'] / 1e6:.1f} | {a[1]['seconds']:.2f}" if a else " | | | "
        right = f"{b[0]} | {b[1]['rounds']:.0f} | {b[1]['bytes_party0'] / 1e6:.1f} | {b[1]['seconds']:.2f}" if b else " | | | "
        lines.append(f"| {left} | | {right} |")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc.get("rows", []) if "ours" in r["networks"]["wan"] and not r["model"].endswith((ERF, TANH))]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, arch in zip(axes, ("7_4_32", "9_12_64")):
        sel = [r for r in rows if r["arch"] == arch]
        names = [label(r["model"]) for r in sel]
        xs = np.arange(len(sel))

        def best(c: dict[str, Any]) -> float:
            return c["measured_s"] if c["measured_s"] else c["predicted_s"]

        ax.bar(xs - 0.27, [best(r["networks"]["wan"]["ours"]) for r in sel], 0.27, label="ours (this machine)")
        ax.bar(xs, [best(r["networks"]["wan"]["spu"]) for r in sel], 0.27, label="SPU (this machine)")
        ax.bar(xs + 0.27, [r["networks"]["wan"].get("published_spu_s") or 0 for r in sel], 0.27, label="SPU published")
        ax.set_xticks(xs, names, rotation=30, ha="right")
        ax.set_ylabel("WAN latency, s (batch 1)")
        ax.set_title(f"{arch}: WAN 400 Mbit/s, 40 ms RTT")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(out: Path) -> None:
    doc = json.loads((out / "results.json").read_text())
    (out / "table.md").write_text(markdown(doc) + "\n\n" + per_op_markdown(doc, "7_4_32", "vit") + "\n")
    plot(doc, out / "wan_ours_spu_published.png")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=None, help="7_4_32 or 9_12_64")
    ap.add_argument("--models", default=",".join(ALL_MODELS))
    ap.add_argument("--mus", default="0.7,0.1")
    ap.add_argument("--measure", default="", help="networks to measure SPU on through the relay (lan,wan)")
    ap.add_argument("--measure-models", default="", help="labels to measure on --measure (default: all)")
    ap.add_argument("--gelu", choices=("erf", "tanh"), default="tanh",
                    help="SPU twin's GeLU: tanh (jax.nn.gelu's default, what JAX and Flax users get: SPU's best setting, "
                    "the default) or erf (torch's exact GeLU: a labelled second setting, model name +erf-gelu)")
    ap.add_argument("--agreement", action="store_true", help="trained Fashion-MNIST checkpoints on real test images")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--checkpoints", default=",".join(AGREEMENT_CHECKPOINTS),
                    help="Fashion-MNIST checkpoint names for --agreement; rows of other checkpoints already in results.json are kept")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "spu")
    ap.add_argument("--render", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.render:
        render(a.render)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "results.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"rows": [], "agreement": [], "commands": []}
    doc["commands"].append("python -m benchmarks.spu_bench " + " ".join(argv if argv is not None else sys.argv[1:]))
    if a.arch:
        MEASURE_MODELS.update(x for x in a.measure_models.split(",") if x)
        measure = tuple(x for x in a.measure.split(",") if x)
        rows = compare_arch(a.arch, tuple(a.models.split(",")), tuple(float(m) for m in a.mus.split(",")), measure, a.gelu)
        keep = {(r["arch"], r["model"]) for r in rows}
        doc["rows"] = [r for r in doc["rows"] if (r["arch"], r["model"]) not in keep] + rows
    if a.agreement:
        new = agreement(a.limit, tuple(x for x in a.checkpoints.split(",") if x))
        done = {r["checkpoint"] for r in new}
        doc["agreement"] = [r for r in doc.get("agreement", []) if r["checkpoint"] not in done] + new
    doc["latency_model"] = "compute + rounds x RTT/2 + bytes / bandwidth (both engines); SPU rounds = send actions of the busier party"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    render(a.out)


if __name__ == "__main__":
    main()
