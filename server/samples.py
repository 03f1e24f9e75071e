"""The demo page's bundled real test images: writes ``server/static/samples/*.png`` + ``index.json``.

Run once (``python -m server.samples``); the PNGs are committed. Digits come
from sklearn's ``load_digits`` test split (8x8, gray), Fashion-MNIST from
Debian's ``dataset-fashion-mnist`` test split (28x28, gray) when installed.
Pixels are stored exactly as the datasets hold them (scaled to 0..255).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from mpcvit.data import DatasetMissingError, dataset_info, load_dataset

log = logging.getLogger(__name__)
SAMPLES_DIR = Path(__file__).resolve().parent / "static" / "samples"


def _write(out: Path, dataset: str, per_class: dict[int, int]) -> list[dict[str, object]]:
    x, y = load_dataset(dataset, "test").tensors
    classes = dataset_info(dataset).class_names
    written = []
    for label, count in per_class.items():
        idx = (y == label).nonzero().flatten()[:count]
        for i in idx.tolist():
            pixels = np.round(x[i, 0].numpy() * 255).astype(np.uint8)
            name = f"{dataset}_{i:05d}_{label}.png"
            Image.fromarray(pixels, mode="L").save(out / name)
            written.append({"file": name, "dataset": dataset, "label": int(label), "class_name": classes[label], "test_index": int(i)})
    return written


def write_samples(out: Path = SAMPLES_DIR) -> list[dict[str, object]]:
    out.mkdir(parents=True, exist_ok=True)
    manifest = _write(out, "digits", {0: 1, 2: 1, 3: 1, 5: 1, 7: 1, 9: 1})
    try:
        manifest += _write(out, "fashion-mnist", {label: 1 for label in range(10)})  # one per class
    except DatasetMissingError as exc:
        log.warning("no Fashion-MNIST samples: %s", exc)
    (out / "index.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for m in write_samples():
        log.info("%s", m)
