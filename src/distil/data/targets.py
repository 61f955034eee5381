"""Which task a dataset's labels describe, and the check that a recipe's named task fits them.

A user's arrays (an .npz file, a reader's dict) carry no task tag, so the labels' shape and dtype tell it:

* ``(N,)`` integers: ``classification`` (one class per sample);
* ``(N, L)`` floats that are all 0 or 1: ``multilabel`` (L independent yes/no labels); a recipe that names
  ``multilabel`` may also give soft targets in [0, 1] (e.g. CREPE's Gaussian-blurred pitch bins), which
  ``ml_bce`` trains on as they are and the metrics count as positive from 0.5;
* any other ``(N,)`` or ``(N, D)`` floats: ``regression`` (D real targets per sample);
* ``(N, H, W)`` integers: ``dense`` (a class per pixel, 255 = no label: ignored by the loss and metrics);
* ``embedding`` is never told from the labels (its (N, D) target vectors look like regression targets):
  a recipe names it (``data.task=embedding``) and the labels must be (N, D) floats with D >= 2;

A recipe names the task (``data.task``) where the labels cannot say it, e.g. ``regression`` for targets that
happen to be 0/1. A named task that contradicts the labels (``multilabel`` with class indices) stops with
the conversion that fixes the data, never a silent reinterpretation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distil.data.batch import IGNORE_INDEX
from distil.errors import ConfigError, DataError

CLASSIFICATION = "classification"
MULTILABEL = "multilabel"
REGRESSION = "regression"
EMBEDDING = "embedding"
DENSE = "dense"
# A pixel without a label in dense labels as saved (the common segmentation convention); read as
# `IGNORE_INDEX` (-100), the marker every loss and metric of distil skips.
IGNORE_LABEL = 255
# Augmentations that leave every pixel where it is (the others would move images under fixed labels).
PIXEL_PRESERVING_OPS = frozenset({"jitter"})

# The tasks whose labels a reader keeps as float tensors (one row of values per sample).
FLOAT_TARGET_TASKS = (MULTILABEL, REGRESSION, EMBEDDING)
# The tasks a recipe may name for array data (`DataConfig.task`).
ARRAY_TASKS = (CLASSIFICATION, DENSE, *FLOAT_TARGET_TASKS)


def outputs_are_logits(task: str) -> bool:
    """Whether models of `task` emit logits (softened by a softmax or a sigmoid), so a teacher whose outputs
    all lie in [0, 1] has a final activation to remove; regression outputs and embeddings are values, any
    range is valid."""
    return task not in (REGRESSION, EMBEDDING)


def to_targets(array: Any, what: str) -> torch.Tensor:
    """Labels as read: int64 ``(N,)`` class indices, int64 ``(N, H, W)`` pixel classes (255 read as
    `IGNORE_INDEX`), or float32 ``(N,)``/``(N, D)`` targets.

    Raises:
        DataError: another shape or dtype, or non-finite float targets.
    """
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        return torch.from_numpy(arr.astype(np.int64))
    if arr.ndim == 3 and arr.dtype.kind in "iu":
        out = torch.from_numpy(arr.astype(np.int64))
        return out.masked_fill(out == IGNORE_LABEL, IGNORE_INDEX)
    if arr.ndim in (1, 2) and arr.dtype.kind in "fb":
        out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if out.numel() and not bool(torch.isfinite(out).all()):
            raise DataError(f"{what} holds NaN or Inf targets; fix or drop those samples.")
        return out
    raise DataError(
        f"{what} has shape {tuple(arr.shape)} and dtype {arr.dtype}; expected (N,) integer class indices, "
        "(N, L) 0/1 floats (multilabel), (N,)/(N, D) float targets (regression) or (N, H, W) integer pixel "
        "classes (dense, 255 = no label)."
    )


def is_binary(y: torch.Tensor) -> bool:
    """Whether every value of `y` is exactly 0 or 1."""
    return bool(((y == 0) | (y == 1)).all())


def labels_task(y: torch.Tensor) -> str:
    """The task the labels themselves describe (see the module docstring)."""
    if not y.is_floating_point():
        return DENSE if y.dim() == 3 else CLASSIFICATION
    if y.dim() == 2 and y.shape[1] >= 2 and is_binary(y):
        return MULTILABEL
    return REGRESSION


def choose_task(requested: str | None, labels: list[torch.Tensor], source: str) -> str:
    """The task of a dataset: `requested` (a recipe's ``data.task``) checked against the labels, or theirs.

    Args:
        requested: the recipe's task, or None to take the labels' own.
        labels: the label tensors of every split (as :func:`to_targets` returns them).
        source: the data's name or path, for messages.

    Raises:
        DataError: splits whose labels describe different tasks, or a requested task they contradict,
            with the conversion that fixes it.
    """
    found = {labels_task(y) for y in labels if y.numel()}
    if requested is None:
        for y in labels:
            _refuse_float_class_indices(y, source)
        if len(found) > 1:
            raise DataError(
                f"{source}: the splits' labels describe different tasks ({', '.join(sorted(found))}); save "
                "every split's labels with one dtype and width."
            )
        return found.pop() if found else CLASSIFICATION
    for y in labels:
        _check_requested(requested, y, source)
    return requested


def _refuse_float_class_indices(y: torch.Tensor, source: str) -> None:
    """Refuse (N,) float labels that are all whole numbers: class indices saved as floats (a pandas column,
    a float64 array) would otherwise be fitted as regression targets without a word.

    Raises:
        DataError: naming both readings and how to choose one.
    """
    if y.is_floating_point() and y.dim() == 1 and y.numel() and bool((y == y.round()).all()):
        raise DataError(
            f"{source}: the labels are (N,) floats that are all whole numbers (e.g. {float(y[0]):g}): class "
            "indices saved as floats, or integer-valued regression targets? Fix: save y.astype(int) for "
            "classification, or set data.task=regression to fit them as values."
        )


def _check_requested(task: str, y: torch.Tensor, source: str) -> None:
    """Refuse labels that cannot serve `task`, naming the conversion that makes them fit."""
    shape = tuple(y.shape)
    if task == CLASSIFICATION and not y.is_floating_point() and y.dim() == 3:
        raise DataError(
            f"{source}: data.task=classification needs (N,) class indices, but the labels are (N, H, W) "
            f"pixel classes of shape {shape}. Fix: set data.task=dense (or drop data.task), with a model that "
            "outputs (B, K, H, W) such as tiny-segnet."
        )
    if task == DENSE and (y.is_floating_point() or y.dim() != 3):
        raise DataError(
            f"{source}: data.task=dense needs (N, H, W) integer pixel classes (255 = no label), but the labels "
            f"have shape {shape} and dtype {y.dtype}. Fix: drop data.task for one class per sample, or save "
            "y as an (N, H, W) integer array of per-pixel classes."
        )
    if task == CLASSIFICATION and y.is_floating_point():
        hint = (
            " They look like multilabel 0/1 rows: set data.task=multilabel (or drop data.task)."
            if labels_task(y) == MULTILABEL
            else " For real-valued targets set data.task=regression."
        )
        raise DataError(
            f"{source}: data.task=classification needs (N,) integer class indices, but the labels are "
            f"floats of shape {shape}.{hint} Class labels: save y.astype(int)."
        )
    if task == MULTILABEL:
        if not y.is_floating_point():
            raise DataError(
                f"{source}: data.task=multilabel needs (N, L) 0/1 rows (L labels per sample), but the labels are "
                f"integer class indices of shape {shape}. Fix: drop data.task for single-class data, or save "
                "np.eye(L, dtype=np.float32).take(y, axis=0) (one 0/1 row per sample)."
            )
        if y.dim() != 2 or (y.numel() and (float(y.min()) < 0 or float(y.max()) > 1)):
            raise DataError(
                f"{source}: data.task=multilabel needs (N, L) rows of values in [0, 1] (0/1 labels, or soft "
                f"targets such as blurred pitch bins), but the labels have shape {shape} with values outside "
                "[0, 1]. Fix: threshold or rescale them, or set data.task=regression for real-valued targets."
            )
    if task == EMBEDDING and (not y.is_floating_point() or y.dim() != 2 or y.shape[1] < 2):
        raise DataError(
            f"{source}: data.task=embedding needs (N, D) float target vectors with D >= 2 (the embeddings a "
            f"teacher is trained to output), but the labels have shape {shape} and dtype {y.dtype}. Fix: save "
            "y as an (N, D) float32 array of target embeddings, or drop data.task for class labels."
        )
    if task == REGRESSION and not y.is_floating_point():
        raise DataError(
            f"{source}: data.task=regression needs float targets, but the labels are integers of shape "
            f"{shape}. Fix: save y.astype(np.float32), or drop data.task for class labels."
        )


def refuse_moving_augment(task: str, ops: tuple[str, ...], mixing: str) -> None:
    """Refuse, on dense data, augmentations that move pixels: the labels of each pixel would not follow.

    Raises:
        ConfigError: naming the operations and the fix.
    """
    if task != DENSE:
        return
    moving = [op for op in ops if op not in PIXEL_PRESERVING_OPS] + ([mixing] if mixing != "none" else [])
    if moving:
        raise ConfigError(
            f"augmentation {'+'.join(moving)} moves or mixes pixels, but dense labels are per pixel and are not "
            "moved with them. Fix: --set student_train.augment.ops=none (and teacher_train), jitter only, "
            "and augment.mixing=none."
        )


def target_names(y_train: torch.Tensor, y_test: torch.Tensor) -> list[str]:
    """Names "0".."D-1" of float targets' columns: D is the model's output width (1 for (N,) targets)."""
    width = y_train.shape[1] if y_train.dim() == 2 else 1
    if y_test.numel() and (y_test.shape[1] if y_test.dim() == 2 else 1) != width:
        raise DataError(
            f"train targets have {width} column(s) but test targets {y_test.shape[1] if y_test.dim() == 2 else 1}; "
            "save both with the same width."
        )
    return [str(i) for i in range(width)]
