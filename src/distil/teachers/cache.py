"""Teacher-output cache: run the teacher once over the training set, reuse its logits for every epoch.

Distillation costs a teacher forward pass per student step. When the teacher sees the same inputs
every epoch (no random augmentation) its outputs never change, so they are computed once, stored on
disk as a memory-mapped float16 table (optionally only the top-k logits per sample, for large class
counts) and looked up by `batch["index"]` - the position of each sample in the split, which
`TensorLoader` yields with every batch.

Shapes: a classifier's (N, K) logits are stored as an (N, K) table; a sequence model's (N, T, V) logits
(one distribution per position, e.g. next-token logits) as an (N, T, V) table, so a sample id and a
position address one row of V. Lookups return the shape the live teacher gives, (B, K) or (B, T, V);
top-k keeps the k largest along the last dimension, with the fill below per sample *and position*.

Top-k storage and the temperature: a top-k cache represents the teacher's distribution at temperature
T as the exact top-k logits plus one fill logit per tail class, chosen so that the tail's total
probability at T is the teacher's exactly (spread uniformly over the tail classes). The tail's mass
depends on T (log sum_tail exp(z/T) is not a function of its T=1 value), so one fill column is stored
per temperature the run uses (`temperatures`: every epoch's value of a `kd.temperature_final`
schedule, and T=1) and the cache is keyed on them. `CachedTeacher.follow(loss.current_temperature)`
makes each lookup use the current epoch's column. What is approximated is only how the tail's mass is
spread over its classes (uniformly); the top-k probabilities and the tail mass at T are exact up to the
float16 rounding of the stored logits.

The cache lives in `<cache_dir>/<fingerprint>/`, where the fingerprint is a SHA-256 of the teacher's
weights, the dataset's description and training-split contents, the augmentation name, and the format
with its parameters (top-k: k and the temperatures). A changed teacher, dataset, split or transform
gives a new fingerprint (a miss), so stale outputs are never used; the same ones in a later run give a
hit. Keys, layout, metadata and the atomic build belong to `distil.teachers.store`, shared with the
sparse sequence forms (`distil.teachers.seqcache`); this module holds the dense reader and the choice
between the cache and a live teacher.

With random augmentation each step's inputs are new random crops/flips, so cached outputs of the
un-augmented images would be a different, weaker target: `choose_teacher_source` then runs the
teacher live and says why - unless the run asks for *views* (`teacher_cache: {views: V}`). Then every
sample has V augmented views whose parameters are a pure function of (seed, sample id, view)
(`distil.data.augment`); the teacher runs once over each (V passes over the data instead of one per
epoch) and its output on exactly that input is stored in row `view * N + id` of the table. In epoch e
the loader replays view `v(e, id)` bit for bit and the batch carries `batch["view"]`, so teacher and
student see the same pixels (consistent teaching, Beyer et al. 2022). V and the augmentation's full
description (operations, options, seed, normalization, mixing) are part of the fingerprint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distil.data import DataBundle, SampleSplit
from distil.data.batch import INDEX, LABELS, VIEW
from distil.data.targets import CLASSIFICATION, outputs_are_logits
from distil.errors import ConfigError
from distil.registry import unknown_name_message
from distil.teachers import store
from distil.teachers.store import (
    FORMAT_VERSION,
    FullLogits,
    RowFormat,
    TeacherViews,
    TopK,
    cache_temperatures,
    default_cache_dir,
)

if TYPE_CHECKING:
    from distil.losses.registry import TeacherNeeds

__all__ = [
    "CACHE_MODES",
    "FORMAT_VERSION",
    "CacheInfo",
    "CachedTeacher",
    "TeacherViews",
    "build_cache",
    "cache_temperatures",
    "choose_teacher_source",
    "default_cache_dir",
    "fingerprint",
    "main_process_first",
    "open_or_build",
]

CACHE_MODES = ("auto", "off", "on")


def _dense_format(topk: int | None, temperatures: Any = (1.0,), task: str = CLASSIFICATION) -> RowFormat:
    if topk is not None:
        return TopK(topk, tuple(temperatures))
    # Logits tolerate float16; regression values and embeddings would be rounded (2000 +- 1 to integers).
    return FullLogits() if outputs_are_logits(task) else FullLogits(precision="float32")


def fingerprint(
    teacher: nn.Module,
    data: DataBundle,
    *,
    augment: str,
    topk: int | None = None,
    temperatures: tuple[float, ...] = (1.0,),
    views: TeacherViews | None = None,
    form: RowFormat | None = None,
) -> str:
    """The cache key (`distil.teachers.store.cache_key`) of full logits, top-k, or any `form`.

    Args:
        teacher: the teacher module (its state_dict bytes, buffers included, and class name are hashed).
        data: the dataset; its `describe()` and the inputs and labels of `data.train` are hashed.
        augment: the training transform's name.
        topk: how many logits per sample are stored (None = all).
        temperatures: those a top-k cache stores tail masses for.
        views: a views cache's V and augmentation (`TeacherViews.describe`).
        form: a row format (overrides `topk`/`temperatures`).

    Returns:
        64 hex digits.
    """
    fmt = form if form is not None else _dense_format(topk, temperatures, data.task)
    return store.cache_key(teacher, data, fmt, augment=augment, views=views)


def choose_teacher_source(
    mode: str,
    augment: str,
    *,
    needs: TeacherNeeds | None = None,
    teachers: int = 1,
    views: int | None = None,
    sharded: bool = False,
    on_policy: float = 0.0,
) -> tuple[str, str]:
    """Decide between the cache and a live teacher, and say why: the one place this is decided.

    Args:
        mode: "auto" (cache when it is exact), "on" (cache, or an error saying why it cannot be used),
            or "off" (always live).
        augment: the resolved training augmentation ("none", "crop", "crop_flip").
        needs: what the loss declares it needs from the teacher (`ComposedLoss.teacher_needs`, or a
            user loss's `teacher_needs` attribute). None, a loss that declares nothing, may need more
            than the teacher's logits (e.g. features hooked during its forward pass), so "auto" runs the
            teacher live; "on" uses cached logits with it.
        teachers: how many teachers are mixed (an ensemble runs live: the cache holds one teacher).
        views: `teacher_cache.views`: with random augmentation, the teacher's outputs are cached on V
            replayed views per sample instead of switching the cache off.
        sharded: the teacher is sharded across processes (`train.fsdp`): each of its forward passes
            needs every process, while a cache is built by one, so it runs live.
        on_policy: `student_train.generation.lmbda`: the probability that a batch's completions are the
            student's own, sampled during training; above 0 the teacher must score text no cache holds.

    Returns:
        ("cache" | "live", reason).

    Raises:
        ConfigError: unknown mode, or "on" with random augmentation, an ensemble, a loss that needs the
            live teacher, or on-policy generation.
    """
    if mode not in CACHE_MODES:
        raise ConfigError(unknown_name_message("teacher_cache mode", mode, CACHE_MODES))
    if mode == "off":
        return "live", "teacher_cache=off"
    if on_policy > 0:
        if mode == "on":
            raise ConfigError(
                f"teacher_cache=on cannot be used with on-policy distillation (generation.lmbda={on_policy:g}): "
                "a share of the batches are completions the student samples during training, which the "
                "teacher must score as they are made. Fix: student_train.teacher_cache.mode=auto or off "
                "(the teacher runs live), or student_train.generation.lmbda=0."
            )
        return "live", (
            f"on-policy distillation (generation.lmbda={on_policy:g}): the teacher scores completions the "
            "student samples during training, which no cache holds"
        )
    if sharded:
        if mode == "on":
            raise ConfigError(
                "teacher_cache=on cannot be used with fsdp=true: the teacher is sharded across the "
                "processes, so each of its forward passes needs all of them, while a cache is built by "
                "one. Fix: teacher_cache=auto or off (the teacher runs live), or fsdp=false."
            )
        return "live", "the teacher is sharded across processes (fsdp): every process runs it live, together"
    if augment != "none" and views is None:
        if mode == "on":
            raise ConfigError(
                f"teacher_cache=on needs deterministic inputs, but the training augmentation is {augment!r}: "
                "each step sees new random crops/flips, so stored outputs of the plain images would be a "
                "different target. Fix: set student_train.teacher_cache.views (e.g. 4: the teacher's outputs "
                "on V replayed views per sample), student_train.augment=none, or teacher_cache=auto/off."
            )
        return "live", (
            f"augmentation {augment!r} draws new random inputs every step, so the teacher's outputs "
            "change every epoch and cannot be reused"
        )
    live_reason = None
    if teachers > 1:
        live_reason = f"the target mixes {teachers} teachers; the cache holds one teacher's logits"
    elif needs is not None and needs.live:
        live_reason = needs.reason or "the loss needs the live teacher"
    if live_reason is not None:
        if mode == "on":
            raise ConfigError(
                f"teacher_cache=on cannot be used here: {live_reason}. Fix: teacher_cache=auto or off."
            )
        return "live", live_reason
    if needs is None and mode == "auto":
        return "live", (
            "the loss does not declare what it needs from the teacher (it may use hooked features); set "
            "teacher_cache=on, or give it a `teacher_needs = TeacherNeeds(live=False)` attribute, to use "
            "cached logits with it"
        )
    why = f"; {needs.reason}" if needs is not None and needs.reason else ""
    if augment != "none":
        return "cache", (
            f"augmentation {augment!r} is replayed from {views} cached view(s) per sample: the teacher's "
            f"outputs on exactly those inputs are computed once and reused{why}"
        )
    return (
        "cache",
        f"inputs are deterministic (augment=none): teacher logits are computed once and reused{why}",
    )


@dataclass(frozen=True)
class CacheInfo:
    """Where a cache lives and whether this run built it (miss) or reused it (hit)."""

    path: str
    fingerprint: str
    hit: bool
    seconds: float
    rows: int
    num_classes: int
    topk: int | None
    positions: int | None = None  # T for (N, T, V) sequence outputs; None for (N, K)
    views: int | None = None  # V of a views cache (rows = V * N)
    form: str = "full"  # the row format: "full", "topk" or "sampled" (distil.teachers.store)
    bytes_per_token: float | None = None  # stored bytes per sample (per position for sequences)
    build: dict[str, Any] | None = None  # the build's batch size, chunk, peak memory, seconds (store.build)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, opened: store.Opened) -> CacheInfo:
        """The info of a store `open_or_build` returned."""
        meta = opened.store.meta
        return cls(
            path=str(opened.store.path),
            fingerprint=opened.key,
            hit=opened.hit,
            seconds=opened.seconds,
            rows=int(meta["rows"]),
            num_classes=int(meta["num_classes"]),
            topk=meta["params"]["k"] if meta["form"] == "topk" else None,
            positions=meta.get("positions"),
            views=meta.get("views"),
            form=meta["form"],
            bytes_per_token=float(meta["bytes_per_token"]),
            build=meta.get("build"),
        )


class CachedTeacher:
    """A `TeacherFn`: `cached(batch) -> (B, K) or (B, T, V) float32 logits`, read by `batch["index"]`.

    Reads a full or top-k store (`distil.teachers.store`) densely. With top-k storage the missing
    logits are filled with one value per sample and temperature, chosen so that at that temperature
    the top-k probabilities and the total tail probability equal the teacher's (module docstring); the
    temperature is `lookup`'s argument, else the one `follow` tracks, else 1.

    Args:
        path: a cache directory with a full or top-k store.

    Raises:
        ConfigError: `path` is not a complete cache, or holds sampled targets (`SparseCachedTeacher`).
    """

    def __init__(self, path: str | Path) -> None:
        opened = store.open_store(path)
        if not isinstance(opened.format, FullLogits | TopK):
            raise ConfigError(
                f"{str(path)!r} holds {opened.format.name} targets, which are read as sparse targets "
                "(distil.teachers.seqcache.SparseCachedTeacher), not as dense logits."
            )
        self.path = opened.path
        self.meta: dict[str, Any] = opened.meta
        self.format: FullLogits | TopK = opened.format
        self.arrays = opened.arrays
        self.num_classes: int = opened.num_classes
        self.topk: int | None = self.format.k if isinstance(self.format, TopK) else None
        # (N,) for classifiers, (N, T) for sequence outputs: one stored row of logits per position.
        self.positions: int | None = opened.positions
        # A views cache holds V tables of N rows one after the other: row view * N + id.
        self.views: int | None = self.meta.get("views")
        self.samples: int = int(self.meta.get("samples") or opened.rows)
        self.temperatures: tuple[float, ...] = (
            self.format.temperatures if isinstance(self.format, TopK) else (1.0,)
        )
        self._temperature: Callable[[], float] | None = None

    @property
    def values(self) -> torch.Tensor:
        """The stored values: all outputs (float16 logits, float32 values), or the top-k logits."""
        name = self.format.values_file if isinstance(self.format, FullLogits) else "values.f16"
        return self.arrays[name]

    def follow(self, temperature: Callable[[], float]) -> CachedTeacher:
        """Look up the tail at `temperature()` (e.g. `ComposedLoss.current_temperature`) at each call."""
        self._temperature = temperature
        return self

    def _fill_column(self, temperature: float | None) -> int:
        if temperature is None:
            temperature = self._temperature() if self._temperature is not None else 1.0
        assert isinstance(self.format, TopK)
        return self.format.column(temperature)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def to(self, device: torch.device | str) -> CachedTeacher:
        """Hold the table on `device` (an accelerator gathers rows there without a host round trip)."""
        device = torch.device(device)
        if device.type != "cpu":
            self.arrays = {name: array.to(device) for name, array in self.arrays.items()}
        return self

    def lookup(self, index: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Float32 logits of the rows `index`: `(B, num_classes)`, or `(B, T, V)` for sequence outputs.

        Args:
            index: row ids (sample positions in the split, or `view * N + id`).
            temperature: top-k only: the temperature whose tail mass the fill logits keep (default: the
                followed one, else 1). Full-logit caches ignore it.

        Raises:
            ConfigError: a top-k cache that stores no fill for `temperature`.
        """
        idx = index.to(self.values.device, torch.long)
        if isinstance(self.format, FullLogits):
            return self.format.dense(self.arrays, idx, temperature)
        return self.format.dense(self.arrays, idx, self._fill_column(temperature), self.num_classes)

    def rows(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The table rows of a batch: its sample ids, or for a views cache `view * N + id`."""
        return batch_rows(batch, self.views, self.samples)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.get(LABELS)
        return self.lookup(self.rows(batch)).to(labels.device if labels is not None else self.values.device)


def batch_rows(batch: dict[str, torch.Tensor], views: int | None, samples: int) -> torch.Tensor:
    """The cache rows of a batch: `batch["index"]`, or `view * N + index` for a views cache.

    Raises:
        ConfigError: a batch without the ids (or views) the cache is addressed by.
    """
    if INDEX not in batch:
        raise ConfigError(
            "a cached teacher needs batch['index'] (sample positions in the split), which TensorLoader "
            "yields; pass batches from TensorLoader or use the live teacher (teacher_cache.mode=off)."
        )
    if views is None:
        return batch[INDEX]
    if VIEW not in batch:
        raise ConfigError(
            f"this teacher cache stores {views} augmented views per sample and needs batch['view'], "
            "which the loaders yield with views=V (distill passes student_train.teacher_cache.views)."
        )
    return batch[VIEW].to(batch[INDEX].device) * samples + batch[INDEX]


def build_cache(
    teacher: nn.Module,
    split: SampleSplit,
    directory: str | Path,
    *,
    key: str,
    topk: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    temperatures: tuple[float, ...] = (1.0,),
    extra_meta: dict[str, Any] | None = None,
    views: TeacherViews | None = None,
) -> Path:
    """Write a full-logit (or, with `topk`, top-k) cache of `teacher` over `split` (`store.build`)."""
    fmt = _dense_format(topk, temperatures)
    return store.build(
        teacher,
        split,
        directory,
        fmt,
        key=key,
        batch_size=batch_size,
        device=device,
        channels_last=channels_last,
        views=views,
        extra_meta=extra_meta,
    )


def open_or_build(
    teacher: nn.Module,
    data: DataBundle,
    *,
    augment: str = "none",
    cache_dir: str | Path | None = None,
    topk: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    temperatures: Any = (1.0,),
    views: TeacherViews | None = None,
) -> tuple[CachedTeacher, CacheInfo]:
    """The dense cache for (teacher, data.train, augment, topk, views): reused when it exists, else built.

    `temperatures` (top-k only) are those the run's loss uses; the cache stores the tail mass at each
    (module docstring) and is keyed on them. `views`: the teacher's outputs on V augmented views per
    sample (module docstring); the views and their augmentation are part of the key.

    Returns:
        (the cached teacher on CPU, info saying where it is and whether it was a hit).
    """
    opened = store.open_or_build(
        teacher,
        data,
        _dense_format(topk, temperatures, data.task),
        augment=augment,
        views=views,
        cache_dir=cache_dir,
        batch_size=batch_size,
        device=device,
        channels_last=channels_last,
    )
    return CachedTeacher(opened.store.path), CacheInfo.of(opened)


@contextlib.contextmanager
def _noop() -> Iterator[None]:
    yield


def main_process_first(accelerator: Any) -> contextlib.AbstractContextManager[None]:
    """Let rank 0 build a cache while the other ranks wait, then they all open it (a hit for them)."""
    return accelerator.main_process_first() if accelerator is not None else _noop()
