"""``mpcvit eval-private``: secure 2PC inference in-process on N test images (two party processes, gloo).

The images are a dataset's test split (``--dataset``, default the checkpoint's
``meta["dataset"]``) or a folder of image files (``--images DIR``: PNG / JPEG,
resized to the model's input, no labels: agreement only), which is how an
imported ImageNet model is checked on a few of the owner's images.

Prints plaintext and private accuracy, top-1 agreement, the largest logit
error, and the online costs (rounds, bytes, seconds, per op kind and per
layer) of party 0. ``--provider tfp`` uses CrypTen's trusted first party
(comparisons with published numbers only; the output says so).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

HELP = "secure 2PC inference in-process: accuracy, agreement, costs"
RUNTIMES = ("fss", "product", "spline", "fss1", "circuits")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors, arch.json, meta.json)")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the checkpoint's meta['dataset'])")
    parser.add_argument("--data-dir", default=None, help="directory of datasets that need one (cifar10)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="a folder of image files (PNG / JPEG) instead of a dataset: agreement with the plaintext model only")
    parser.add_argument("--limit", type=int, default=32, help="number of test images (default 32)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per secure forward (default 8; a larger batch may push the biggest comparisons "
                        "over fss_max_values, and those then run on the ring circuits, not as a single image is served)")
    parser.add_argument("--provider", choices=("dealer", "tfp"), default="dealer", help="correlated randomness (default dealer)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="fss",
                        help="fss: the default runtime, SecureConfig(); product: the same with the ReLU-softmax heads on the one-round "
                        "product gate; spline: that with the spline GeLU on every layer; fss1: the runtime before the whole-cost work, "
                        "SecureConfig.fss1(); circuits: the small-ring comparison circuits, SecureConfig.circuits()")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the two-party run is abandoned")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def image_folder(folder: str | Path, input_shape: tuple[int, int, int], limit: int) -> torch.Tensor:
    """Up to ``limit`` image files of ``folder`` (sorted by name) as model inputs in [0, 1], (B, C, H, W)."""
    from mpcvit.client import ImageError, preprocess

    d = Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"image folder {d} does not exist")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"{d} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    try:
        return torch.stack([preprocess(p, input_shape) for p in files])
    except ImageError as exc:
        raise ValueError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from mpcvit.checkpoint import checkpoint_label, load_checkpoint
    from mpcvit.data import load_dataset
    from mpcvit.units import format_bytes
    from protocols.config import runtime_config
    from protocols.evaluate import evaluate_private

    if args.limit < 1:
        raise ValueError("--limit must be >= 1")
    model, meta = load_checkpoint(args.checkpoint)
    labels: torch.Tensor | None
    if args.images:
        dataset = str(args.images)
        images, labels = image_folder(args.images, model.spec.input_shape, args.limit), None
    else:
        dataset = args.dataset or meta.get("dataset")
        if not dataset:
            raise ValueError("the checkpoint names no dataset; pass --dataset or --images DIR")
        kwargs = {"data_dir": args.data_dir} if args.data_dir else {}
        images, labels = load_dataset(dataset, "test", **kwargs).tensors
        images, labels = images[: args.limit], labels[: args.limit]
    config = runtime_config(args.runtime, provider=args.provider)
    result = evaluate_private(model, meta, images, labels, batch_size=args.batch_size, config=config,
                              timeout=args.timeout)
    result["checkpoint"] = str(args.checkpoint)
    result["name"] = Path(args.checkpoint).resolve().name
    result["dataset"] = dataset
    result["runtime"] = args.runtime
    if args.provider == "tfp":
        result["note"] = "provider tfp: party 0 generated all correlated randomness (comparison only, not secure against party 0)"
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{checkpoint_label(args.checkpoint, meta)} on {dataset}: {result['images']} images, provider {result['provider']}, "
              f"runtime {args.runtime}")
        accuracy = ("" if labels is None else
                    f"plaintext accuracy {result['plaintext_accuracy']:.4f}, private accuracy {result['private_accuracy']:.4f}, ")
        print(f"  {accuracy}agreement {result['agreement']:.4f}, max |logit error| {result['max_abs_logit_error']:.4f}")
        if result.get("gate_fallbacks"):
            print(f"  note: at batch {result['batch_size']}, {result['gate_fallbacks']} comparison call(s) had more than "
                  "fss_max_values values and ran on the ring circuits instead of the DCF gate; a smaller --batch-size "
                  "measures the runtime as it serves one image")
        pb = result["per_batch"]
        print(f"  one forward of {pb['batch_size']} image(s): {pb['rounds']} rounds, {format_bytes(pb['bytes'])}, {pb['seconds']:.2f} s")
        for op, c in sorted(result["per_op"].items(), key=lambda kv: -kv[1]["rounds"]):
            print(f"    {op:<22} {c['rounds']:>6} rounds {format_bytes(c['bytes'], digits=2):>10} {c['seconds']:>8.2f} s")
    return 0
