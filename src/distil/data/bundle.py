"""The in-memory dataset every reader returns and every loop consumes."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from distil.data.batch import INDEX, INPUTS, LABELS

# The task name of token data (distil.data.text.LANGUAGE_MODELING, a TASKS name in distil.measure); here
# so the bundle can size language models without importing the text readers.
LANGUAGE_MODELING = "language-modeling"


@runtime_checkable
class SampleSplit(Protocol):
    """What every consumer of a split (loop, evaluation, caches, calibration, export) may use.

    Two kinds implement it: :class:`Split` (normalized tensors in memory, the fast path) and
    :class:`distil.data.npydir.ArraySplit` (samples read on demand from arrays on disk). Only the
    in-memory fast paths (``TensorLoader``, ``predict_split``) read ``Split.x`` directly.

    * ``len(split)``, ``split[i] -> {"inputs", "labels"}``: a map-style dataset (``DatasetLoader``);
    * ``labels``: (N,) int64, always in memory (stratification, class checks, accuracy); for the
      multilabel and regression tasks (N, L) / (N,) / (N, D) float32 targets (`distil.data.targets`);
    * ``sample_shape``: (C, H, W) or (F,);
    * ``head(n)``: the first n inputs as one tensor (example inputs, calibration);
    * ``batches(batch_size)``: batch dicts ``{"inputs", "labels", "index"}`` in order (evaluation,
      cache building, prediction);
    * ``take(index)``: the sub-split of those sample positions (a view for on-disk splits);
    * ``update_hash(h)``: feed the normalized contents to a hashlib object (cache keys); both kinds
      give the same digest for the same values.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]: ...

    @property
    def labels(self) -> torch.Tensor: ...

    @property
    def sample_shape(self) -> tuple[int, ...]: ...

    def head(self, n: int) -> torch.Tensor: ...

    def batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[dict[str, Any]]: ...

    def take(self, index: torch.Tensor) -> SampleSplit: ...

    def update_hash(self, h: Any) -> None: ...


