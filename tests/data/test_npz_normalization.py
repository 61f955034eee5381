"""An npz file's own mean/std: the normalization its inputs expect (e.g. a synthetic transfer set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.errors import DataError


def test_recorded_mean_std_are_used_instead_of_the_train_statistics(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x, y_test=y, mean=np.array([0.25]), std=np.array([2.0]))
    bundle = load_dataset("npz", tmp_path / "d.npz", val_fraction=0.0)
    assert bundle.mean == (0.25,) and bundle.std == (2.0,)
    torch.testing.assert_close(bundle.train.x, (torch.from_numpy(x) - 0.25) / 2.0)  # type: ignore[attr-defined]


def test_npz_mean_std_must_come_together_and_fit_the_channels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10) % 2
    np.savez(tmp_path / "one.npz", x=x, y=y, x_test=x, y_test=y, mean=np.array([0.5]))
    with pytest.raises(DataError, match="only one of mean / std"):
        load_dataset("npz", tmp_path / "one.npz")
    np.savez(
        tmp_path / "two.npz",
        x=x,
        y=y,
        x_test=x,
        y_test=y,
        mean=np.array([0.5, 0.5]),
        std=np.array([1.0, 1.0]),
    )
    with pytest.raises(DataError, match="1 channel"):
        load_dataset("npz", tmp_path / "two.npz")
    np.savez(tmp_path / "zero.npz", x=x, y=y, x_test=x, y_test=y, mean=np.array([0.5]), std=np.array([0.0]))
    with pytest.raises(DataError, match="std > 0"):
        load_dataset("npz", tmp_path / "zero.npz")


def test_recorded_mean_std_with_normalize_none_is_refused_naming_the_file(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x, y_test=y, mean=np.array([0.25]), std=np.array([2.0]))
    with pytest.raises(DataError, match=r"d\.npz records .*drop data\.normalize or set it to auto"):
        load_dataset("npz", tmp_path / "d.npz", options={"normalize": "none"})
