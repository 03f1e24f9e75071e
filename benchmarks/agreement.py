"""Top-1 agreement with plaintext and the largest logit error, for every committed Fashion-MNIST checkpoint, per runtime.

    python -m benchmarks.agreement --runtimes fss1,fss --images 2000 --out results/agreement/agreement.json

runs ``mpcvit eval-private``'s evaluation (two party processes in-process, the
dealer provider) on the first ``--images`` test images of each checkpoint of
``checkpoints/fashion-mnist`` under each runtime (``protocols.config.runtime_config``:
fss1 the runtime before the whole-cost work, spline the product runtime with the spline GeLU on every layer,
product the default with the ReLU-softmax heads on the one-round product gate, fss the default), one after the
other, and writes one JSON (every result, the command, the machine's load) and
a markdown table beside it. Resumable: a (checkpoint, runtime) already in the
JSON is skipped, and the JSON is rewritten after each one, so a stopped run
goes on where it stopped. Progress goes to stderr (a line per run).

The requirement it checks: agreement >= 99.5 % for every checkpoint under the
default runtime. ``--smoke`` runs one checkpoint on 8 images (the test suite's mode).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints" / "fashion-mnist"
TARGET = 0.995


def checkpoints() -> list[Path]:
    return sorted(p for p in CHECKPOINTS.iterdir() if (p / "arch.json").is_file())


def run_one(ckpt: Path, runtime: str, images: int, batch_size: int) -> dict[str, Any]:
    from mpcvit.checkpoint import load_checkpoint
    from mpcvit.data import load_dataset
    from protocols.config import runtime_config
    from protocols.evaluate import evaluate_private

    model, meta = load_checkpoint(ckpt)
    x, y = load_dataset(meta.get("dataset", "fashion-mnist"), "test").tensors
    result = evaluate_private(model, meta, x[:images], y[:images], batch_size=batch_size, config=runtime_config(runtime))
    keep = ("images", "agreement", "max_abs_logit_error", "mean_abs_logit_error", "plaintext_accuracy", "private_accuracy",
            "wall_seconds", "per_batch", "gate_fallbacks")
    return {"checkpoint": ckpt.name, "runtime": runtime, **{k: result[k] for k in keep if k in result}}


def markdown(doc: dict[str, Any]) -> str:
    runtimes = doc["runtimes"]
    by = {(r["checkpoint"], r["runtime"]): r for r in doc["results"]}
    names = sorted({r["checkpoint"] for r in doc["results"]})
    head = " | ".join(f"agreement {rt} | max logit error {rt}" for rt in runtimes)
    lines = [
        "# Agreement with plaintext, per runtime (Fashion-MNIST test images)", "",
        f"Command: `{doc['command']}`  ", f"{doc['images']} test images per checkpoint, batch {doc['batch_size']}; "
        f"requirement: agreement >= {TARGET:.1%} under every runtime shipped as default.", "",
        f"| checkpoint | {head} |", "|---|" + "---:|---:|" * len(runtimes),
    ]
    if doc.get("note"):
        lines[4:4] = ["", doc["note"]]
    for n in names:
        cells = []
        for rt in runtimes:
            r = by.get((n, rt))
            cells += [f"{r['agreement']:.2%}", f"{r['max_abs_logit_error']:.4f}"] if r else ["-", "-"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    fell = sorted({f"{r['checkpoint']} ({r['runtime']})" for r in doc["results"] if r.get("gate_fallbacks")})
    if fell:
        lines += ["", "Comparisons that fell back to the ring circuits (a call over `fss_max_values` at this batch "
                  "size; those ops ran with the circuits' numerics, not the gate's): " + ", ".join(fell) + "."]
    elif all("gate_fallbacks" in r for r in doc["results"]):
        lines += ["", "No comparison fell back to the ring circuits: every batch ran the DCF gates a single image is "
                  "served with (`gate_fallbacks` 0)."]
    worst = {rt: min((r["agreement"] for r in doc["results"] if r["runtime"] == rt), default=None) for rt in runtimes}
    lines += ["", "Lowest agreement per runtime: " + ", ".join(
        f"{rt} {w:.2%}" for rt, w in worst.items() if w is not None) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtimes", default="fss1,fss", help="comma list of fss, product, spline, fss1, circuits (default fss1,fss)")
    parser.add_argument("--images", type=int, default=2000, help="test images per checkpoint (default 2000)")
    parser.add_argument("--batch-size", type=int, default=10,
                        help="images per secure forward (default 10: every op of a 4_4_28 model stays under "
                             "fss_max_values, so each batch runs the gates a single image is served with)")
    parser.add_argument("--only", default="", help="comma list of checkpoint names (default: every one)")
    parser.add_argument("--smoke", action="store_true", help="one checkpoint, 8 images, batch 8")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write (and resume); the markdown goes beside it")
    args = parser.parse_args(argv)
    runtimes = [r for r in args.runtimes.split(",") if r]
    from protocols.config import RUNTIMES

    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        parser.error(f"unknown runtime {bad[0]!r}; choose from {', '.join(RUNTIMES)}")
    todo = checkpoints()
    if args.only:
        todo = [p for p in todo if p.name in args.only.split(",")]
    if args.smoke:
        todo, args.images, args.batch_size = [p for p in todo if p.name == "mpcvit_4_4_28_mu0.1"][:1], 8, 8
    command = "python -m benchmarks.agreement " + " ".join(argv if argv is not None else sys.argv[1:])
    doc: dict[str, Any] = {"command": command, "images": args.images, "batch_size": args.batch_size, "runtimes": runtimes,
                           "results": []}
    if args.out.is_file():
        old = json.loads(args.out.read_text())
        if old.get("images") == args.images and old.get("batch_size") == args.batch_size:
            doc["results"] = old.get("results", [])
            # runs with other runtimes add their columns; the earlier runtimes first
            seen = {r["runtime"] for r in doc["results"]} | set(runtimes)
            doc["runtimes"] = [r for r in ("fss1", "spline", "product", "fss", "circuits") if r in seen]
            doc["command"] = "; ".join(dict.fromkeys([*old.get("command", "").split("; "), command]))
            if old.get("note"):
                doc["note"] = old["note"]
    done = {(r["checkpoint"], r["runtime"]) for r in doc["results"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(c, rt) for c in todo for rt in runtimes if (c.name, rt) not in done]
    for i, (ckpt, rt) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        res = run_one(ckpt, rt, args.images, args.batch_size)
        res["load_average"] = list(os.getloadavg())
        doc["results"].append(res)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(doc))
        print(f"[{i}/{len(jobs)}] {ckpt.name} {rt}: agreement {res['agreement']:.4f}, max logit error "
              f"{res['max_abs_logit_error']:.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
