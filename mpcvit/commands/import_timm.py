"""``mpcvit import``: a timm Vision Transformer (its weights file, or a randomly initialised one) -> a checkpoint.

The checkpoint (arch.json + model.safetensors + meta.json) runs wherever a
trained one does: ``eval``, ``eval-private``, the parties and the REST
service, ``bench --checkpoint``. meta.json records the input normalisation
(from ``--mean`` / ``--std``, else the timm preset's), the class names
(``--classes``) and where the weights came from (name, file, SHA-256).
What the project's ViT family cannot represent is refused with the reason.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

HELP = "import a timm Vision Transformer (weights file or random init) as a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timm", dest="name", default="", metavar="NAME",
                        help="timm model name, e.g. vit_base_patch16_224, deit_tiny_patch16_224 (architecture and normalisation)")
    parser.add_argument("--weights", default=None, metavar="FILE", help="the model's weights: .safetensors or a torch state-dict file")
    parser.add_argument("--random-init", action="store_true",
                        help="no weights: a randomly initialised timm model (needs timm; for cost benchmarks and tests)")
    parser.add_argument("--timm-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a timm create_model argument (repeatable; VALUE as JSON), e.g. img_size=32 patch_size=4 num_classes=10")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads, when the name is not a known preset")
    parser.add_argument("--pool", choices=("token", "avg"), default=None, help="timm's global_pool (default: read from the weights)")
    parser.add_argument("--mean", type=float, nargs="+", default=None, help="input normalisation mean per channel")
    parser.add_argument("--std", type=float, nargs="+", default=None, help="input normalisation std per channel")
    parser.add_argument("--classes", default=None, metavar="FILE", help="class names: a JSON list, or one name per line")
    parser.add_argument("--dataset", default=None, help="the dataset name eval / eval-private read (e.g. cifar10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")


def _timm_args(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--timm-arg {item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _class_names(path: str | None) -> list[str] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"class-names file {p} does not exist")
    text = p.read_text()
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{p}: a JSON class-names file must hold a list of strings")
    return names


def run(args: argparse.Namespace) -> int:
    import torch

    from mpcvit.checkpoint import save_checkpoint
    from mpcvit.timm_import import build_timm, file_digest, import_timm_model, import_timm_weights, load_state_file

    if (args.weights is None) == (not args.random_init):
        raise ValueError("give exactly one of --weights FILE and --random-init")
    if args.random_init and not args.name:
        raise ValueError("--random-init needs --timm NAME")
    classes = _class_names(args.classes)
    extra = _timm_args(args.timm_arg)
    source: dict[str, Any] = {"from": "timm", "name": args.name or None}
    if args.random_init:
        torch.manual_seed(args.seed)
        imported = import_timm_model(build_timm(args.name, **extra), args.name, classes, args.mean, args.std)
        source["weights"] = f"random init, seed {args.seed}"
    else:
        state = load_state_file(args.weights)
        if extra:  # an explicit timm configuration: build it, load the weights into it, read it
            model = build_timm(args.name, **extra)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ValueError(f"the weights do not fit timm's {args.name} with {extra}: {str(exc).splitlines()[0]}") from exc
            imported = import_timm_model(model, args.name, classes, args.mean, args.std)
        else:
            imported = import_timm_weights(state, args.name, args.num_heads, args.pool, classes, args.mean, args.std)
        source.update(weights=Path(args.weights).name, sha256=file_digest(args.weights))
    if extra:
        source["timm_args"] = extra
    meta = imported.meta
    meta["imported"] = source
    if args.dataset:
        meta["dataset"] = args.dataset
    argv = sys.argv[1:]
    meta["command"] = "mpcvit " + shlex.join(argv[argv.index("import"):]) if "import" in argv else None
    save_checkpoint(args.out, imported.model, meta)
    spec = imported.model.spec
    print(f"{args.name or 'timm ViT'} -> {args.out}: {spec.summary()}; {meta['parameters']:,} parameters")
    return 0
