"""Loaders: shapes, ranges, labels, fixed splits, normalisation, and clear errors when data is missing."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mpcvit import data
from mpcvit.data import DatasetMissingError, dataset_info, load_dataset, read_idx

HAVE_FASHION = data.FASHION_MNIST_DIR.is_dir()
HAVE_WHEEL = data.FOOLBOX_WHEEL.is_file()


def test_digits_fixed_stratified_split() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    (xtr, ytr), (xte, yte) = train.tensors, test.tensors
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    assert sorted(set(ytr.tolist())) == list(range(10))
    assert yte.bincount().min() >= 35  # stratified: every class ~20%
    # the split never changes: these are the first test labels of the fixed split
    assert yte[:10].tolist() == [1, 4, 8, 6, 5, 9, 9, 1, 3, 2]
    # and the two splits are disjoint images of sklearn's set
    from sklearn.datasets import load_digits

    all_x = torch.from_numpy(load_digits().images / 16.0).float()
    assert torch.equal(xte[0, 0], all_x[int((all_x - xte[0, 0]).abs().sum((1, 2)).argmin())])


def test_dataset_info_normalisation_from_train_split() -> None:
    info = dataset_info("digits")
    x = load_dataset("digits", "train").tensors[0]
    assert info.input_shape == (1, 8, 8) and info.num_classes == 10
    assert info.mean[0] == pytest.approx(float(x.mean()), abs=1e-5)
    assert info.std[0] == pytest.approx(float(x.std()), abs=1e-5)
    assert info.normalisation() == {"mean": list(info.mean), "std": list(info.std)}
    assert dataset_info("cifar10-samples").input_shape == (3, 32, 32)


def test_bad_names_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="only a 'test' split"):
        load_dataset("cifar10-samples", "train")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_and_fashion_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, prefix, n in (("train", "train", 6), ("test", "t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    x, y = load_dataset("fashion-mnist", "test", tmp_path).tensors
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [0, 1, 2, 3]
    raw = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert torch.allclose(x[:, 0], torch.from_numpy(raw / 255.0).float())


def test_missing_fashion_mnist_says_make(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="make fashion-mnist"):
        load_dataset("fashion-mnist", "train", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test", tmp_path)  # directory exists, files do not


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian's dataset-fashion-mnist is not installed (make fashion-mnist)")
def test_fashion_mnist_real_files() -> None:
    x, y = load_dataset("fashion-mnist", "test").tensors
    assert x.shape == (10_000, 1, 28, 28) and y.bincount().tolist() == [1000] * 10
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y[:5].tolist() == [9, 2, 1, 1, 6]  # the published first test labels


def test_cifar10_pickle_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 3) for i in range(1, 6)] + [("test_batch", 2)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    x, y = load_dataset("cifar10", "train", tmp_path).tensors
    assert x.shape == (15, 3, 32, 32) and y.tolist() == [0, 1, 2] * 5
    assert dataset_info("cifar10", tmp_path).mean == pytest.approx(tuple(x.mean((0, 2, 3)).tolist()), abs=1e-5)


def test_missing_cifar10_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="--data-dir"):
        load_dataset("cifar10", "train")
    with pytest.raises(DatasetMissingError, match="test_batch"):
        load_dataset("cifar10", "test", tmp_path)


@pytest.mark.skipif(not HAVE_WHEEL, reason="foolbox wheel not downloaded (make venv)")
def test_cifar10_samples_from_wheel() -> None:
    x, y = load_dataset("cifar10-samples", "test").tensors
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # the first CIFAR-10 test images are a cat, two ships, an airplane, two frogs, ...
    assert y[:6].tolist() == [3, 8, 8, 0, 6, 6]


def test_missing_wheel_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="pip download --no-deps"):
        load_dataset("cifar10-samples", "test", tmp_path / "foolbox-3.3.4-py3-none-any.whl")
