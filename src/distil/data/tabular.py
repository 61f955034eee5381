"""scikit-learn's bundled tabular sets, breast-cancer and wine: real feature-vector data, always at hand.

Samples are (F,) feature vectors (30 and 13 measurements), normalized per feature by `load_dataset`;
there is nothing to augment, so their augmentation is "none". Use them with a model for (N, F) inputs
such as `mlp` (see the `tabular-wine` recipe).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from distil.data.raw import RawDataset, split_off_test
from distil.data.registry import DATASETS

# registry name -> (CSV file scikit-learn bundles, the sklearn.datasets loader that reads it)
_FILES = {
    "breast-cancer": ("breast_cancer.csv", "load_breast_cancer"),
    "wine": ("wine_data.csv", "load_wine"),
}


def _read_sklearn_csv(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, F) features, (N,) targets and class names of one of scikit-learn's bundled tabular CSVs.

    Importing scikit-learn costs seconds, so the CSV is read directly where its loader reads it from
    (first line: n_samples, n_features, class names...; then one row of features + target per sample);
    otherwise the loader itself is called.
    """
    filename, loader = _FILES[name]
    spec = importlib.util.find_spec("sklearn")
    for base in list(spec.submodule_search_locations or []) if spec is not None else []:
        csv = Path(base) / "datasets" / "data" / filename
        if csv.is_file():
            with csv.open(encoding="utf-8") as f:
                header = f.readline().strip().split(",")
                table = np.loadtxt(f, delimiter=",", ndmin=2)
            return table[:, :-1], table[:, -1].astype(np.int64), header[2:]
    import sklearn.datasets

    data = getattr(sklearn.datasets, loader)()
    return data.data, data.target, [str(c) for c in data.target_names]


def _reader(name: str, description: str) -> None:
    def read(root: Path | None = None) -> RawDataset:
        del root  # the data ships inside scikit-learn
        features, target, class_names = _read_sklearn_csv(name)
        x = torch.from_numpy(features.astype(np.float32))
        y = torch.from_numpy(target)
        x_train, y_train, x_test, y_test = split_off_test(x, y)
        return RawDataset(
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            class_names=class_names,
            augment="none",
            source=f"scikit-learn {_FILES[name][1]}",
        )

    read.__doc__ = (
        f"Read {description} from scikit-learn. It has no test split, so a stratified 20% (seed 0) is "
        "held out as test. `root` is ignored."
    )
    DATASETS.register(name)(read)


_reader("breast-cancer", "the Wisconsin breast-cancer set (569 samples, 30 features, 2 classes)")
_reader("wine", "the UCI wine set (178 samples, 13 features, 3 classes)")
