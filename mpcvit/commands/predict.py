"""``mpcvit predict IMAGE --checkpoint DIR [--json]``: the plaintext class of one image, locally.

The checkpoint runs in the clear on this machine (no parties, no
coordinator): what the model owner would answer, and what a private
``mpcvit classify`` of the same image should agree with (``mpcvit classify
--compare-plaintext DIR`` prints both). The image goes through the same
preprocessing as the private client (``mpcvit.client.preprocess``: grayscale
or RGB as the model takes, resized to its input) and the checkpoint's input
normalisation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "the plaintext class of one image from a local checkpoint (no MPC)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="PNG or JPEG file")
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory (model.safetensors, arch.json, meta.json)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--top", type=int, default=3, help="how many classes to list (default 3)")


def predict(image: Any, checkpoint: str | Path) -> dict[str, Any]:
    """The plaintext model's answer for one image: checkpoint, model, class index and name, logits, probabilities."""
    import torch

    from mpcvit.checkpoint import checkpoint_label, class_names, load_checkpoint, normalise_input
    from mpcvit.client import preprocess

    net, meta = load_checkpoint(checkpoint)
    x = preprocess(image, net.spec.input_shape)[None]
    with torch.no_grad():
        logits = net(normalise_input(x, meta))[0].double()
    probabilities = torch.softmax(logits, dim=-1)
    index = int(logits.argmax())
    names = class_names(meta)
    return {
        "checkpoint": str(checkpoint), "name": Path(checkpoint).resolve().name, "label": checkpoint_label(checkpoint, meta),
        "model": meta.get("model", net.spec.name), "class_index": index,
        "class_name": names[index] if names and index < len(names) else str(index),
        "logits": [float(v) for v in logits], "probabilities": [float(v) for v in probabilities],
    }


def describe(result: dict[str, Any], top: int) -> list[str]:
    """The text lines of a result (class line, then the top classes)."""
    probs = result["probabilities"]
    k = result["class_index"]
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])[: max(1, top)]
    return [
        f"class: {result['class_name']} (index {k}, p={probs[k]:.3f}) checkpoint {result['label']}, plaintext on this machine",
        "top: " + ", ".join(f"{i}:{probs[i]:.3f}" for i in ranked),
    ]


def run(args: argparse.Namespace) -> int:
    result = predict(args.image, args.checkpoint)  # a bad image or checkpoint: ValueError, one line from the CLI
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(describe(result, args.top)))
    return 0
