"""The one set of checks every dataset goes through, whichever reader produced it."""

from __future__ import annotations

import torch

from distil.data.bundle import DataBundle, Split
from distil.errors import DataError


def validate_split(
    dataset: str,
    split: str,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    label_fix: str = "Pass class_names covering every label.",
    *,
    task: str = "classification",
) -> None:
    """Check one split: finite (N, C, H, W) images or (N, F) feature vectors, 1-d labels in
    [0, num_classes), matching lengths.

    Args:
        dataset: dataset name, for messages.
        split: split name ("train", "val", "test"), for messages.
        x: images (N, C, H, W) or feature vectors (N, F).
        y: labels (N,).
        num_classes: number of classes.
        label_fix: how this data's source can fix out-of-range labels (readers differ: an npz file can
            carry class_names, a built-in dataset's classes are fixed).
        task: the data's task; only classification labels are class indices checked against the classes
            (multilabel and regression targets are (N,) or (N, D) float rows, checked by `distil.data.targets`).

    Raises:
        DataError: naming the dataset and split, with the fix.
    """
    where = f"dataset {dataset!r}, {split} split"
    if x.dim() not in (2, 4):
        raise DataError(
            f"{where}: x has shape {tuple(x.shape)}; expected (N, C, H, W) images or (N, F) feature "
            "vectors. Return images as (N, H, W), (N, H, W, C) or (N, C, H, W)."
        )
    if (y.dim() != 1 and task == "classification") or x.shape[0] != y.shape[0]:
        raise DataError(
            f"{where}: x holds {x.shape[0]} samples but y has shape {tuple(y.shape)}; "
            "expected one label per image."
        )
    if x.is_floating_point() and x.numel() and not _all_finite(x):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise DataError(
            f"{where}: {bad} image(s) contain NaN or Inf pixels. Fix or drop those samples in the source data."
        )
    if y.numel() and task == "classification":
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(
                f"{where}: labels range over [{lo}, {hi}] but there are {num_classes} classes; "
                f"labels must lie in [0, {num_classes}). {label_fix}"
            )


def _all_finite(x: torch.Tensor) -> bool:
    # min/max propagate NaN and expose +-Inf in one cheap pass, without a full boolean mask.
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def validate_bundle(bundle: DataBundle) -> None:
    """Check every split of a bundle and that train is non-empty and all splits share one sample shape.

    Labels are checked against the classes only for ``task == "classification"``.

    Raises:
        DataError: on the first problem found.
    """
    if len(bundle.train) == 0:
        raise DataError(
            f"dataset {bundle.name!r}: the train split is empty. Check the data source, "
            "or lower val_fraction / raise limit."
        )
    splits = {"train": bundle.train, "val": bundle.val, "test": bundle.test}
    # Classes exist only in classification: a token-block split's per-sample labels are placeholders
    # (its targets are tokens, checked by its reader), so only the shared sample shape is checked.
    class_splits = splits if bundle.task == "classification" else {}
    for split_name, split in class_splits.items():
        # Splits on disk are checked for finite values by their reader, chunk by chunk; here only
        # their labels (an (N, 0) stand-in keeps the checks' shapes).
        x = split.x if isinstance(split, Split) else torch.empty(len(split), 0)
        validate_split(bundle.name, split_name, x, split.labels, bundle.num_classes)
    shape = bundle.train.sample_shape
    for split_name, split in splits.items():
        if split.sample_shape != shape:
            raise DataError(
                f"dataset {bundle.name!r}: {split_name} samples are {split.sample_shape} but train "
                f"samples are {shape}; every split must share one sample shape."
            )
