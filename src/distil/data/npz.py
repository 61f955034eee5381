"""A generic .npz file: the simplest way to bring your own data (no pickles are ever loaded)."""

from __future__ import annotations

import math
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.data.raw import (
    TEST_FRACTION,
    TEST_SEED,
    RawDataset,
    check_normalize,
    infer_class_names,
    split_off_test,
    to_float_inputs,
)
from distil.data.registry import DATASETS
from distil.data.targets import target_names, to_targets
from distil.errors import DataError

SYNTHETIC_TEST_METRIC = "agreement with the teacher on held-out synthetic inputs"
"""What a test split carved from a synthetic transfer set (no real x_test/y_test) measures: its labels are
the teacher's answers, so a model's "accuracy" there is how often it answers as the teacher does."""


def test_split_title(name: str, extra: Mapping[str, Any]) -> str:
    """What a data set's test metrics measure: ``extra["test_metric"]`` where the reader recorded one (a
    synthetic set's carved split), else "NAME test set". The one rule of the run's table and its report."""
    return str(extra.get("test_metric") or f"{name} test set")


@DATASETS.register("npz")
def read_npz(root: Path | None = None, normalize: str | None = None) -> RawDataset:
    """Read arrays `x`, `y` (train) and optional `x_test`, `y_test`, `class_names` from an .npz file.

    `y` is (N,) integer class indices (classification), (N, L) 0/1 floats (multilabel) or (N,)/(N, D)
    floats (regression); `distil.data.targets` says how the task is told from them (or a recipe's
    ``data.task``). `class_names`, for float targets, names their columns.

    `x` of shape (N, F) is N feature vectors (tabular data: each feature is normalized on its own), and
    so is (N, 1, F) or any layout whose samples have one non-1 dimension.
    Images follow `distil.data.raw.to_nchw_float`: (N, H, W) gains a channel, (N, H, W, C) with C in
    (1, 3) becomes NCHW, uint8 is scaled to [0, 1]. Without `x_test`/`y_test` a stratified 20% of `x`/`y`
    (seed 0, the same every run) is held out as the test split, with a warning, and
    `DataBundle.describe()["extra"]["test_split"]` records it; a file flagged ``synthetic`` (a transfer
    set `distil synthesize` wrote without real test data) also records ``extra["test_metric"]``
    (`SYNTHETIC_TEST_METRIC`): that split measures agreement with the teacher, not accuracy. Optional arrays `mean` and `std` (one
    value per channel or feature) are the normalization of the inputs, used instead of the train split's
    statistics (a synthetic transfer set written in its teacher's input space by `distil synthesize`).

    Args:
        root: path of the .npz file (required).
        normalize: `auto` (None): standardize each feature / channel with the training split's
            statistics; `none`: keep the values, e.g. (N, 1024) audio frames for a model that normalizes
            each frame itself (`distil.data.raw.NORMALIZE_MODES`).

    Raises:
        DataError: when the file is missing, unreadable, lacks `x`/`y`, or has no test split and too few
            samples to carve one.
    """
    if root is None:
        raise DataError("dataset 'npz' needs the file path: pass --data-root FILE.npz (arrays x, y).")
    path = Path(root)
    mode = check_normalize(normalize, f"npz file {path}")
    if not path.is_file():
        raise DataError(
            f"npz file {path} does not exist; pass --data-root FILE.npz containing arrays x and y."
        )
    arrays = read_arrays(path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks array(s) {missing}; found keys {sorted(arrays)}. Save x and y (train)."
        )
    x_train = to_float_inputs(arrays["x"], f"x in {path}")
    y_train = to_targets(arrays["y"], f"y in {path}")
    _check_same_length(path, "x", x_train, "y", y_train)
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(
            f"{path} has only one of x_test / y_test; found keys {sorted(arrays)}. Save both or neither."
        )
    extra: dict[str, str] = {}
    names = arrays.get("class_names")
    if "x_test" in arrays:
        x_test = to_float_inputs(arrays["x_test"], f"x_test in {path}")
        y_test = to_targets(arrays["y_test"], f"y_test in {path}")
        _check_same_length(path, "x_test", x_test, "y_test", y_test)
    else:
        # Without a test split every stage would train and then fail at the final measurement.
        how = "at random" if y_train.is_floating_point() else "stratified"  # float targets have no classes
        x_train, y_train, x_test, y_test = _carve_test(path, x_train, y_train)
        extra["test_split"] = (
            f"carved: {len(y_test)} of {len(y_test) + len(y_train)} samples of x/y "
            f"({TEST_FRACTION:.0%}, {how}, seed {TEST_SEED}) because the file has no x_test/y_test"
        )
        if _is_synthetic(path, arrays):
            # Its labels are the teacher's own answers: "accuracy" on them is agreement with the teacher.
            extra["test_metric"] = SYNTHETIC_TEST_METRIC
            extra["test_split"] += (
                f"; they are synthetic inputs labelled by the teacher, so the test 'accuracy' is "
                f"{SYNTHETIC_TEST_METRIC}, not accuracy on real data (distil synthesize --test FILE.npz "
                "adds real labelled test data)"
            )
        warnings.warn(f"{path}: test split {extra['test_split']}", UserWarning, stacklevel=2)
    if y_train.is_floating_point():
        # Multilabel rows or regression targets: one output per column (named by class_names if given).
        class_names = target_names(y_train, y_test)
        if names is not None and len(names) == len(class_names):
            class_names = [str(c) for c in names.tolist()]
    else:
        class_names = (
            [str(c) for c in names.tolist()] if names is not None else infer_class_names(y_train, y_test)
        )
    label_fix = (
        "Save a class_names array covering every label (or leave it out to number the classes 0..max), "
        "and labels as class indices >= 0."
    )
    return RawDataset(
        x_train,
        y_train,
        x_test,
        y_test,
        class_names,
        source=str(path),
        label_fix=label_fix,
        extra=extra,
        normalize=mode,
        normalization=_recorded_normalization(path, arrays, x_train),
    )


