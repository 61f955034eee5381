from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.errors import DataError


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_nhwc_uint8_with_test_and_names(tmp_path: Path) -> None:
    x = np.full((10, 5, 7, 3), 255, np.uint8)
    x[:, :, :, 1] = 0
    path = _save(
        tmp_path / "d.npz",
        x=x,
        y=np.arange(10) % 2,
        x_test=x[:4],
        y_test=np.array([0, 1, 0, 1]),
        class_names=np.array(["cat", "dog"]),
    )
    b = load_dataset("npz", path, val_fraction=0.0)
    assert b.input_shape == (3, 5, 7)
    assert b.class_names == ["cat", "dog"]
    assert b.mean == pytest.approx((1.0, 0.0, 1.0))  # uint8 scaled to [0, 1], channel order kept
    assert len(b.test) == 4 and b.source == str(path)


def test_nhw_gets_channel_and_float_kept(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, (30, 4, 4)).astype(np.float32)
    b = load_dataset("npz", _save(tmp_path / "d.npz", x=x, y=np.arange(30) % 3), val_fraction=0.0)
    assert b.input_shape == (1, 4, 4)
    assert b.mean[0] == pytest.approx(float(x.mean()), rel=1e-4)  # float pixels are not rescaled
    assert len(b.test) == 0 and b.num_classes == 3
    assert torch.isfinite(b.train.x).all()


def test_missing_keys_listed(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", images=np.zeros((2, 3, 3)), labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"lacks array\(s\) \['x', 'y'\]; found keys \['images', 'labels'\]"):
        load_dataset("npz", path)


def test_object_arrays_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x=np.zeros((2, 3, 3)), y=np.array([0, None], dtype=object))
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", path)


def test_missing_file_and_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", tmp_path / "nope.npz")
    with pytest.raises(DataError, match="needs the file path"):
        load_dataset("npz")


def test_labels_out_of_range_say_how_to_fix_the_npz_file(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "d.npz", x=np.zeros((6, 4, 4), np.uint8), y=np.arange(6), class_names=np.array(["a", "b"])
    )
    with pytest.raises(DataError, match="Save a class_names array covering every label"):
        load_dataset("npz", path)
