"""The dataset registry and `load_dataset`, which turns any reader's output into a checked DataBundle."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from distil.data.bundle import DataBundle, SampleSplit, Split, batch_ranges
from distil.data.raw import LazyDataset, RawDataset, infer_class_names, normalize_options, to_float_inputs
from distil.data.sampling import stratified_take
from distil.data.targets import CLASSIFICATION, choose_task, target_names, to_targets
from distil.data.validate import validate_bundle, validate_split
from distil.errors import ConfigError, DataError
from distil.registry import Registry

Reader = Callable[[Path | None], "RawDataset | LazyDataset"]
"""A reader takes the data root (None: its default) and returns the raw train/test arrays in memory
(`RawDataset`), or a `LazyDataset` that builds a bundle whose splits stay on disk."""

DATASETS: Registry[Reader] = Registry("dataset", error=DataError)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    options: Mapping[str, Any] | None = None,
    trust_code: bool = False,
    task: str | None = None,
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
        options: keyword options of readers that take them (the image readers' `image_size`,
            `channels`, `on_bad_sample`; the text readers' `block_size`, `tokenizer`, `split_by`, `newlines`,
            `errors`; the text classification readers' `text_field`, `label_field`); None values are left
            out.
        trust_code: the user trusts code the data names (``--trust-code``): given to readers that take a
            ``trust_code`` option (the text readers, for an ``hf:DIR`` tokenizer with its own code).
        task: the task the recipe names (``data.task``: classification, multilabel, regression), checked
            against the labels; None: the labels' own (`distil.data.targets.choose_task`).

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
    raw: RawDataset | LazyDataset
    if ":" in name:
        result = _call_user_reader(name, root_path)
        if isinstance(result, DataBundle):
            bundle = limit_bundle(result, limit, seed) if limit is not None else result
            _check_bundle_task(bundle, task)
            validate_bundle(bundle)
            return bundle
        raw = _raw_from_dict(name, result)
    else:
        reader = DATASETS.get(name)
        given = {k: v for k, v in (options or {}).items() if v is not None}
        if given:
            accepted = inspect.signature(reader).parameters
            unknown = sorted(k for k in given if k not in accepted)
            if unknown:
                options_of = (
                    "the array readers (npz, npy-dir: normalize)"
                    if "normalize" in unknown
                    else "the text readers (text, python-stdlib, python-docs, text-classification, "
                    "python-docs-topics, chat; text_field and label_field: the classification ones; split_by "
                    "and newlines: the language-modelling ones; chat_template and on_long: chat)"
                    if any(k in _TEXT_OPTIONS for k in unknown)
                    else "the arithmetic reader (digits, operations, train_size, test_size, problem_seed, "
                    "answer_order, pad_operands)"
                    if any(k in ARITHMETIC_OPTIONS for k in unknown)
                    else "the image readers (imagefolder, manifest, hf-datasets; shards: image_size, channels)"
                )
                raise ConfigError(
                    f"data.{', data.'.join(unknown)} do(es) not apply to dataset {name!r}; "
                    f"they are options of {options_of}. Remove them."
                )
        if trust_code and "trust_code" in inspect.signature(reader).parameters:
            given["trust_code"] = True
        raw = reader(root_path, **given)
        if not isinstance(raw, RawDataset):
            bundle = raw.build_bundle(name, val_fraction=val_fraction, seed=seed, limit=limit)
            _check_bundle_task(bundle, task)
            return bundle
    chosen = choose_task(task, [raw.y_train, raw.y_test], raw.source or name)
    return _build_bundle(name, raw, val_fraction=val_fraction, seed=seed, limit=limit, task=chosen)


def _check_bundle_task(bundle: DataBundle, task: str | None) -> None:
    """Refuse a recipe's ``data.task`` that a reader with its own task (text, images on disk) contradicts.

    Raises:
        DataError: naming both tasks and the fix.
    """
    if task is not None and task != bundle.task:
        raise DataError(
            f"data.task={task} but dataset {bundle.name!r} is read as {bundle.task} data; this reader decides "
            "its task itself. Fix: drop data.task, or save the data as .npz arrays whose labels fit the task "
            "(docs/tasks.md)."
        )


_TEXT_OPTIONS = (
    "block_size",
    "tokenizer",
    "split_by",
    "errors",
    "newlines",
    "text_field",
    "label_field",
    "chat_template",
    "on_long",
)
ARITHMETIC_OPTIONS = (
    "digits",
    "operations",
    "train_size",
    "test_size",
    "problem_seed",
    "answer_order",
    "pad_operands",
)
"""The arithmetic reader's options that decide the problems (recorded in checkpoint sidecars)."""


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
    y_train = to_targets(result["y_train"], f"y_train from {name}")
    y_test = to_targets(result["y_test"], f"y_test from {name}")
    names = result.get("class_names")
    if y_train.is_floating_point():
        names = target_names(y_train, y_test)
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


