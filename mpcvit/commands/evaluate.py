"""``mpcvit eval``: plaintext top-1 accuracy of a checkpoint on a dataset's test split."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mpcvit.checkpoint import checkpoint_label, load_checkpoint
from mpcvit.data import DATASETS

HELP = "plaintext accuracy of a checkpoint"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    parser.add_argument("--dataset", choices=DATASETS, help="dataset (default: the one in the checkpoint's meta.json)")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--data-dir", help="dataset directory (required for cifar10)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, help="torch threads (default: $MPCVIT_THREADS or all CPUs allowed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")


def run(args: argparse.Namespace) -> int:
    from mpcvit.data import dataset_info, load_dataset
    from mpcvit.train import configure_threads, evaluate_dataset

    if args.batch_size <= 0:
        raise ValueError("--batch-size must be positive")
    configure_threads(args.threads)
    model, meta = load_checkpoint(args.checkpoint)
    name = args.dataset or meta.get("dataset")
    if not name:
        raise ValueError(f"{args.checkpoint} names no dataset; pass --dataset")
    split = "test" if name == "cifar10-samples" else args.split
    info = dataset_info(name, args.data_dir)
    if info.input_shape != model.spec.input_shape or info.num_classes != model.spec.num_classes:
        raise ValueError(
            f"checkpoint takes {model.spec.input_shape} -> {model.spec.num_classes} classes, "
            f"{name} is {info.input_shape} -> {info.num_classes} classes"
        )
    data = load_dataset(name, split, args.data_dir)
    normalisation = meta.get("normalisation") or info.normalisation()
    accuracy = evaluate_dataset(model, data, normalisation, args.batch_size)
    result = {
        "checkpoint": str(args.checkpoint), "name": Path(args.checkpoint).resolve().name,
        "model": meta.get("model", model.spec.name), "dataset": name,
        "split": split, "images": len(data), "accuracy": round(accuracy, 6),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{checkpoint_label(args.checkpoint, meta)} on {name} ({split}, {len(data)} images): accuracy {100 * accuracy:.2f}%")
    return 0
