"""Unlabelled transfer sets: the students' training split with labels hidden and unlabelled inputs added.

Distillation pays most where the student's labels are scarce and the teacher can label the rest
(Hinton et al. 2015: a student trained on 3% of the data reached 57.0% with soft targets, 44.5% with
hard labels). A recipe says so with `data.unlabeled` (`distil.config.UnlabeledConfig`, which this module
reads through the :class:`UnlabeledRule` protocol, so data/ does not depend on the recipe schema):

* the **teacher** trains on every label of the dataset (`teacher_train` is never changed);
* the **distilled student** trains on :func:`transfer_set`: the training split with the labels of all but
  `keep_per_class` (or `keep_fraction`) samples per class replaced by `IGNORE_INDEX` (-100), plus the
  inputs of `root` (label -100). The teacher-matching terms (kd, rkl, js, logit_mse, features...) use
  every sample; `ce` (and `dkd`, which needs the true class) the labelled ones only;
* the **scratch student** trains on :func:`labeled_part`, the labelled samples alone (what it could
  learn without the teacher), repeated to the size of the full split so that it takes as many
  optimizer steps as the distilled student.

Which samples keep their labels is a function of `seed` only (stratified: the same count from each
class), so the two students see the same labels.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from distil.data.batch import IGNORE_INDEX
from distil.data.bundle import DataBundle, Split
from distil.data.raw import to_float_inputs
from distil.errors import ConfigError, DataError


class UnlabeledRule(Protocol):
    """Which training labels the students keep and which unlabelled inputs they get.

    `distil.config.UnlabeledConfig` (a recipe's `data.unlabeled`) is one; any object with these
    attributes will do.

    Attributes:
        keep_per_class: labels kept per class, or None.
        keep_fraction: or the fraction of each class's labels kept, or None (neither: all are kept).
        root: a `.npz`/`.npy` file or a folder of them with more unlabelled inputs, or None.
        seed: which samples keep their labels.
    """

    @property
    def keep_per_class(self) -> int | None: ...
    @property
    def keep_fraction(self) -> float | None: ...
    @property
    def root(self) -> str | None: ...
    @property
    def seed(self) -> int: ...


def hide_labels(
    labels: torch.Tensor,
    *,
    keep_per_class: int | None = None,
    keep_fraction: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Labels with all but a stratified subset replaced by `IGNORE_INDEX`.

    Args:
        labels: (N,) int64 classes (entries already -100 stay hidden).
        keep_per_class: keep this many labels of each class (all of a class with fewer).
        keep_fraction: or keep round(fraction * n_c) labels of each class c, at least one.
        seed: which samples keep theirs (a seeded permutation within each class).

    Returns:
        A new (N,) int64 tensor.
    """
    if (keep_per_class is None) == (keep_fraction is None):
        raise ValueError("give exactly one of keep_per_class and keep_fraction")
    y = labels.cpu().numpy()
    out = np.full_like(y, IGNORE_INDEX)
    rng = np.random.default_rng(seed)
    for c in np.unique(y[y != IGNORE_INDEX]):
        where = np.flatnonzero(y == c)
        if keep_per_class is not None:
            k = keep_per_class
        else:
            assert keep_fraction is not None
            k = max(1, round(keep_fraction * len(where)))
        keep = rng.permutation(where)[: min(k, len(where))]
        out[keep] = c
    return torch.from_numpy(out).to(labels.dtype)


def labeled_mask(labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the samples that have a label."""
    return labels != IGNORE_INDEX


def read_unlabeled(root: str | Path, data: DataBundle) -> torch.Tensor:
    """Read unlabelled inputs for `data` and normalize them as its samples are.

    Args:
        root: a `.npz` file (array `x`; `y`, if present, is ignored), a `.npy` file, or a folder of them
            (read in name order). Images follow the readers' layout rules ((N, H, W) gains a channel,
            (N, H, W, C) becomes NCHW, uint8 is scaled to [0, 1]); they are then normalized with the
            dataset's mean and std.
        data: the labelled dataset the teacher was trained on.

    Returns:
        (M, *data.input_shape) float32, normalized.

    Raises:
        DataError: a missing or unreadable file, samples of another shape than the dataset's, or
            `class_names` that differ from the dataset's: each with the fix.
    """
    path = Path(root)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise DataError(f"unlabelled folder {path} holds no .npz or .npy file; save arrays x there.")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(
            f"unlabelled transfer set {path} does not exist; set data.unlabeled.root to a .npz (array x), "
            "a .npy file or a folder of them."
        )
    parts = [_read_one(p, data) for p in files]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _read_one(path: Path, data: DataBundle) -> torch.Tensor:
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive.files:
                    raise DataError(
                        f"{path} has no array 'x' (found {sorted(archive.files)}); save the unlabelled "
                        "inputs with numpy.savez(path, x=...)."
                    )
                arr = archive["x"]
                names = archive["class_names"].tolist() if "class_names" in archive.files else None
            if names is not None and [str(n) for n in names] != list(data.class_names):
                raise DataError(
                    f"{path} names classes {names}, but the teacher's data {data.name!r} has "
                    f"{list(data.class_names)}: a transfer set must come from the teacher's classes. Fix: "
                    "use in-domain inputs for this teacher, or drop class_names from the file."
                )
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read unlabelled inputs {path} ({exc}); save plain numeric arrays.") from None
    x = to_float_inputs(arr, f"unlabelled inputs {path}")
    if tuple(x.shape[1:]) != tuple(data.input_shape):
        raise DataError(
            f"unlabelled inputs {path} have samples of shape {tuple(x.shape[1:])}, but the teacher's data "
            f"{data.name!r} has {tuple(data.input_shape)}. Fix: resize them to the dataset's shape (the "
            "teacher only understands that input)."
        )
    if len(data.input_shape) == 1:
        shape: tuple[int, ...] = (1, -1)
    else:
        shape = (1, -1) + (1,) * (len(data.input_shape) - 1)
    mean = torch.tensor(data.mean, dtype=torch.float32).view(shape)
    std = torch.tensor(data.std, dtype=torch.float32).view(shape)
    return (x - mean) / std


def transfer_set(data: DataBundle, cfg: UnlabeledRule | None) -> DataBundle:
    """The distilled student's data: `data` with hidden labels and the unlabelled inputs appended.

    Returns `data` itself when `cfg` is None. Validation and test splits are unchanged; the counts are
    recorded in `extra` (`labeled`, `unlabeled`).

    Args:
        data: the labelled dataset the teacher trains on.
        cfg: the rule (a recipe's `data.unlabeled`), or None for no transfer set.

    Raises:
        DataError: a training split that is not in memory, or unreadable/mismatched unlabelled inputs.
    """
    if cfg is None:
        return data
    if data.vocab_size is not None:
        raise ConfigError(
            f"data.unlabeled hides class labels of images or feature vectors, but {data.name!r} is token data "
            "(each position's label is its next token). Fix: drop data.unlabeled; a language model's student "
            "budget is less text (data.limit) or fewer steps (student_train.max_steps)."
        )
    if data.task != "classification":
        # Hidden labels are -100 class indices: a multilabel row or regression target has no such marker.
        raise ConfigError(
            f"data.unlabeled hides class labels, but {data.name!r} is {data.task} data (float label rows). Fix: "
            "drop data.unlabeled, or train the student on teacher terms only (kd.terms without a label term)."
        )
    train = data.train
    if not isinstance(train, Split):
        raise DataError(
            "data.unlabeled needs the training split in memory; this dataset is read from disk. Fix: load it "
            "in memory (e.g. the npz reader) or drop data.unlabeled."
        )
    y = train.y
    if cfg.keep_per_class is not None or cfg.keep_fraction is not None:
        y = hide_labels(y, keep_per_class=cfg.keep_per_class, keep_fraction=cfg.keep_fraction, seed=cfg.seed)
    x = train.x
    added = 0
    if cfg.root is not None:
        extra_x = read_unlabeled(cfg.root, data)
        added = int(extra_x.shape[0])
        x = torch.cat([x, extra_x])
        y = torch.cat([y, torch.full((added,), IGNORE_INDEX, dtype=y.dtype)])
    n_labeled = int(labeled_mask(y).sum())
    extra = dict(data.extra)
    extra["labeled"] = f"{n_labeled} of {len(y)} training samples keep their labels (students only)"
    hidden = len(y) - n_labeled
    extra["unlabeled"] = f"{hidden} ({added} from {cfg.root})" if cfg.root else str(hidden)
    return replace(data, train=Split(x, y), extra=extra)


def labeled_part(data: DataBundle, *, equal_steps: bool = True) -> DataBundle:
    """`data` with only the labelled training samples: the scratch student's data (`data` if all are).

    Args:
        data: a bundle whose training labels may be `IGNORE_INDEX`.
        equal_steps: repeat the labelled samples (each as often as the others, within one sample) up to
            the size of `data.train`, so an epoch has as many batches as the distilled student's:
            at equal epochs the scratch student then takes as many optimizer steps, and the comparison
            says what the teacher adds, not what a longer budget adds.
    """
    keep = labeled_mask(data.train.labels)
    if bool(keep.all()):
        return data
    if not bool(keep.any()):
        raise DataError("no training sample keeps its label; raise data.unlabeled.keep_per_class.")
    index = torch.nonzero(keep).flatten()
    if equal_steps:
        index = index.repeat(math.ceil(len(keep) / len(index)))[: len(keep)]
    return replace(data, train=data.train.take(index))


def what_students_saw(data: DataBundle, kd_data: DataBundle, teacher_checkpoint: str | None = None) -> str:
    """One line for the run's table: the training samples and labels each model learnt from.

    `teacher_checkpoint`: the teacher was trained elsewhere (`teacher.checkpoint`), not on `data`.
    """
    n = len(data.train)
    teacher = f"teacher: trained elsewhere ({teacher_checkpoint}); " if teacher_checkpoint else ""
    if kd_data is data:
        who = "students" if teacher_checkpoint else "teacher and students"
        return f"{teacher}{who}: the {n} labelled training samples"
    labeled = int(labeled_mask(kd_data.train.labels).sum())
    unlabeled = len(kd_data.train) - labeled
    teacher = teacher or f"teacher_train: all {n} labelled training samples; "
    return (
        f"{teacher}student_scratch: only the {labeled} that keep their "
        f"labels (repeated to {len(kd_data.train)} an epoch, the same steps); student_kd: those {labeled} labels "
        f"+ the teacher's outputs on {unlabeled} unlabelled samples"
    )
