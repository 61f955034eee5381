from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from distil.data import load_dataset
from distil.data.cifar import load_batch
from distil.errors import DataError


def _batch(n: int, offset: int, label_key: str, num_classes: int) -> dict[str, object]:
    labels = [(offset + i) % num_classes for i in range(n)]
    data = np.zeros((n, 3072), np.uint8)
    data[:, :1024] = 255  # red plane full, green and blue empty: checks the channel-major layout
    return {
        "batch_label": "fake",
        label_key: labels,
        "data": data,
        "filenames": [f"{i}.png" for i in range(n)],
    }


def _dump(obj: object, path: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _cifar10(root: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    root.mkdir()
    for i in range(1, 6):
        _dump(_batch(4, i, "labels", 10), root / f"data_batch_{i}", protocol)
    _dump(_batch(5, 0, "labels", 10), root / "test_batch", protocol)
    _dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, root / "batches.meta", protocol)
    return root


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_fake_batches(tmp_path: Path, protocol: int) -> None:
    b = load_dataset("cifar10", _cifar10(tmp_path / "c", protocol), val_fraction=0.0)
    assert (len(b.train), len(b.test)) == (20, 5)
    assert b.input_shape == (3, 32, 32)
    assert b.class_names[2] == "c2" and b.augment == "crop_flip" and b.crop_padding == 4
    assert b.mean == pytest.approx((1.0, 0.0, 0.0))  # red plane first => NCHW reshape is right
    assert sorted(b.train.y.tolist()) == sorted((o + i) % 10 for o in range(1, 6) for i in range(4))


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "c100"
    root.mkdir()
    _dump(_batch(30, 0, "fine_labels", 100) | {"coarse_labels": [0] * 30}, root / "train")
    _dump(_batch(6, 50, "fine_labels", 100), root / "test")
    _dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["x"]}, root / "meta")
    b = load_dataset("cifar100", root, val_fraction=0.0)
    assert b.num_classes == 100 and b.class_names[99] == "f99"
    assert b.test.y.tolist() == [50, 51, 52, 53, 54, 55]


def test_bytes_keys_are_decoded(tmp_path: Path) -> None:
    path = tmp_path / "b"
    _dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]}, path)
    assert set(load_batch(path)) == {"data", "labels"}


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_and_not_executed(tmp_path: Path) -> None:
    root = _cifar10(tmp_path / "c")
    marker = tmp_path / "hacked"
    _dump({"data": _Evil(marker), "labels": [0]}, root / "data_batch_3")
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system from .*data_batch_3"):
        load_dataset("cifar10", root)
    assert not marker.exists()


def test_corrupt_and_missing_batches(tmp_path: Path) -> None:
    root = _cifar10(tmp_path / "c")
    (root / "test_batch").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match=r"cannot read CIFAR batch .*test_batch"):
        load_dataset("cifar10", root)
    (root / "test_batch").unlink()
    with pytest.raises(DataError, match=r"missing CIFAR batch .*test_batch; found: batches.meta"):
        load_dataset("cifar10", root)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nope")


def test_wrong_data_shape(tmp_path: Path) -> None:
    root = _cifar10(tmp_path / "c")
    _dump({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, root / "data_batch_1")
    with pytest.raises(DataError, match=r"expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", root)


@pytest.mark.parametrize(
    ("name", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_parent_of_the_batches_folder_says_which_folder_to_use(
    tmp_path: Path, name: str, folder: str
) -> None:
    (tmp_path / folder).mkdir()
    with pytest.raises(DataError, match=f"use {tmp_path / folder} "):
        load_dataset(name, tmp_path)
