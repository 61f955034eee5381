"""The dataset registry and `load_dataset`, which turns any reader's output into a checked DataBundle."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from distil.data.bundle import DataBundle, Split
from distil.data.raw import RawDataset, infer_class_names, to_float_inputs, to_labels
from distil.data.sampling import stratified_take
from distil.data.validate import validate_bundle, validate_split
from distil.errors import ConfigError, DataError
from distil.registry import Registry

Reader = Callable[[Path | None], RawDataset]
"""A reader takes the data root (None: its default) and returns the raw train/test arrays."""

DATASETS: Registry[Reader] = Registry("dataset", error=DataError)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> DataBundle:
    """Read a dataset, carve out a validation split, normalize, and check it.

    Normalization: per-channel (images) or per-feature (feature vectors) mean/std are computed on the
    final train split (after `limit` and the validation carve-out, so no val/test statistics leak into
    training) and applied to every split.

    Args:
        name: a registered name (see `DATASETS.names()`) or `pkg.module:function`, a user callable
            called as `function(root)` (or `function()` when root is None) that returns a `DataBundle`
            (used as is, apart from `limit`) or a dict with `x_train, y_train, x_test, y_test` (numpy
            arrays or tensors: (N, F) feature vectors, or images laid out as `to_nchw_float` documents)
            and optional `class_names`.
        root: data directory or file; None uses the reader's default where it has one.
        val_fraction: share of the train split held out as validation, stratified by class; in [0, 1).
        seed: seed of the validation carve-out and of `limit`'s subsampling.
        limit: keep at most `limit` train samples and `max(1, limit // 5)` test samples (stratified,
            deterministic), for smoke runs and tests.

    Returns:
        The checked DataBundle.

    Raises:
        ConfigError: when val_fraction or limit is out of range.
        DataError: when the dataset is unknown, missing, corrupt or invalid.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction must be in [0, 1), got {val_fraction}; use e.g. 0.1, or 0 for no val."
        )
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of train samples or None, got {limit}.")
    root_path = Path(root) if root is not None else None
    if ":" in name:
        result = _call_user_reader(name, root_path)
        if isinstance(result, DataBundle):
            bundle = _limit_bundle(result, limit, seed) if limit is not None else result
            validate_bundle(bundle)
            return bundle
        raw = _raw_from_dict(name, result)
    else:
        raw = DATASETS.get(name)(root_path)
    return _build_bundle(name, raw, val_fraction=val_fraction, seed=seed, limit=limit)


def _call_user_reader(name: str, root: Path | None) -> Any:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(
            f"cannot import module {module_name!r} for dataset {name!r}: {exc}. "
            "Use 'package.module:function' with the module on PYTHONPATH."
        ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise DataError(f"module {module_name!r} has no callable {attr!r} (from dataset {name!r}).")
    return fn(root) if root is not None else fn()


def _raw_from_dict(name: str, result: Any) -> RawDataset:
    if not isinstance(result, Mapping):
        raise DataError(
            f"dataset callable {name!r} returned {type(result).__name__}; expected a DataBundle or a dict "
            "with keys x_train, y_train, x_test, y_test (and optional class_names)."
        )
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in result]
    if missing:
        raise DataError(
            f"dataset callable {name!r} returned a dict without {missing}; keys found: {sorted(result)}."
        )
    y_train = to_labels(result["y_train"], f"y_train from {name}")
    y_test = to_labels(result["y_test"], f"y_test from {name}")
    names = result.get("class_names")
    return RawDataset(
        x_train=to_float_inputs(result["x_train"], f"x_train from {name}"),
        y_train=y_train,
        x_test=to_float_inputs(result["x_test"], f"x_test from {name}"),
        y_test=y_test,
        class_names=[str(c) for c in names] if names is not None else infer_class_names(y_train, y_test),
        source=name,
        label_fix="Return class_names covering every label (or leave it out to number the classes 0..max), "
        "and labels as class indices >= 0.",
    )


def _subset(x: torch.Tensor, y: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if count >= len(y):
        return x, y
    taken, _ = stratified_take(y.numpy(), count, seed)
    idx = torch.from_numpy(taken)
    return x[idx], y[idx]


def _limit_bundle(bundle: DataBundle, limit: int, seed: int) -> DataBundle:
    test_limit = max(1, limit // 5)
    return replace(
        bundle,
        train=Split(*_subset(bundle.train.x, bundle.train.y, limit, seed)),
        val=Split(*_subset(bundle.val.x, bundle.val.y, test_limit, seed)),
        test=Split(*_subset(bundle.test.x, bundle.test.y, test_limit, seed)),
    )


def _build_bundle(
    name: str, raw: RawDataset, *, val_fraction: float, seed: int, limit: int | None
) -> DataBundle:
    # Check the reader's output before any arithmetic, so NaNs are reported against the source split.
    num_classes = len(raw.class_names)
    # A built-in dataset's class list is fixed, so bad labels mean the wrong or a damaged source.
    label_fix = raw.label_fix or (
        f"The classes of {name!r} are fixed: check that the data root holds {name!r} (not another dataset) "
        "and re-download it if it is damaged."
    )
    validate_split(name, "train", raw.x_train, raw.y_train, num_classes, label_fix)
    validate_split(name, "test", raw.x_test, raw.y_test, num_classes, label_fix)
    x_train, y_train, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test
    if limit is not None:
        x_train, y_train = _subset(x_train, y_train, limit, seed)
        x_test, y_test = _subset(x_test, y_test, max(1, limit // 5), seed)
    val_idx, train_idx = stratified_take(y_train.numpy(), round(len(y_train) * val_fraction), seed)
    vi, ti = torch.from_numpy(val_idx), torch.from_numpy(train_idx)
    x_val, y_val = x_train[vi], y_train[vi]
    x_train, y_train = x_train[ti], y_train[ti]
    if len(y_train) == 0:
        raise DataError(
            f"dataset {name!r}: the train split is empty; check the source or lower val_fraction."
        )
    mean, std = _channel_stats(x_train)
    # (1, C, 1, 1) for images, (1, F) for feature vectors.
    stat_shape = (1, -1, *([1] * (x_train.dim() - 2)))
    m, s = torch.tensor(mean).view(stat_shape), torch.tensor(std).view(stat_shape)
    bundle = DataBundle(
        name=name,
        train=Split(x_train.sub(m).div_(s), y_train),
        val=Split(x_val.sub(m).div_(s), y_val),
        test=Split(x_test.sub(m).div_(s), y_test),
        class_names=list(raw.class_names),
        mean=mean,
        std=std,
        augment=raw.augment,
        crop_padding=raw.crop_padding,
        source=raw.source,
        extra=dict(raw.extra),
    )
    validate_bundle(bundle)
    return bundle


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of each channel of (N, C, H, W) images, or of each feature of (N, F) vectors."""
    dims = (0, *range(2, x.dim()))
    values_per_stat = x.numel() // max(x.shape[1], 1)
    mean = x.mean(dim=dims)
    std = x.std(dim=dims, unbiased=False) if values_per_stat > 1 else torch.ones_like(mean)
    # A constant channel has std 0; dividing by 1 keeps it finite instead of producing NaN.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


__all__ = ["DATASETS", "Reader", "load_dataset"]
