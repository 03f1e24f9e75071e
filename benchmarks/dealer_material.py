"""What the dealer's material per inference is made of: the plan's requests by kind, per model and runtime.

    python -m benchmarks.dealer_material --arch 7_4_32 --runtimes product,fss --out results/dealer_material.json

Each party's local dry run of one forward (batch 1, random seeded weights, the
benchmark's models: ``benchmarks.bench_models``) records the randomness plan;
nothing is exchanged and nothing is timed. The plan's requests are summed by
kind (Beaver triples by op, the weights' fixed-mask products, squares, DCF keys
by (ring bits, dropped bits, payload), trigonometric tables) into the bytes the
dealer sends to each party. Writes the JSON and a markdown table beside it.
The bytes are exact: they are what ``mpcvit bench``'s "dealer MB" column sums.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_models import ALL_MODELS, BenchSettings, resolve_entries  # noqa: E402
from mpcvit.prg import new_key  # noqa: E402
from protocols.local import run_two_party  # noqa: E402

MB = 1e6


def request_label(req: Any) -> str:
    """A request's kind as the tables show it: ``dcf (20, 6, P=2)``, ``triple mul``, ``trig``, ``square``..."""
    if req.kind == "dcf":
        bits, drop, payload = req.dcf_params
        return f"dcf ({bits}, {drop}) " + ("one-bit key + select" if payload == 0 else f"P={payload}")
    if req.kind == "additive":
        return f"triple {req.op}"
    if req.kind == "fixed":
        return "fixed-mask matmul"
    return req.kind


def _party(rank: int, entries: list[dict[str, Any]], runtimes: list[str], master_key: bytes) -> list[dict[str, Any]]:
    import torch

    from mpcvit.models.spec import ArchSpec
    from mpcvit.models.vit import VisionTransformer
    from mpcvit.prg import derive_key
    from protocols.config import apply_config, runtime_config
    from protocols.providers import DealerProvider, InProcessDealer, install_provider
    from protocols.runtime import SecureViT

    install_provider(DealerProvider(rank))
    out = []
    for runtime in runtimes:
        config = runtime_config(runtime)
        apply_config(config)
        for i, entry in enumerate(entries):
            spec = ArchSpec.from_dict(entry["spec"])
            torch.manual_seed(i)
            model = VisionTransformer(spec).eval() if rank == 0 else None
            secure = SecureViT.share(model, spec, None, owner=0, config=config,
                                     batch_source=InProcessDealer(derive_key(master_key, f"model/{runtime}/{i}")))
            kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for req in secure.plan(1):
                row = kinds[request_label(req)]
                row[0] += 1
                row[1] += req.correction_bytes(0)
                row[2] += req.correction_bytes(1)
            out.append({"model": entry["label"], "runtime": runtime,
                        "kinds": {k: {"requests": v[0], "party0_bytes": v[1], "party1_bytes": v[2]} for k, v in kinds.items()}})
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# The dealer's material per inference, by kind", "", f"`{doc['command']}`", "",
             f"{doc['arch']}, batch 1, random seeded weights; each party's dry run of the plan (exact, nothing exchanged). "
             "MB to party 0 / party 1 (DCF keys go to both; every other kind to party 0 only, party 1 draws its "
             "share from its PRG).", ""]
    for row in doc["results"]:
        total0 = sum(k["party0_bytes"] for k in row["kinds"].values())
        total1 = sum(k["party1_bytes"] for k in row["kinds"].values())
        lines += [f"## {row['model']} ({row['runtime']}): {(total0 + total1) / MB:.1f} MB", "",
                  "| kind | requests | MB to party 0 | MB to party 1 | share |", "|---|---:|---:|---:|---:|"]
        for name, k in sorted(row["kinds"].items(), key=lambda kv: -(kv[1]["party0_bytes"] + kv[1]["party1_bytes"])):
            both = k["party0_bytes"] + k["party1_bytes"]
            lines.append(f"| {name} | {k['requests']} | {k['party0_bytes'] / MB:.2f} | {k['party1_bytes'] / MB:.2f} | "
                         f"{100 * both / max(total0 + total1, 1):.0f}% |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="7_4_32", help="model shape (default 7_4_32)")
    parser.add_argument("--models", default=",".join(ALL_MODELS), help="comma list (default every model of the benchmark)")
    parser.add_argument("--runtimes", default="product,fss", help="comma list of protocols.config.RUNTIMES (default product,fss)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "dealer_material.json")
    args = parser.parse_args(argv)
    from protocols.config import RUNTIMES

    runtimes = [r for r in args.runtimes.split(",") if r]
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        parser.error(f"unknown runtime {bad[0]!r}; choose from {', '.join(RUNTIMES)}")
    models = tuple(m for m in args.models.split(",") if m)
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(ALL_MODELS)}")
    entries = [{"label": e.label, "spec": e.spec.to_dict()}
               for e in resolve_entries(BenchSettings(models=models, archs=(args.arch,)))]
    t0 = time.perf_counter()
    results = run_two_party(_party, entries, runtimes, new_key(), timeout=1800)[0]
    doc = {"command": "python -m benchmarks.dealer_material " + " ".join(argv if argv is not None else sys.argv[1:]),
           "arch": args.arch, "runtimes": runtimes, "results": results, "wall_seconds": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
