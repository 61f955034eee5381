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
weights, the dataset's description and training-split contents, the augmentation name, top-k and (for
top-k) the temperatures. A
changed teacher, dataset, split or transform gives a new fingerprint (a miss), so stale outputs are
never used; the same ones in a later run give a hit. A directory is built under a temporary name and
renamed into place, so a killed build never leaves a half-written cache that looks complete.

With random augmentation each step's inputs are new random crops/flips, so cached outputs of the
un-augmented images would be a different, weaker target: `choose_teacher_source` then runs the
teacher live and says why - unless the run asks for *views* (`teacher_cache_views: V`). Then every
sample has V augmented views whose parameters are a pure function of (seed, sample id, view)
(`distil.data.augment`); the teacher runs once over each (V passes over the data instead of one per
epoch) and its output on exactly that input is stored in row `view * N + id` of the table. In epoch e
the loader replays view `v(e, id)` bit for bit and the batch carries `batch["view"]`, so teacher and
student see the same pixels (consistent teaching, Beyer et al. 2022). V and the augmentation's full
description (operations, options, seed, normalization, mixing) are part of the fingerprint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from distil.data import DataBundle, SampleSplit
from distil.data.augment import Augmenter
from distil.data.loader import sample_inputs
from distil.errors import ConfigError
from distil.fileio import atomic_dir, atomic_write_json
from distil.registry import unknown_name_message
from distil.teachers.live import freeze

if TYPE_CHECKING:
    from distil.losses.registry import TeacherNeeds

FORMAT_VERSION = 2
CACHE_MODES = ("auto", "off", "on")
_META = "meta.json"
_VALUES = "values.f16"
_INDICES = "indices.i32"
_FILL = "fill.f32"
# A tail more than this many softened logits (z/T) below the k-th is irrelevant (< e^-30 of its
# probability per class); the floor keeps the fill finite when the tail logits are -inf.
_MIN_TAIL_LOGIT_GAP = 30.0
_T_DIGITS = 6  # temperatures are matched after rounding to this many decimals


@dataclass(frozen=True)
class TeacherViews:
    """V augmented views per sample: what a views cache stores the teacher's outputs on.

    Attributes:
        augmenter: the training augmentation (`distil.train.engine.augmenter_for`: the loader's own).
        count: V, views per sample.
    """

    augmenter: Augmenter
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"teacher_cache_views must be >= 1, got {self.count}.")

    def describe(self) -> dict[str, Any]:
        """The cache-key part: V and everything that determines the augmented pixels."""
        return {"count": self.count, **self.augmenter.describe()}