def hash_tensor(h: Any, t: torch.Tensor) -> None:
    """Feed dtype, shape and bytes of `t` to the hashlib object `h` (the teacher-cache key's format)."""
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
    # A byte view hashes any dtype (bf16 included) without a numpy conversion of the values.
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def batch_ranges(
    n: int, batch_size: int, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, int]]:
    """(begin, end) of consecutive batches over positions [start, stop) of a split of n samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stop = n if stop is None else min(stop, n)
    for b in range(start, stop, batch_size):
        yield b, min(b + batch_size, stop)


HASH_CHUNK = 1024
"""Samples per read when an on-disk split hashes its contents (any size gives the same digest)."""


class RangeSplit(abc.ABC):
    """What every on-disk split shares: labels in memory, inputs read by position range.

    A subclass sets `_labels` ((N,) int64) and `_shape` (one sample's shape), and implements `__len__`,
    `_read(start, stop)` (the normalized inputs of positions start..stop-1) and `take`. Everything else of
    :class:`SampleSplit` follows from those, the same way for every format.
    """

    _labels: torch.Tensor
    _shape: tuple[int, ...]

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _read(self, start: int, stop: int) -> torch.Tensor: ...

    @abc.abstractmethod
    def take(self, index: torch.Tensor) -> SampleSplit: ...

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            index += len(self)
        return {INPUTS: self._read(index, index + 1)[0], LABELS: self._labels[index]}

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._shape

    def head(self, n: int) -> torch.Tensor:
        return self._read(0, min(n, len(self)))

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        for b, e in batch_ranges(len(self), batch_size, start, stop):
            yield {INPUTS: self._read(b, e), LABELS: self._labels[b:e], INDEX: torch.arange(b, e)}

    def update_hash(self, h: Any) -> None:
        # The header and bytes `hash_tensor` would feed for the whole (N, ...) float32 tensor, read in
        # chunks, so an on-disk split hashes like the same samples held in memory.
        h.update(f"{torch.float32}:{(len(self), *self._shape)}".encode())
        for batch in self.batches(HASH_CHUNK):
            h.update(batch[INPUTS].contiguous().reshape(-1).view(torch.uint8).numpy())
        hash_tensor(h, self._labels)


@dataclass(frozen=True)
class Split:
    """One split held in memory: `x` is (N, C, H, W) images or (N, F) feature vectors, float32 and already
    normalized; `y` is (N,) int64 (or float targets, see `distil.data.targets`). Implements
    :class:`SampleSplit`."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Sample `index` as ``{"inputs", "labels"}``: a Split is also a map-style dataset."""
        return {INPUTS: self.x[index], LABELS: self.y[index]}

    @property
    def labels(self) -> torch.Tensor:
        return self.y

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def head(self, n: int) -> torch.Tensor:
        """The first `n` inputs, (n, ...)."""
        return self.x[:n]

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Consecutive batches ``{"inputs", "labels", "index"}`` over positions [start, stop), in order."""
        for b, e in batch_ranges(len(self), batch_size, start, stop):
            yield {INPUTS: self.x[b:e], LABELS: self.y[b:e], INDEX: torch.arange(b, e)}

    def take(self, index: torch.Tensor) -> Split:
        """The samples at `index` (positions in this split), as a new in-memory Split."""
        return Split(self.x[index], self.y[index])

    def update_hash(self, h: Any) -> None:
        hash_tensor(h, self.x)
        hash_tensor(h, self.y)


@dataclass(frozen=True)
class DataBundle:
    """A dataset ready for training: splits, class names, normalization and the augmentation to use.

    Attributes:
        name: registry name of the dataset (e.g. "digits", "fashion-mnist").
        train, val, test: the splits (:class:`Split` in memory, or any :class:`SampleSplit`, e.g. read
            from disk); `val` may be empty (0 samples) when val_fraction is 0.
        class_names: one name per class; `num_classes == len(class_names)`.
        mean, std: per-channel (images) or per-feature (feature vectors) normalization that was applied
            to `x` (needed again at deployment).
        augment: the standard train-time augmentation for this data: "none", "crop", or "crop_flip".
        crop_padding: zero padding (pixels) used by random crops.
        source: where the data was read from (a path or a package name), for the run record.
        extra: notes on how the data was read (e.g. ``test_split``: a test split carved from train data).
        task: the task whose metrics measure models on this data (a `distil.measure.TASKS` name):
            chosen by the reader or the labels, or named by a recipe (`distil.data.targets`).
        options: the reader options that decided the samples (an image folder's resolved
            ``image_size`` and ``channels``, its ``on_bad_sample``), recorded in checkpoint sidecars
            so a later command on the same files rebuilds the same preprocessing.
    """

    name: str
    train: SampleSplit
    val: SampleSplit
    test: SampleSplit
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    crop_padding: int = 0
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    task: str = "classification"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        """Whether every split is an in-memory :class:`Split` (the loop then takes the fast path)."""
        return all(isinstance(s, Split) for s in (self.train, self.val, self.test))

    @property
    def is_tokens(self) -> bool:
        """Whether samples are token-id sequences (T,) of a language-modelling corpus."""
        return self.task == LANGUAGE_MODELING

    @property
    def vocab_size(self) -> int | None:
        """The vocabulary of token-id inputs (text data: a language-modelling corpus or classified text,
        ``extra["vocab_size"]``), or None when samples are not token ids (images, feature vectors)."""
        vocab = self.extra.get("vocab_size")
        return int(vocab) if vocab else None

    @property
    def num_classes(self) -> int:
        """The model's output count: the class names, or for token data the tokenizer's vocabulary size
        (``extra["vocab_size"]``), since a language model predicts one of `vocab_size` next tokens."""
        if self.is_tokens and not self.class_names:
            return int(self.extra.get("vocab_size", 0))
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample: (C, H, W) for images, (F,) for feature vectors."""
        return self.train.sample_shape

    @property
    def is_tabular(self) -> bool:
        """Whether samples are feature vectors (F,) rather than images (C, H, W) or token ids (T,)."""
        return len(self.input_shape) == 1 and self.vocab_size is None

    @property
    def in_channels(self) -> int:
        """What the model registry gets as `in_channels`: C for images, F for feature vectors, 1 for token ids.

        A feature vector is passed on as F channels of a 1x1 image, so every factory's
        (in_channels, image_size) signature still describes the input: in_channels * image_size**2
        values per sample.
        """
        return 1 if self.vocab_size is not None else self.input_shape[0]

    @property
    def image_size(self) -> int:
        """What the model registry gets as `image_size`: H for images, 1 for feature vectors and tokens."""
        return 1 if len(self.input_shape) == 1 else self.input_shape[1]

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
        if self.options:
            summary["options"] = dict(self.options)
        if self.task not in ("classification", LANGUAGE_MODELING):
            # Only for the other tasks, so classification summaries (and cache keys) do not change.
            summary["task"] = self.task
        return summary
