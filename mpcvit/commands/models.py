"""``mpcvit models``: the registered presets as a table (name, variant, shape, parameters)."""

from __future__ import annotations

import argparse
import json

HELP = "list the registered model presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def model_rows() -> list[dict[str, object]]:
    """One row per registered model: name, variant and its description, input shape, tokens, parameters."""
    import torch

    from mpcvit.models import create_model, list_models
    from mpcvit.models.registry import VARIANT_DOCS, parse_name

    rows: list[dict[str, object]] = []
    for name in list_models():
        variant, _ = parse_name(name)
        with torch.device("meta"):  # shapes only: no memory, no weight initialisation
            model = create_model(name)
        spec = model.spec
        rows.append({
            "name": name,
            "variant": variant,
            "description": VARIANT_DOCS.get(variant, ""),
            "input": "x".join(map(str, (spec.img_size, spec.img_size, spec.in_chans))),
            "shape": f"depth {spec.depth}, {spec.num_heads} heads, dim {spec.embed_dim}, mlp {spec.mlp_dim}",
            "tokens": spec.num_tokens,
            "parameters": sum(p.numel() for p in model.parameters()),
        })
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    cols = ("name", "input", "tokens", "shape", "parameters", "description")
    cells = [[f"{r[c]:,}" if c == "parameters" else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    right = {"tokens", "parameters"}

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(values, widths, cols)).rstrip()

    return "\n".join([line(list(cols)), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def run(args: argparse.Namespace) -> int:
    rows = model_rows()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