def _input_batches(
    split: SampleSplit, batch_size: int, views: TeacherViews | None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first table row, teacher inputs) in table order: the samples, or each view of them in turn."""
    if views is None:
        for start, batch in zip(range(0, len(split), batch_size), split.batches(batch_size), strict=True):
            yield start, batch["inputs"]
        return
    n = len(split)

    def fetch(ids: torch.Tensor) -> torch.Tensor:  # the mixing partners of a view, as the loaders fetch them
        return sample_inputs(split, ids)

    for view in range(views.count):
        for start, batch in zip(range(0, n, batch_size), split.batches(batch_size), strict=True):
            ids = batch["index"] if "index" in batch else torch.arange(start, start + len(batch["inputs"]))
            yield view * n + start, views.augmenter(batch["inputs"], ids, view, fetch=fetch)


def cache_temperatures(temperatures: Any = ()) -> tuple[float, ...]:
    """The sorted distinct temperatures a top-k cache stores tail masses for: `temperatures` and 1.0."""
    return tuple(sorted({round(float(t), _T_DIGITS) for t in (*temperatures, 1.0)}))


def default_cache_dir() -> Path:
    """`$DISTIL_CACHE_DIR` when set, else `~/.cache/distil/teacher`."""
    env = os.environ.get("DISTIL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distil" / "teacher"


def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
    # A byte view hashes any dtype (bf16 included) without a numpy conversion of the values.
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def fingerprint(
    teacher: nn.Module,
    data: DataBundle,
    *,
    augment: str,
    topk: int | None = None,
    temperatures: tuple[float, ...] = (1.0,),
    views: TeacherViews | None = None,
    form: dict[str, Any] | None = None,
) -> str:
    """The cache key: SHA-256 of teacher weights + dataset description + train-split contents + transform.

    Args:
        teacher: the teacher module (its state_dict bytes, buffers included, and class name are hashed).
        data: the dataset; its `describe()` (name, source, sizes, normalization, classes) and the
            normalized inputs and labels of `data.train` are hashed, so a different subset, split seed or
            preprocessing changes the key.
        augment: the training transform's name (only "none" can be cached, but it is part of the key).
        topk: how many logits per sample are stored (None = all).
        temperatures: those a top-k cache stores tail masses for (ignored without top-k: full logits
            serve every temperature).
        views: a views cache's V and augmentation (`TeacherViews.describe`).
        form: a sparse sequence form's settings (`distil.teachers.seqcache`: form, k, temperature,
            proposal, seed); None for the logit tables of this module.

    Returns:
        64 hex digits.
    """
    h = hashlib.sha256(f"distil-teacher-cache-v{FORMAT_VERSION}".encode())
    h.update(f"{type(teacher).__module__}.{type(teacher).__qualname__}".encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, tensor)
    h.update(json.dumps(data.describe(), sort_keys=True, default=str).encode())
    key: dict[str, Any] = {"augment": augment, "topk": topk}
    if topk is not None:
        key["temperatures"] = list(cache_temperatures(temperatures))
    if views is not None:
        key["views"] = views.describe()
    if form is not None:
        key["form"] = form
    h.update(json.dumps(key, sort_keys=True, default=str).encode())
    data.train.update_hash(h)  # the same bytes as hashing train.x, train.y of an in-memory split
    return h.hexdigest()


def choose_teacher_source(
    mode: str,
    augment: str,
    *,
    needs: TeacherNeeds | None = None,
    teachers: int = 1,
    views: int | None = None,
    sharded: bool = False,
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
        views: `teacher_cache_views`: with random augmentation, the teacher's outputs are cached on V
            replayed views per sample instead of switching the cache off.
        sharded: the teacher is sharded across processes (`train.fsdp`): each of its forward passes
            needs every process, while a cache is built by one, so it runs live.

    Returns:
        ("cache" | "live", reason).

    Raises:
        ConfigError: unknown mode, or "on" with random augmentation, an ensemble, or a loss that needs the
            live teacher.
    """
    if mode not in CACHE_MODES:
        raise ConfigError(unknown_name_message("teacher_cache mode", mode, CACHE_MODES))
    if mode == "off":
        return "live", "teacher_cache=off"
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
                "different target. Fix: set student_train.teacher_cache_views (e.g. 4: the teacher's outputs "
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
    form: str = "full"  # "full" or a sparse sequence form (distil.teachers.seqcache): "topk", "sampled"
    bytes_per_token: float | None = None  # stored bytes per sample (per position for sequences)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CachedTeacher:
    """A `TeacherFn`: `cached(batch) -> (B, K) or (B, T, V) float32 logits`, read by `batch["index"]`.

    The table is a read-only float16 `np.memmap`; `to(device)` copies it to an accelerator (on CPU
    it stays memory-mapped, so the OS pages in only what is read). With top-k storage the missing
    logits are filled with one value per sample and temperature, chosen so that at that temperature
    the top-k probabilities and the total tail probability equal the teacher's (module docstring); the
    temperature is `lookup`'s argument, else the one `follow` tracks, else 1.

    Args:
        path: a cache directory written by `build_cache`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = _read_meta(self.path)
        if meta is None:
            raise ConfigError(
                f"{str(self.path)!r} is not a complete teacher cache; rebuild it with build_cache."
            )
        self.meta: dict[str, Any] = meta
        rows, cols = meta["rows"], meta["cols"]
        self.num_classes: int = self.meta["num_classes"]
        self.topk: int | None = self.meta["topk"]
        # (N,) for classifiers, (N, T) for sequence outputs: one stored row of logits per position.
        self.positions: int | None = meta.get("positions")
        # A views cache holds V tables of N rows one after the other: row view * N + id.
        self.views: int | None = meta.get("views")
        self.samples: int = int(meta.get("samples") or rows)
        lead = _lead_shape(rows, self.positions)
        # mode "c" (copy-on-write) gives a writable array torch can wrap without a warning; the file
        # itself is never modified.
        self.values = torch.from_numpy(np.memmap(self.path / _VALUES, np.float16, "c", shape=(*lead, cols)))
        self.indices: torch.Tensor | None = None
        self.fill: torch.Tensor | None = None
        self.temperatures: tuple[float, ...] = tuple(meta.get("temperatures") or (1.0,))
        self._temperature: Callable[[], float] | None = None
        if self.topk is not None:
            self.indices = torch.from_numpy(
                np.memmap(self.path / _INDICES, np.int32, "c", shape=(*lead, cols))
            )
            shape = (*lead, len(self.temperatures))
            self.fill = torch.from_numpy(np.memmap(self.path / _FILL, np.float32, "c", shape=shape))

    def follow(self, temperature: Callable[[], float]) -> CachedTeacher:
        """Look up the tail at `temperature()` (e.g. `ComposedLoss.current_temperature`) at each call."""
        self._temperature = temperature
        return self

    def _fill_column(self, temperature: float | None) -> int:
        if temperature is None:
            temperature = self._temperature() if self._temperature is not None else 1.0
        t = round(float(temperature), _T_DIGITS)
        if t not in self.temperatures:
            raise ConfigError(
                f"this top-k teacher cache stores tail masses for temperatures {list(self.temperatures)}, "
                f"not {t}; open it with open_or_build(..., temperatures=[{t}, ...]) (distill does so from "
                "the loss's temperature schedule)."
            )
        return self.temperatures.index(t)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def to(self, device: torch.device | str) -> CachedTeacher:
        """Hold the table on `device` (an accelerator gathers rows there without a host round trip)."""
        device = torch.device(device)
        if device.type != "cpu":
            self.values = self.values.to(device)
            if self.indices is not None and self.fill is not None:
                self.indices, self.fill = self.indices.to(device), self.fill.to(device)
        return self

    def lookup(self, index: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Float32 logits of the samples `index`: `(B, num_classes)`, or `(B, T, V)` for sequence outputs.

        Args:
            index: sample ids (positions in the split).
            temperature: top-k only: the temperature whose tail mass the fill logits keep (default: the
                followed one, else 1). Full-logit caches ignore it.

        Raises:
            ConfigError: a top-k cache that stores no fill for `temperature`.
        """
        idx = index.to(self.values.device, torch.long)
        values = self.values.index_select(0, idx).float()
        if self.indices is None or self.fill is None:
            return values
        column = self._fill_column(temperature)
        fill = self.fill[..., column : column + 1].index_select(0, idx)
        out = fill.expand(*fill.shape[:-1], self.num_classes).contiguous()
        return out.scatter_(-1, self.indices.index_select(0, idx).long(), values)

    def rows(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The table rows of a batch: its sample ids, or for a views cache `view * N + id`."""
        if "index" not in batch:
            raise ConfigError(
                "a cached teacher needs batch['index'] (sample positions in the split), which TensorLoader "
                "yields; pass batches from TensorLoader or use the live teacher (teacher_cache=off)."
            )
        if self.views is None:
            return batch["index"]
        if "view" not in batch:
            raise ConfigError(
                f"this teacher cache stores {self.views} augmented views per sample and needs batch['view'], "
                "which the loaders yield with views=V (distill passes train.teacher_cache_views)."
            )
        return batch["view"].to(batch["index"].device) * self.samples + batch["index"]

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.get("labels")
        return self.lookup(self.rows(batch)).to(labels.device if labels is not None else self.values.device)


def _lead_shape(rows: int, positions: int | None) -> tuple[int, ...]:
    """The table's shape before its last (logits) dimension: (N,) or (N, T)."""
    return (rows,) if positions is None else (rows, positions)


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The cache's metadata when the directory is complete and its files have the sizes it records."""
    try:
        meta = json.loads((path / _META).read_text(encoding="utf-8"))
        # A sequence cache holds T rows of logits per sample: count its rows as N * T.
        rows, cols = int(meta["rows"]) * int(meta.get("positions") or 1), int(meta["cols"])
        expected = {_VALUES: rows * cols * 2}
        if meta.get("topk") is not None:
            expected |= {_INDICES: rows * cols * 4, _FILL: rows * 4 * len(meta["temperatures"])}
        if meta.get("format_version") != FORMAT_VERSION:
            return None
        if any((path / name).stat().st_size != size for name, size in expected.items()):
            return None
        return dict(meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@torch.inference_mode()
def _teacher_logits(
    teacher: nn.Module, x: torch.Tensor, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    x = x.to(device)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    out = teacher(x)
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 3) or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"the teacher cache stores (batch, classes) or (batch, positions, vocabulary) logits, but the "
            f"teacher returned {got}; "
            "use teacher_cache=off for teachers with other outputs."
        )
    return out.float().cpu()


def _topk_rows(
    logits: torch.Tensor, k: int, temperatures: tuple[float, ...] = (1.0,)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k values and indices along the last dimension, plus per row (sample, or sample and position)
    one fill logit per temperature: `(B, len(temperatures))` or `(B, T, len(temperatures))`.

    The fill f_T of temperature T solves (K - k) * exp(f_T / T) = sum over the tail of exp(z_j / T), i.e.
    f_T = T * (logsumexp_tail(z / T) - log(K - k)): the tail keeps its total probability at T exactly.
    """
    values, indices = logits.topk(k, dim=-1)
    rest = logits.shape[-1] - k
    last = values[..., -1:]
    if rest == 0:
        return values, indices, last.expand(*last.shape[:-1], len(temperatures)).contiguous()
    tail = logits.scatter(-1, indices, float("-inf"))  # the top-k masked out, computed directly
    columns = []
    for t in temperatures:
        fill = t * (torch.logsumexp(tail / t, dim=-1, keepdim=True) - float(np.log(rest)))
        columns.append(torch.maximum(fill.clamp(max=last), last - _MIN_TAIL_LOGIT_GAP * t))
    return values, indices, torch.cat(columns, dim=-1)


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
    """Run the frozen `teacher` over `split`'s inputs once and write the cache directory atomically.

    The table takes the shape of the teacher's outputs: (N, K) for (B, K) logits, (N, T, V) for a
    sequence model's (B, T, V) (every sample of the split has the same T, as its (N, T) inputs do).

    Args:
        teacher: the teacher (frozen here: eval mode, no gradients).
        split: the inputs, in the order `batch["index"]` refers to.
        directory: the final cache directory (`<cache_dir>/<fingerprint>`); written via a temp dir.
        key: the fingerprint stored in the metadata.
        topk: store only the k largest logits per sample (None = all).
        batch_size: samples per teacher forward pass.
        device: where the teacher runs.
        channels_last: run the teacher in NHWC layout (faster convolutions on CPU; same outputs).
        temperatures: top-k only: the temperatures to store tail masses for (1.0 is always added).
        extra_meta: more JSON-friendly fields to record (e.g. the dataset description).
        views: store the teacher's outputs on each of V augmented views of every sample (rows
            `view * N + id`) instead of on the plain inputs.

    Returns:
        `directory`.

    Raises:
        ConfigError: topk out of range, or a teacher whose output is not a (batch, classes) or
            (batch, positions, vocabulary) tensor.
    """
    final = Path(directory)
    freeze(teacher)
    device = torch.device(device)
    teacher.to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    samples = len(split)
    n = samples * (views.count if views is not None else 1)  # table rows
    probe = _teacher_logits(teacher, split.head(1), device)
    num_classes = int(probe.shape[-1])
    positions = int(probe.shape[1]) if probe.ndim == 3 else None
    lead = _lead_shape(n, positions)
    if topk is not None and not 1 <= topk <= num_classes:
        raise ConfigError(f"teacher_cache_topk must be in [1, {num_classes}] (the class count), got {topk}.")
    cols = topk if topk is not None else num_classes
    temps = cache_temperatures(temperatures) if topk is not None else None
    with atomic_cache_dir(final, complete=lambda path: _read_meta(path) is not None) as tmp:
        values = np.memmap(tmp / _VALUES, np.float16, "w+", shape=(*lead, cols))
        indices = fill = None
        if topk is not None:
            indices = np.memmap(tmp / _INDICES, np.int32, "w+", shape=(*lead, cols))
            assert temps is not None
            fill = np.memmap(tmp / _FILL, np.float32, "w+", shape=(*lead, len(temps)))
        for start, inputs in _input_batches(split, batch_size, views):
            logits = _teacher_logits(teacher, inputs, device, channels_last)
            if tuple(logits.shape[1:-1]) != lead[1:]:
                raise ConfigError(
                    f"the teacher returned {tuple(logits.shape)} logits for samples {start}.., but "
                    f"{tuple(probe.shape)} for the first: a cache needs every sample padded to the same length."
                )
            stop = start + logits.shape[0]
            if topk is None:
                values[start:stop] = logits.half().numpy()
            else:
                assert indices is not None and fill is not None
                assert temps is not None
                v, i, f = _topk_rows(logits, topk, temps)
                values[start:stop], indices[start:stop], fill[start:stop] = (
                    v.half().numpy(),
                    i.int().numpy(),
                    f.float().numpy(),
                )
        for arr in (values, indices, fill):
            if arr is not None:
                arr.flush()
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": key,
            "rows": n,
            "cols": cols,
            "num_classes": num_classes,
            "positions": positions,
            "topk": topk,
            "views": views.count if views is not None else None,
            "samples": samples,
            "temperatures": list(temps) if temps is not None else None,
            "dtype": "float16",
            "teacher": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra_meta or {}),
        }
        atomic_write_json(tmp / _META, meta)
        del values, indices, fill
    return final


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
    """The cache for (teacher, data.train, augment, topk, views): reused when it exists, else built now.

    `temperatures` (top-k only) are those the run's loss uses; the cache stores the tail mass at each
    (module docstring) and is keyed on them. `views`: the teacher's outputs on V augmented views per
    sample (module docstring); the views and their augmentation are part of the key.

    A directory with the right name but incomplete or inconsistent files (a crash on a file system
    without atomic renames, a manual edit) is rebuilt.

    Returns:
        (the cached teacher on CPU, info saying where it is and whether it was a hit).
    """
    start = time.perf_counter()
    temps = cache_temperatures(temperatures)
    key = fingerprint(teacher, data, augment=augment, topk=topk, temperatures=temps, views=views)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = root / key[:32]
    meta = _read_meta(directory)
    rows = len(data.train) * (views.count if views is not None else 1)
    hit = meta is not None and meta.get("fingerprint") == key and meta.get("rows") == rows
    if not hit:
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        build_cache(
            teacher,
            data.train,
            directory,
            key=key,
            topk=topk,
            batch_size=batch_size,
            device=device,
            channels_last=channels_last,
            temperatures=temps,
            extra_meta={"data": data.describe(), "augment": augment},
            views=views,
        )
    cached = CachedTeacher(directory)
    info = CacheInfo(
        path=str(directory),
        fingerprint=key,
        hit=hit,
        seconds=round(time.perf_counter() - start, 3),
        rows=len(cached),
        num_classes=cached.num_classes,
        topk=cached.topk,
        positions=cached.positions,
        views=cached.views,
        bytes_per_token=float(_row_bytes(cached.meta)),
    )
    return cached, info


def _row_bytes(meta: dict[str, Any]) -> int:
    """Stored bytes per row (per sample, or per position of a sequence): values, indices, fill."""
    cols = int(meta["cols"])
    if meta.get("topk") is None:
        return 2 * cols
    return 2 * cols + 4 * cols + 4 * len(meta["temperatures"])


# Built under a locked temporary name; builds left by killed processes are removed (see fileio).
atomic_cache_dir = atomic_dir


@contextlib.contextmanager
def _noop() -> Iterator[None]:
    yield


def main_process_first(accelerator: Any) -> contextlib.AbstractContextManager[None]:
    """Let rank 0 build a cache while the other ranks wait, then they all open it (a hit for them)."""
    return accelerator.main_process_first() if accelerator is not None else _noop()
