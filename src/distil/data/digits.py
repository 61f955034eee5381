"""scikit-learn's bundled 8x8 handwritten digits: always available, tiny, ideal for tests and demos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from distil.data.raw import RawDataset, split_off_test
from distil.data.registry import DATASETS


@DATASETS.register("digits")
def read_digits(root: Path | None = None) -> RawDataset:
    """Read `sklearn.datasets.load_digits` (1797 images, 1x8x8, 10 classes), pixels scaled to [0, 1].

    The dataset has no test split, so a stratified 20% (seed 0) is held out as test.

    Args:
        root: ignored; the data ships inside scikit-learn.
    """
    images, target = _load_digits_arrays()
    x = torch.from_numpy(images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0)
    y = torch.from_numpy(target.astype(np.int64))
    x_train, y_train, x_test, y_test = split_off_test(x, y)
    return RawDataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=[str(i) for i in range(10)],
        augment="none",
        source="scikit-learn load_digits",
    )


def _load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 64) pixels and (1797,) targets of `load_digits`.

    Importing scikit-learn costs seconds, so the CSV it bundles is read directly when it is where
    `load_digits` reads it from; otherwise `load_digits` itself is called.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for base in locations:
        csv = Path(base) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data, data.target
