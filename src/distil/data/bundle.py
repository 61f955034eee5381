"""The in-memory dataset every reader returns and every loop consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Split:
    """One split held in memory: `x` is (N, C, H, W) images or (N, F) feature vectors, float32 and already
    normalized; `y` is (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Sample `index` as ``{"inputs", "labels"}``: a Split is also a map-style dataset."""
        return {"inputs": self.x[index], "labels": self.y[index]}


@dataclass(frozen=True)
class DataBundle:
    """A dataset ready for training: splits, class names, normalization and the augmentation to use.

    Attributes:
        name: registry name of the dataset (e.g. "digits", "fashion-mnist").
        train, val, test: the splits; `val` may be empty (0 samples) when val_fraction is 0.
        class_names: one name per class; `num_classes == len(class_names)`.
        mean, std: per-channel (images) or per-feature (feature vectors) normalization that was applied
            to `x` (needed again at deployment).
        augment: the standard train-time augmentation for this data: "none", "crop", or "crop_flip".
        crop_padding: zero padding (pixels) used by random crops.
        source: where the data was read from (a path or a package name), for the run record.
        extra: notes on how the data was read (e.g. ``test_split``: a test split carved from train data).
        task: the task whose metrics measure models on this data (a `distil.measure.TASKS` name).
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    crop_padding: int = 0
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    task: str = "classification"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample: (C, H, W) for images, (F,) for feature vectors."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def is_tabular(self) -> bool:
        """Whether samples are feature vectors (F,) rather than images (C, H, W)."""
        return len(self.input_shape) == 1

    @property
    def in_channels(self) -> int:
        """What the model registry gets as `in_channels`: C for images, F for feature vectors.

        A feature vector is passed on as F channels of a 1x1 image, so every factory's
        (in_channels, image_size) signature still describes the input: in_channels * image_size**2
        values per sample.
        """
        return self.input_shape[0]

    @property
    def image_size(self) -> int:
        """What the model registry gets as `image_size`: H for images, 1 for feature vectors."""
        return 1 if self.is_tabular else self.input_shape[1]

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for run records and checkpoint sidecars."""
        summary: dict[str, object] = {
            "name": self.name,
            "source": self.source,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "augment": self.augment,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
        }
        if self.extra:
            # Only when present, so the summaries (and teacher-cache keys) of other data do not change.
            summary["extra"] = dict(self.extra)
        return summary
