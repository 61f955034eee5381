from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.data.idx import FASHION_MNIST_ROOT, IMAGES_MAGIC, LABELS_MAGIC, read_idx
from distil.errors import DataError


def _idx_bytes(array: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    dims = dims if dims is not None else array.shape
    magic = magic if magic is not None else 0x0800 | array.ndim
    return struct.pack(f">I{len(dims)}I", magic, *dims) + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _make_dir(root: Path, gz: bool = True, n_train: int = 20, n_test: int = 10) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.broadcast_to((labels * 25)[:, None, None], (n, 6, 5))
        _write(root / f"{prefix}-images-idx3-ubyte{ext}", _idx_bytes(images))
        _write(root / f"{prefix}-labels-idx1-ubyte{ext}", _idx_bytes(labels))
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_reads_tiny_idx_dir(tmp_path: Path, gz: bool) -> None:
    root = _make_dir(tmp_path / "d", gz=gz)
    b = load_dataset("mnist", root, val_fraction=0.0)
    assert b.input_shape == (1, 6, 5)
    assert (len(b.train), len(b.test)) == (20, 10)
    assert b.train.y.tolist() == [i % 10 for i in range(20)]
    # Pixel value = 25 * label, scaled to [0, 1], then normalized: brighter images for larger labels.
    raw = b.train.x * b.std[0] + b.mean[0]
    assert torch.allclose(raw[:, 0, 0, 0], b.train.y.float() * 25 / 255, atol=1e-5)
    assert b.augment == "crop" and b.crop_padding == 2 and b.class_names[3] == "3"


def test_kmnist_and_fashion_metadata(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "d")
    k = load_dataset("kmnist", root, val_fraction=0.0)
    f = load_dataset("fashion-mnist", root, val_fraction=0.0)
    assert k.class_names[:4] == ["o", "ki", "su", "tsu"] and k.augment == "crop"
    assert f.class_names[0] == "T-shirt/top" and f.class_names[9] == "Ankle boot"
    assert f.augment == "crop_flip" and f.crop_padding == 2


def test_truncated_gzip(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "d")
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte\.gz is corrupt or truncated.*re-download or reinstall"
    ):
        load_dataset("mnist", root)


def test_truncated_raw(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "d", gz=False)
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"declares 300 data bytes but the file holds 293"):
        load_dataset("mnist", root)


def test_wrong_magic(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.gz", _idx_bytes(np.zeros(4), magic=0x0801))
    with pytest.raises(DataError, match=r"magic 0x00000801, expected 0x00000803"):
        read_idx(path, IMAGES_MAGIC)
    assert read_idx(path, LABELS_MAGIC).shape == (4,)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_huge_header_is_rejected_without_allocating(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"x{suffix}", _idx_bytes(np.zeros((2, 28, 28)), dims=(10**9, 28, 28)))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="header declares 784000000000 data bytes"):
            read_idx(path, IMAGES_MAGIC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dims", [(0, 2**32 - 1, 2**32 - 1), (1, 2**20, 2**20)])
def test_empty_or_absurd_item_shape_is_a_data_error(tmp_path: Path, suffix: str, dims) -> None:
    # Found by hypothesis: zero items with huge per-item dims reached numpy's "array is too big".
    path = _write(tmp_path / f"x{suffix}", _idx_bytes(np.zeros((0,)), magic=IMAGES_MAGIC, dims=dims))
    with pytest.raises(DataError, match="header declares dims"):
        read_idx(path, IMAGES_MAGIC)


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "d")
    _write(root / "train-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(19)))
    with pytest.raises(DataError, match=r"holds 20 images but .* holds 19 labels"):
        load_dataset("mnist", root)


def test_missing_dir_message(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"does not exist; for fashion-mnist: `apt-get install dataset-fashion-mnist`"
    ):
        load_dataset("fashion-mnist", tmp_path / "nope")
    with pytest.raises(DataError, match="no default location"):
        load_dataset("mnist")


def test_missing_file_lists_found(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "d")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte \(or .*\.gz\); found: t10k-images"):
        load_dataset("mnist", root)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_ROOT.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    b = load_dataset("fashion-mnist")
    assert (len(b.train) + len(b.val), len(b.test)) == (60000, 10000)
    assert b.input_shape == (1, 28, 28)
    assert b.mean[0] == pytest.approx(0.286, abs=0.002) and b.std[0] == pytest.approx(0.353, abs=0.002)
    assert torch.bincount(b.test.y).tolist() == [1000] * 10


def test_labels_out_of_range_in_a_builtin_dataset_do_not_suggest_class_names(tmp_path: Path) -> None:
    # An IDX user cannot pass class_names: the fix is the right (or an undamaged) data directory.
    root = _make_dir(tmp_path / "d")
    _write(root / "train-labels-idx1-ubyte.gz", _idx_bytes(np.arange(20) % 10 + 3))
    with pytest.raises(DataError, match="labels range over") as info:
        load_dataset("mnist", root)
    assert "class_names" not in str(info.value)
    assert "are fixed" in str(info.value)
