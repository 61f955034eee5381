"""Datasets that stay on disk: a folder of `.npy` arrays read with `np.load(mmap_mode="r")`.

Layout of an ``npy-dir`` folder (what :func:`export_npy_dir` writes)::

    x_train.npy   images (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or float; or (N, F) features
    y_train.npy   (N,) integer labels
    x_test.npy    optional, same layout (without it a stratified 20%, seed 0, of train is the test split)
    y_test.npy    optional
    class_names.json  optional list of names
    dataset.json  optional {"augment": "crop_flip", "crop_padding": 4}: the standard augmentation

Only the labels are read into memory. Samples are read on demand, converted exactly as in-memory data
(`distil.data.raw.to_float_inputs`: uint8 scaled to [0, 1]) and normalized with the bundle's mean/std,
which are computed in chunks; the validation carve-out and `limit` are index views. So peak memory
does not grow with the dataset, and the values are bit-identical to the same arrays read into memory
(e.g. from an .npz file).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.data.bundle import DataBundle, RangeSplit, SampleSplit, batch_ranges
from distil.data.raw import (
    TEST_FRACTION,
    TEST_SEED,
    RawDataset,
    check_normalize,
    infer_class_names,
    normalize_options,
    to_float_inputs,
    to_labels,
)
from distil.data.registry import DATASETS, STATS_CHUNK, input_stats, select_samples, stat_tensors
from distil.data.sampling import stratified_take
from distil.data.validate import validate_bundle, validate_split
from distil.errors import DataError


class ArraySplit(RangeSplit):
    """A split read on demand from an `.npy` file: the samples at positions `index` of the array.

    Implements :class:`~distil.data.bundle.SampleSplit`. Pickles by path (workers reopen the file
    instead of receiving a copy of the array).

    Args:
        path: the `.npy` file of raw samples (any layout `to_float_inputs` reads).
        labels: (len(index),) int64 labels of the selected samples.
        index: (M,) int64 positions in the array, in split order.
        mean, std: the bundle's normalization.
        sample_shape: (C, H, W) or (F,) after conversion.
    """

    def __init__(
        self,
        path: Path,
        labels: torch.Tensor,
        index: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        sample_shape: tuple[int, ...],
    ) -> None:
        self.path = Path(path)
        self._labels = labels
        self.index = index
        self.mean, self.std = mean, std
        self._shape = sample_shape
        self._m, self._s = stat_tensors(mean, std, len(sample_shape) + 1)
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._array

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def _read(self, start: int, stop: int) -> torch.Tensor:
        rows = self.index[start:stop]
        raw = self.array[rows.numpy()] if len(rows) else np.array(self.array[:0])
        x = to_float_inputs(raw, f"samples of {self.path}")
        return x.sub(self._m).div_(self._s)

    def take(self, index: torch.Tensor) -> ArraySplit:
        return ArraySplit(self.path, self._labels[index], self.index[index], self.mean, self.std, self._shape)


def _open(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read {path} as .npy ({exc}); save it with numpy.save without object arrays."
        ) from exc
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        raise DataError(f"{path} does not hold one numeric array; save it with numpy.save(path, array).")
    return array


def _check_finite(path: Path, array: np.ndarray) -> None:
    # Integer pixels are always finite; float samples are checked in chunks (never all at once).
    if array.dtype.kind != "f":
        return
    for b, e in batch_ranges(len(array), STATS_CHUNK):
        if not np.isfinite(array[b:e]).all():
            raise DataError(
                f"{path}: samples {b}..{e - 1} contain NaN or Inf. Fix or drop them in the source data."
            )


@dataclass(frozen=True)
class NpyDirDataset:
    """An npy-dir folder opened lazily: memory-mapped samples, labels in memory (a `LazyDataset`)."""

    root: Path
    train_path: Path
    test_path: Path
    y_train: torch.Tensor
    y_test: torch.Tensor
    test_rows: torch.Tensor | None
    """Positions in x_train of a carved test split (None when x_test.npy exists)."""
    class_names: list[str]
    sample_shape: tuple[int, ...]
    augment: str = "none"
    crop_padding: int = 0
    normalize: str = "auto"
    """One of `distil.data.raw.NORMALIZE_MODES`."""

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle:
        train_rows = torch.arange(len(self.y_train))
        test_rows = torch.arange(len(self.y_test)) if self.test_rows is None else self.test_rows
        if self.test_rows is not None:
            mask = torch.ones(len(self.y_train), dtype=torch.bool)
            mask[self.test_rows] = False
            train_rows = train_rows[mask]
        y_train, y_test = self.y_train[train_rows], self.y_test
        ti, vi, tei = select_samples(y_train, y_test, val_fraction=val_fraction, seed=seed, limit=limit)
        if len(ti) == 0:
            raise DataError(
                f"dataset {name!r}: the train split is empty; check the source or lower val_fraction."
            )
        train_index = train_rows[ti]
        array = np.load(self.train_path, mmap_mode="r", allow_pickle=False)
        chunks = (
            to_float_inputs(array[train_index[b:e].numpy()], f"x_train in {self.root}")
            for b, e in batch_ranges(len(train_index), STATS_CHUNK)
        )
        mean, std = input_stats(chunks, self.normalize)
        extra: dict[str, str] = {}
        if self.test_rows is not None:
            extra["test_split"] = (
                f"carved: {len(self.test_rows)} of {len(self.y_train)} samples of x_train "
                f"({TEST_FRACTION:.0%}, stratified, seed {TEST_SEED}) because the folder has no x_test.npy"
            )

        def split(path: Path, labels: torch.Tensor, rows: torch.Tensor) -> ArraySplit:
            return ArraySplit(path, labels, rows, mean, std, self.sample_shape)

        bundle = DataBundle(
            name=name,
            train=split(self.train_path, y_train[ti], train_index),
            val=split(self.train_path, y_train[vi], train_rows[vi]),
            test=split(self.test_path, y_test[tei], test_rows[tei]),
            class_names=list(self.class_names),
            mean=mean,
            std=std,
            augment=self.augment,
            crop_padding=self.crop_padding,
            source=str(self.root),
            extra=extra,
            options=normalize_options(self.normalize),
        )
        validate_bundle(bundle)
        return bundle


@DATASETS.register("npy-dir")
def read_npy_dir(root: Path | None = None, normalize: str | None = None) -> NpyDirDataset:
    """Open a folder of `.npy` arrays (see the module docstring) without reading the samples.

    Args:
        root: the folder (required).
        normalize: `auto` (None) or `none` (keep the values), as for `distil.data.npz.read_npz`.

    Raises:
        DataError: when the folder or an array is missing or unreadable, the arrays disagree, or a
            label is outside the class list.
    """
    if root is None:
        raise DataError(
            "dataset 'npy-dir' needs the folder: pass --data-root DIR (x_train.npy, y_train.npy)."
        )
    root = Path(root)
    mode = check_normalize(normalize, f"npy-dir folder {root}")
    missing = [f for f in ("x_train.npy", "y_train.npy") if not (root / f).is_file()]
    if missing:
        raise DataError(
            f"npy-dir folder {root} lacks {missing}; write one with `distil data export DATASET {root}` "
            "or numpy.save(x_train.npy / y_train.npy)."
        )
    if (root / "x_test.npy").is_file() != (root / "y_test.npy").is_file():
        raise DataError(f"{root} has only one of x_test.npy / y_test.npy; save both or neither.")
    x_train = _open(root / "x_train.npy")
    y_train = to_labels(np.asarray(_open(root / "y_train.npy")), f"y_train.npy in {root}")
    has_test = (root / "x_test.npy").is_file()
    x_test = _open(root / "x_test.npy") if has_test else x_train
    y_test_all = (
        to_labels(np.asarray(_open(root / "y_test.npy")), f"y_test.npy in {root}") if has_test else None
    )
    shape = tuple(to_float_inputs(np.array(x_train[:1]), f"x_train.npy in {root}").shape[1:])
    test_shape = tuple(to_float_inputs(np.array(x_test[:1]), f"x_test.npy in {root}").shape[1:])
    for what, arr, y in (("train", x_train, y_train), ("test", x_test, y_test_all)):
        if y is not None and len(arr) != len(y):
            raise DataError(
                f"{root}: x_{what}.npy holds {len(arr)} samples but y_{what}.npy {len(y)} labels."
            )
    if has_test and len(x_test) and test_shape != shape:
        raise DataError(f"{root}: test samples are {test_shape} but train samples {shape}; use one layout.")
    _check_finite(root / "x_train.npy", x_train)
    if has_test:
        _check_finite(root / "x_test.npy", x_test)
    test_rows = None
    if y_test_all is None:
        if len(y_train) < 2 or round(len(y_train) * TEST_FRACTION) < 1:
            raise DataError(
                f"{root} has no x_test.npy and only {len(y_train)} sample(s), too few to hold out a test split."
            )
        taken, _ = stratified_take(y_train.numpy(), round(len(y_train) * TEST_FRACTION), TEST_SEED)
        test_rows = torch.from_numpy(taken)
        y_test = y_train[test_rows]
        warnings.warn(
            f"{root}: no x_test.npy; a stratified {TEST_FRACTION:.0%} of x_train is the test split.",
            UserWarning,
            stacklevel=2,
        )
    else:
        y_test = y_test_all
    names_file = root / "class_names.json"
    class_names = (
        [str(c) for c in json.loads(names_file.read_text())]
        if names_file.is_file()
        else infer_class_names(y_train, y_test)
    )
    meta_file = root / "dataset.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    fix = "Write class_names.json covering every label (or leave it out to number the classes 0..max)."
    validate_split("npy-dir", "train", torch.empty(len(y_train), 0), y_train, len(class_names), fix)
    validate_split("npy-dir", "test", torch.empty(len(y_test), 0), y_test, len(class_names), fix)
    return NpyDirDataset(
        root=root,
        train_path=root / "x_train.npy",
        test_path=(root / "x_test.npy") if has_test else root / "x_train.npy",
        y_train=y_train,
        y_test=y_test,
        test_rows=test_rows,
        class_names=class_names,
        sample_shape=shape,
        augment=str(meta.get("augment", "none")),
        crop_padding=int(meta.get("crop_padding", 0)),
        normalize=mode,
    )


def _storable(x: torch.Tensor) -> np.ndarray:
    """Raw samples as the array to save: uint8 when `x` is uint8 pixels / 255 (exactly recoverable),
    images NHWC when they have 1 or 3 channels (so the layout rule reads them back as NCHW)."""
    arr = x.numpy()
    if arr.ndim == 4:
        as_u8 = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
        if np.array_equal(to_float_inputs(as_u8, "export").numpy(), arr):
            arr = as_u8
        if arr.shape[1] in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)
        elif arr.shape[-1] in (1, 3):
            raise DataError(
                f"cannot store images of shape {tuple(x.shape[1:])} unambiguously as .npy (NCHW with W in 1, 3)."
            )
    return np.ascontiguousarray(arr)


def export_npy_dir(name: str, directory: str | Path, root: str | Path | None = None) -> Path:
    """Write dataset `name` (its reader's raw train/test arrays, before any split or normalization) as
    an npy-dir folder, so `load_dataset("npy-dir", directory)` gives the same bundle as `name`.

    Each file is written to a temporary name and renamed (atomic).

    Args:
        name: a registered dataset whose reader returns arrays in memory (e.g. "digits").
        directory: the folder to write (created).
        root: the dataset's own data root.

    Returns:
        `directory`.
    """
    raw = DATASETS.get(name)(Path(root) if root is not None else None)
    if not isinstance(raw, RawDataset):
        raise DataError(f"dataset {name!r} already lives on disk; copy its folder instead of exporting it.")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": _storable(raw.x_train),
        "y_train": raw.y_train.numpy(),
        "x_test": _storable(raw.x_test),
        "y_test": raw.y_test.numpy(),
    }
    for key, arr in arrays.items():
        tmp = out / f".{key}.{os.getpid()}.npy"
        np.save(tmp, arr, allow_pickle=False)
        os.replace(tmp, out / f"{key}.npy")
    texts = {
        "class_names.json": list(raw.class_names),
        "dataset.json": {"augment": raw.augment, "crop_padding": raw.crop_padding, "exported_from": name},
    }
    for file_name, value in texts.items():
        tmp_text = out / f".{file_name}.{os.getpid()}"
        tmp_text.write_text(json.dumps(value))
        os.replace(tmp_text, out / file_name)
    return out


def digest(split: SampleSplit) -> str:
    """SHA-256 of a split's normalized contents (equal for equal values, in memory or on disk)."""
    h = hashlib.sha256()
    split.update_hash(h)
    return h.hexdigest()