def _is_synthetic(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Whether the file says it is a synthetic transfer set (`distil synthesize` writes ``synthetic=True``)."""
    if "synthetic" not in arrays:
        return False
    flag = np.asarray(arrays["synthetic"]).reshape(-1)
    if flag.size != 1 or flag.dtype.kind not in "biu":
        raise DataError(
            f"{path}: array 'synthetic' must be one boolean; got {flag.dtype} of {flag.size} value(s)."
        )
    return bool(flag[0])


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz file `path`, each header checked before numpy allocates it; never unpickles.

    Raises:
        DataError: an unreadable or corrupt file, or object arrays.
    """
    try:
        _check_declared_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"cannot read {path} as .npz ({exc}); save it with numpy.savez(path, x=..., y=...) "
            "without object arrays."
        ) from exc


def _recorded_normalization(
    path: Path, arrays: dict[str, np.ndarray], x: torch.Tensor
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The file's own `mean`/`std` (one value per channel or feature), checked; None when it has neither.

    A synthetic transfer set (`distil synthesize`) is made in its teacher's input space: normalizing it
    with its own statistics would hand the teacher other tensors than the ones it was made for.
    """
    if "mean" not in arrays and "std" not in arrays:
        return None
    if "mean" not in arrays or "std" not in arrays:
        raise DataError(
            f"{path} has only one of mean / std; save both (the inputs' normalization) or neither."
        )
    mean = np.asarray(arrays["mean"], dtype=np.float64).reshape(-1)
    std = np.asarray(arrays["std"], dtype=np.float64).reshape(-1)
    channels = x.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise DataError(
            f"{path}: mean has {len(mean)} and std {len(std)} value(s), but the samples have {channels} "
            "channel(s)/feature(s); save one mean and one std per channel."
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise DataError(f"{path}: mean/std must be finite and std > 0; got mean {mean}, std {std}.")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _check_same_length(path: Path, x_name: str, x: torch.Tensor, y_name: str, y: torch.Tensor) -> None:
    # Checked before a test split is carved by sample index, which would otherwise pair the wrong rows.
    if len(x) != len(y):
        raise DataError(
            f"{path}: {x_name} holds {len(x)} sample(s) but {y_name} {len(y)} label(s); save one label per sample."
        )


def _carve_test(path: Path, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if round(len(y) * TEST_FRACTION) < 1 or len(y) < 2:
        raise DataError(
            f"{path} has no x_test/y_test and only {len(y)} sample(s), too few to hold out a test split; "
            "save x_test and y_test, or more samples."
        )
    return split_off_test(x, y)


def _check_declared_sizes(path: Path) -> None:
    """Compare each array's header with the bytes its zip member holds, before numpy allocates anything.

    numpy allocates the array a header declares before reading its data, so a hostile or corrupt
    header (shape (10**15,)) would otherwise end in a MemoryError or a huge allocation.

    Raises:
        DataError: when a header is unreadable, declares object arrays, or more data than is present.
    """
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise DataError(
                        f"cannot read {path}: array {info.filename!r} has .npy format {version}; save it again."
                    )
                if dtype.hasobject:
                    raise DataError(
                        f"cannot read {path}: array {info.filename!r} holds Python objects (loading them needs pickle, "
                        "which is never done); save numeric arrays."
                    )
                declared = math.prod(shape) * dtype.itemsize
                present = info.file_size - member.tell()
                if declared > present:
                    raise DataError(
                        f"cannot read {path}: array {info.filename!r} declares shape {shape} ({declared} bytes) but holds "
                        f"only {present} bytes; the file is truncated or corrupt. Save it again."
                    )
