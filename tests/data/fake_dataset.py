"""User-style dataset callables, loaded by tests as 'tests.data.fake_dataset:NAME'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distil.data import DataBundle, Split


def tiny_arrays(root: Path | None = None) -> dict[str, object]:
    """40 train / 10 test uint8 NHWC images, 4 classes; the class is encoded in the mean brightness."""
    rng = np.random.default_rng(0)
    y_train = np.arange(40) % 4
    y_test = np.arange(10) % 4
    x_train = (rng.integers(0, 50, (40, 6, 6, 3)) + 50 * y_train[:, None, None, None]).astype(np.uint8)
    x_test = (rng.integers(0, 50, (10, 6, 6, 3)) + 50 * y_test[:, None, None, None]).astype(np.uint8)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": torch.from_numpy(x_test),
        "y_test": y_test,
        "class_names": ["a", "b", "c", "d"],
    }


def tiny_bundle() -> DataBundle:
    """A ready-made bundle (used as is by load_dataset)."""
    x = torch.randn(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 2
    return DataBundle(
        "mine", Split(x, y), Split(x[:0], y[:0]), Split(x[:4], y[:4]), ["no", "yes"], (0.0,), (1.0,)
    )


def nan_pixels() -> dict[str, object]:
    """Valid shapes, but one NaN pixel in the test split."""
    x = np.zeros((8, 4, 4), np.float32)
    xt = x.copy()
    xt[2, 1, 1] = np.nan
    return {"x_train": x, "y_train": np.arange(8) % 2, "x_test": xt, "y_test": np.arange(8) % 2}


def bad_labels() -> dict[str, object]:
    """Labels 0..4 but only 2 class names."""
    x = np.zeros((5, 4, 4), np.uint8)
    return {
        "x_train": x,
        "y_train": np.arange(5),
        "x_test": x,
        "y_test": np.arange(5) % 2,
        "class_names": ["a", "b"],
    }


def not_data() -> str:
    """Returns the wrong type."""
    return "oops"