def _subset(split: SampleSplit, count: int, seed: int) -> SampleSplit:
    if count >= len(split):
        return split
    taken, _ = stratified_take(split.labels.numpy(), count, seed)
    return split.take(torch.from_numpy(taken))


def limit_bundle(bundle: DataBundle, limit: int, seed: int) -> DataBundle:
    """`bundle` with at most `limit` train and ``max(1, limit // 5)`` val/test samples (stratified)."""
    test_limit = max(1, limit // 5)
    return replace(
        bundle,
        train=_subset(bundle.train, limit, seed),
        val=_subset(bundle.val, test_limit, seed),
        test=_subset(bundle.test, test_limit, seed),
    )


def select_samples(
    y_train: torch.Tensor, y_test: torch.Tensor, *, val_fraction: float, seed: int, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions (sorted int64) of the train, val and test samples in the reader's train/test arrays.

    The one place `limit` and the validation carve-out choose samples, from the labels alone, so data
    read into memory and data read from disk select exactly the same samples.
    """
    train = torch.arange(len(y_train))
    test = torch.arange(len(y_test))
    if limit is not None:
        if limit < len(y_train):
            train = torch.from_numpy(stratified_take(y_train.numpy(), limit, seed)[0])
        test_limit = max(1, limit // 5)
        if test_limit < len(y_test):
            test = torch.from_numpy(stratified_take(y_test.numpy(), test_limit, seed)[0])
    val_idx, train_idx = stratified_take(y_train[train].numpy(), round(len(train) * val_fraction), seed)
    return train[torch.from_numpy(train_idx)], train[torch.from_numpy(val_idx)], test


def _build_bundle(
    name: str,
    raw: RawDataset,
    *,
    val_fraction: float,
    seed: int,
    limit: int | None,
    task: str = CLASSIFICATION,
) -> DataBundle:
    # Check the reader's output before any arithmetic, so NaNs are reported against the source split.
    num_classes = len(raw.class_names)
    # A built-in dataset's class list is fixed, so bad labels mean the wrong or a damaged source.
    label_fix = raw.label_fix or (
        f"The classes of {name!r} are fixed: check that the data root holds {name!r} (not another dataset) "
        "and re-download it if it is damaged."
    )
    validate_split(name, "train", raw.x_train, raw.y_train, num_classes, label_fix, task=task)
    validate_split(name, "test", raw.x_test, raw.y_test, num_classes, label_fix, task=task)
    ti, vi, tei = select_samples(raw.y_train, raw.y_test, val_fraction=val_fraction, seed=seed, limit=limit)
    x_train, y_train = raw.x_train[ti], raw.y_train[ti]
    x_val, y_val = raw.x_train[vi], raw.y_train[vi]
    x_test, y_test = raw.x_test[tei], raw.y_test[tei]
    if len(y_train) == 0:
        raise DataError(
            f"dataset {name!r}: the train split is empty; check the source or lower val_fraction."
        )
    mean, std = _bundle_normalization(name, raw, x_train)
    m, s = stat_tensors(mean, std, x_train.dim())
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
        task=task,
        options=normalize_options(raw.normalize),
    )
    validate_bundle(bundle)
    return bundle


def _bundle_normalization(
    name: str, raw: RawDataset, x_train: torch.Tensor
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std the bundle's inputs are standardized with.

    Args:
        name: dataset name, for the error message.
        raw: the reader's output (its recorded normalization and the requested mode).
        x_train: the selected training inputs (statistics source when nothing is recorded).

    Returns:
        (mean, std), one value per channel / feature.

    Raises:
        DataError: the file records its inputs' normalization but `normalize: none` asks to ignore it.
    """
    if raw.normalization is not None:
        if raw.normalize == "none":
            # The recorded mean/std map the stored values back to the teacher's input space; keeping the
            # raw values would silently hand the teacher other tensors than the ones it was given.
            raise DataError(
                f"dataset {name!r}: {raw.source or name} records its teacher's input normalization "
                "(arrays mean/std, e.g. a synthetic transfer set from `distil synthesize`), but "
                "normalize is 'none', which would ignore it. Fix: drop data.normalize or set it to auto."
            )
        return raw.normalization
    return input_stats((x_train[b:e] for b, e in batch_ranges(len(x_train), STATS_CHUNK)), raw.normalize)


STATS_CHUNK = 1024
"""Samples per chunk of the normalization statistics: fixed, so in-memory and on-disk data (read in
chunks) get bit-identical mean/std."""


def stat_tensors(
    mean: tuple[float, ...], std: tuple[float, ...], dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std shaped to broadcast over a batch: (1, C, 1, 1) for images, (1, F) for feature vectors."""
    shape = (1, -1, *([1] * (dim - 2)))
    return torch.tensor(mean).view(shape), torch.tensor(std).view(shape)


def input_stats(
    chunks: Iterable[torch.Tensor], normalize: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std a bundle applies: :func:`channel_stats`, or (0,), (1,) (the identity) for ``none``.

    Args:
        chunks: the training inputs, chunk by chunk (not read at all for ``none``).
        normalize: one of `distil.data.raw.NORMALIZE_MODES`.
    """
    if normalize == "none":
        # One value broadcasts over every channel or feature, and the sidecar says plainly: untouched.
        return (0.0,), (1.0,)
    return channel_stats(chunks)


def channel_stats(chunks: Iterable[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of each channel of (N, C, H, W) images, or of each feature of (N, F) vectors.

    Computed chunk by chunk in float64 (Chan et al.'s merge of per-chunk mean and squared deviations),
    so data on disk never needs to be in memory at once, and the result depends only on the values and
    the chunking (callers use `STATS_CHUNK` samples per chunk).
    """
    count = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None
    values_per_sample = 1
    for chunk in chunks:
        x = chunk.double()
        dims = (0, *range(2, x.dim()))
        values_per_sample = max(x.numel() // max(x.shape[0] * x.shape[1], 1), 1)
        n = x.shape[0] * values_per_sample
        if n == 0:
            continue
        c_mean = x.mean(dim=dims)
        c_m2 = (x - c_mean.view(1, -1, *([1] * (x.dim() - 2)))).square().sum(dim=dims)
        if mean is None or m2 is None:
            count, mean, m2 = n, c_mean, c_m2
            continue
        delta = c_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + c_m2 + delta.square() * (count * n / total)
        count = total
    if mean is None or m2 is None:
        raise DataError("cannot compute normalization statistics of an empty train split.")
    std = (m2 / count).sqrt() if count > 1 else torch.ones_like(mean)
    # A constant channel has std 0; dividing by 1 keeps it finite instead of producing NaN.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(v) for v in mean.float()), tuple(float(v) for v in std.float())


__all__ = ["DATASETS", "Reader", "load_dataset"]
