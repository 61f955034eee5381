"""CIFAR-10 / CIFAR-100 "python version" batches, read with an unpickler that refuses code.

The batches are pickles, and `pickle.load` on a file can run arbitrary code. `SafeUnpickler` only
resolves the few numpy globals that rebuild a plain ndarray; every other global is refused.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.data.raw import RawDataset
from distil.data.registry import DATASETS
from distil.errors import DataError

# (module, name) -> (module to import under numpy 2, fallback module under numpy 1).
_ALLOWED: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    # Protocol 5 pickles (Python 3.14's default) rebuild arrays from a byte buffer.
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy", "ndarray"): ("numpy", "numpy"),
    ("numpy", "dtype"): ("numpy", "numpy"),
    # Protocol 2 pickles written by Python 3 encode bytes as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): ("_codecs", "_codecs"),
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data-only pickles: dicts, lists, bytes, str, numbers and numpy arrays.

    Args:
        file: the open binary stream.
        path: the file's path, named in refusals.
    """

    def __init__(self, file: Any, path: Path) -> None:
        # latin1 maps Python 2 byte strings (the original CIFAR batches) one-to-one, as numpy needs.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._path}: CIFAR batches hold only dicts, "
                "bytes, lists and numpy arrays, so this file is not a genuine batch (it could run code). "
                "Re-download the dataset from its official source."
            )
        try:
            mod = importlib.import_module(target[0])
        except ImportError:
            mod = importlib.import_module(target[1])
        obj: Callable[..., Any] = getattr(mod, name)
        return obj


def load_batch(path: Path) -> dict[str, Any]:
    """Unpickle one batch safely; bytes keys (from encoding choices) are decoded to str.

    Raises:
        DataError: when the file is missing, corrupt, unsafe, or not a dict.
    """
    if not path.is_file():
        found = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise DataError(f"missing CIFAR batch {path}; found: {', '.join(found) or 'nothing'}.")
    try:
        with path.open("rb") as f:
            obj = SafeUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as exc:  # any unpickling failure means a corrupt file
        raise DataError(f"cannot read CIFAR batch {path} ({exc}); re-download the dataset.") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict; re-download the dataset.")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _images_labels(batch: dict[str, Any], label_key: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path} lacks 'data' or {label_key!r}; keys found: {sorted(batch)}.")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.ndim != 1:
        raise DataError(
            f"{path}: data is {data.dtype} {data.shape} and labels {labels.shape}; expected uint8 "
            "(N, 3072) data and (N,) labels. Re-download the dataset."
        )
    if labels.shape[0] != data.shape[0]:
        raise DataError(
            f"{path}: {data.shape[0]} images but {labels.shape[0]} labels; re-download the dataset."
        )
    # Rows are channel-major (1024 R, 1024 G, 1024 B), so a reshape gives NCHW directly.
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float().div_(255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def _root_fix(value: str) -> str:
    """How to give a dataset root on each command (train, distill and run take it only as data.root)."""
    return (
        f"data.root: {value} in the recipe or --set data.root={value} (train, distill, run, transfer); "
        f"--data-root {value} (eval, export, prune, quantize, compress, shrink)"
    )


def _read(
    root: Path | None,
    name: str,
    folder: str,
    files: tuple[list[str], str, str],
    label_key: str,
    names_key: str,
) -> RawDataset:
    train, test, meta = files
    if root is None:
        raise DataError(
            f"dataset {name!r} needs the folder containing {', '.join([*train, test, meta])} (the python "
            f"version of {name}): {_root_fix('DIR')}."
        )
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset directory {root} does not exist; give the folder containing "
            f"{', '.join([*train, test, meta])} (the python version of {name}): {_root_fix('DIR')}."
        )
    if not (root / train[0]).is_file() and (root / folder).is_dir():
        # The archive unpacks into `folder`; its parent is the usual mistake.
        raise DataError(
            f"{root} holds the folder {folder}/ rather than the {name} batches themselves; "
            f"use {root / folder} instead: {_root_fix(str(root / folder))}."
        )
    parts = [_images_labels(load_batch(root / f), label_key, root / f) for f in train]
    x_test, y_test = _images_labels(load_batch(root / test), label_key, root / test)
    class_names = [
        c.decode() if isinstance(c, bytes) else str(c) for c in load_batch(root / meta).get(names_key, [])
    ]
    if not class_names:
        raise DataError(f"{root / meta} lacks {names_key!r}; re-download the dataset.")
    return RawDataset(
        x_train=torch.cat([p[0] for p in parts]),
        y_train=torch.cat([p[1] for p in parts]),
        x_test=x_test,
        y_test=y_test,
        class_names=class_names,
        augment="crop_flip",
        crop_padding=4,
        source=str(root),
    )


@DATASETS.register("cifar10")
def read_cifar10(root: Path | None = None) -> RawDataset:
    """Read CIFAR-10 from `cifar-10-batches-py` (data_batch_1..5, test_batch, batches.meta)."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    files = (train, "test_batch", "batches.meta")
    return _read(root, "cifar10", "cifar-10-batches-py", files, "labels", "label_names")


@DATASETS.register("cifar100")
def read_cifar100(root: Path | None = None) -> RawDataset:
    """Read CIFAR-100 (fine labels) from `cifar-100-python` (train, test, meta)."""
    files = (["train"], "test", "meta")
    return _read(root, "cifar100", "cifar-100-python", files, "fine_labels", "fine_label_names")
