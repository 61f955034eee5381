"""The one teacher-cache store: key -> directory -> validate -> build -> open, for every row format.

A cache holds the teacher's outputs on every row of the training set, computed once. What is stored
per row is a *format* (the classes below, which only write rows and read them back):

- ``full``: all K (or V) logits, float16.
- ``topk``: the k largest logits (float16), their ids, and one fill logit per temperature the run uses
  (float32) that keeps the tail's total probability at that temperature exactly
  (`distil.teachers.cache`). Read back either as dense logits (the kd term at any stored temperature) or as
  sparse targets for the `kd` term of a sequence model (`SparseTargets`: log p_T of the k ids and the
  tail mass, derived from the same numbers). This is the one top-k: classifiers and language models
  share its layout.
- ``sampled``: k draws per row from the teacher at the KD temperature (or a proposal temperature),
  stored as the distinct ids drawn with their counts (k slots; unused slots have count 0), with a
  proposal the float16 log(p_T / r) of each, and the teacher's negative entropy (float32). The weights
  count * p_T / (k r) are formed on read (`Sampled.sparse`): exactly count / k for the default proposal.

*Which* rows are stored is orthogonal to the format: the plain samples (N rows), or V augmented views
of each (`TeacherViews`: rows ``view * N + id``). A row is one sample, or one sample and position of a
sequence model's (N, T, V) outputs. So any format can be built over views: the build loop yields
(first row, teacher inputs) and the format encodes whatever logits come back.

The store owns the rest, once: the key (SHA-256 of the teacher's weights, the data's description and
training split, the augmentation, the views, the format and its parameters: `cache_key`), the layout
(`<cache_dir>/<key[:32]>/` with `meta.json` and one raw array file per format file), the metadata
(JSON, validated by `read_meta`: version, format, and every file's size against the dtype and shape
recorded for it; nothing is unpickled), the atomic build (`distil.fileio.atomic_dir`: built under a
locked temporary name, renamed into place; builds of killed processes are removed), and opening the
arrays as read-only memory maps. A directory whose metadata does not validate is rebuilt. Caches of
older versions (format_version < 4) have other keys and are simply rebuilt.

The build runs the teacher `batch_size` rows at a time (a run passes its recipe's batch size) and
encodes the logits in chunks of at most `CHUNK_ELEMENTS` logits, in float32, so its memory is the
teacher's batch of logits plus a bounded working set whatever the format; the chunking does not change
a byte of the cache. Its peak resident memory is recorded in the metadata (`meta["build"]`). Teacher
logits may be -inf (a masked vocabulary); a row without any finite logit, NaN or +inf is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from distil.data import DataBundle, SampleSplit
from distil.data.augment import Augmenter
from distil.data.batch import INDEX, INPUTS
from distil.data.loader import sample_inputs
from distil.errors import ConfigError
from distil.fileio import atomic_dir, atomic_write_json
from distil.losses.sparse import SparseTargets
from distil.registry import unknown_name_message
from distil.teachers.live import freeze

FORMAT_VERSION = 4  # 4: sampled rows as distinct ids + counts, float32 build
META = "meta.json"
# A tail more than this many softened logits (z/T) below the k-th is irrelevant (< e^-30 of its
# probability per class); the floor keeps the fill finite when the tail logits are -inf.
_MIN_TAIL_LOGIT_GAP = 30.0
_T_DIGITS = 6  # temperatures are matched after rounding to this many decimals
# The build encodes at most this many logits at once (float32: 16 MB per working copy): its memory is
# bounded by the teacher's batch, not by batch x positions x vocabulary x the format's temporaries.
CHUNK_ELEMENTS = 1 << 22

Shape = tuple[int, ...]


def cache_temperatures(temperatures: Any = ()) -> tuple[float, ...]:
    """The sorted distinct temperatures a top-k cache stores tail masses for: `temperatures` and 1.0."""
    return tuple(sorted({round(float(t), _T_DIGITS) for t in (*temperatures, 1.0)}))


def id_dtype(num_classes: int) -> np.dtype[Any]:
    """Token/class ids: uint16 while they fit (V <= 65536), else int32."""
    return np.dtype(np.uint16) if num_classes <= 2**16 else np.dtype(np.int32)


def default_cache_dir() -> Path:
    """`$DISTIL_CACHE_DIR` when set, else `~/.cache/distil/teacher`."""
    env = os.environ.get("DISTIL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distil" / "teacher"


# ------------------------------------------------------------------------------------- formats


class RowFormat(ABC):
    """What a cache stores per row: the files it writes and how logits become (and come back from) rows."""

    name: ClassVar[str]

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The format's parameters: part of the cache key and recorded in the metadata."""

    @abstractmethod
    def files(self, num_classes: int) -> dict[str, np.dtype[Any]]:
        """File name -> dtype; each file holds (*rows, width) values (`width`)."""

    @abstractmethod
    def width(self, name: str, num_classes: int) -> int:
        """Values per row in file `name`."""

    @abstractmethod
    def encode(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        """The rows of (..., K) teacher logits, one array per file (leading shape kept)."""

    def check(self, num_classes: int) -> None:  # noqa: B027  (most formats accept any class count)
        """Refuse parameters that do not fit `num_classes` (ConfigError)."""

    def begin(self) -> None:  # noqa: B027  (only random formats keep state)
        """Called before a build writes its first row (a random format restarts its draws)."""

    def bytes_per_row(self, num_classes: int) -> int:
        """Stored bytes per row (per sample, or per position of a sequence)."""
        return sum(dt.itemsize * self.width(n, num_classes) for n, dt in self.files(num_classes).items())


FLOAT16_MAX = 65504.0


def to_float16(values: torch.Tensor) -> np.ndarray:
    """`values` as float16, refusing finite values beyond its range, which would be stored as inf (e.g. a
    regression teacher's outputs in the hundreds of thousands) and silently become another target.

    Raises:
        ConfigError: naming the largest value and the fix.
    """
    largest = float(values.abs().max()) if values.numel() else 0.0
    if math.isfinite(largest) and largest > FLOAT16_MAX:
        raise ConfigError(
            f"the teacher cache stores outputs as float16 (at most {FLOAT16_MAX:g}), but the teacher output "
            f"{largest:.6g}: it would be stored as inf. Fix: student_train.teacher_cache.mode=off (the teacher "
            "runs live), or scale the targets (e.g. standardise regression targets) and train the teacher on them."
        )
    return values.half().numpy()


@dataclass(frozen=True)
class FullLogits(RowFormat):
    """All logits per row, float16."""

    name: ClassVar[str] = "full"

    def params(self) -> dict[str, Any]:
        return {}

    def files(self, num_classes: int) -> dict[str, np.dtype[Any]]:
        return {"values.f16": np.dtype(np.float16)}

    def width(self, name: str, num_classes: int) -> int:
        return num_classes

    def encode(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        return {"values.f16": to_float16(logits)}

    def dense(
        self, arrays: dict[str, torch.Tensor], rows: torch.Tensor, temperature: float | None
    ) -> torch.Tensor:
        """Float32 logits of `rows`."""
        return arrays["values.f16"].index_select(0, rows).float()


@dataclass(frozen=True)
class TopK(RowFormat):
    """The k largest logits, their ids, and one tail-fill logit per temperature (module docstring).

    The fill f_T of temperature T solves (K - k) * exp(f_T / T) = sum over the tail of exp(z_j / T):
    the tail keeps its total probability at T exactly; only its spread over the tail classes is
    approximated (uniform).
    """

    k: int
    temperatures: tuple[float, ...] = (1.0,)
    name: ClassVar[str] = "topk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperatures", cache_temperatures(self.temperatures))

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "temperatures": list(self.temperatures)}

    def files(self, num_classes: int) -> dict[str, np.dtype[Any]]:
        return {
            "values.f16": np.dtype(np.float16),
            "ids": id_dtype(num_classes),
            "fill.f32": np.dtype(np.float32),
        }

    def width(self, name: str, num_classes: int) -> int:
        return len(self.temperatures) if name == "fill.f32" else self.k

    def check(self, num_classes: int) -> None:
        if not 1 <= self.k <= num_classes:
            raise ConfigError(
                f"teacher_cache.k must be in [1, {num_classes}] (the class count), got {self.k} (form topk)."
            )

    def encode(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        values, ids = logits.topk(self.k, dim=-1)
        rest = logits.shape[-1] - self.k
        last = values[..., -1:]
        if rest == 0:
            fill = last.expand(*last.shape[:-1], len(self.temperatures))
        else:
            tail = logits.scatter(-1, ids, float("-inf"))  # the top-k masked out
            columns = []
            for t in self.temperatures:
                f = t * (torch.logsumexp(tail / t, dim=-1, keepdim=True) - math.log(rest))
                columns.append(torch.maximum(f.clamp(max=last), last - _MIN_TAIL_LOGIT_GAP * t))
            fill = torch.cat(columns, dim=-1)
        return {
            "values.f16": values.half().numpy(),
            "ids": ids.numpy().astype(id_dtype(logits.shape[-1])),
            "fill.f32": fill.float().numpy(),
        }

    def column(self, temperature: float) -> int:
        """The fill column of `temperature`.

        Raises:
            ConfigError: a temperature this cache stores no tail mass for.
        """
        t = round(float(temperature), _T_DIGITS)
        if t not in self.temperatures:
            raise ConfigError(
                f"this top-k teacher cache stores tail masses for temperatures {list(self.temperatures)}, "
                f"not {t}; open it with open_or_build(..., temperatures=[{t}, ...]) (distill does so from "
                "the loss's temperature schedule)."
            )
        return self.temperatures.index(t)

    def dense(
        self, arrays: dict[str, torch.Tensor], rows: torch.Tensor, column: int, num_classes: int
    ) -> torch.Tensor:
        """Float32 logits of `rows`: the top-k, and the fill of `column` everywhere else."""
        fill = arrays["fill.f32"][..., column : column + 1].index_select(0, rows)
        out = fill.expand(*fill.shape[:-1], num_classes).contiguous()
        ids = arrays["ids"].index_select(0, rows).long()
        return out.scatter_(-1, ids, arrays["values.f16"].index_select(0, rows).float())

    def sparse(
        self, arrays: dict[str, torch.Tensor], rows: torch.Tensor, temperature: float, num_classes: int
    ) -> SparseTargets:
        """The `topk` sparse targets of `rows` at `temperature`: log p_T of the k ids and the tail mass."""
        column = self.column(temperature)
        z = arrays["values.f16"].index_select(0, rows).double() / temperature
        fill = arrays["fill.f32"][..., column].index_select(0, rows).double() / temperature
        rest = num_classes - self.k
        tail = fill + math.log(rest) if rest else torch.full_like(fill, float("-inf"))
        log_z = torch.logsumexp(torch.cat([z, tail.unsqueeze(-1)], dim=-1), dim=-1)
        return SparseTargets(
            form="topk",
            ids=arrays["ids"].index_select(0, rows).long(),
            log_weights=(z - log_z.unsqueeze(-1)).float(),
            aux=(tail - log_z).exp().float(),
            temperature=float(temperature),
            num_classes=num_classes,
        )


@dataclass(frozen=True)
class Sampled(RowFormat):
    """k draws per row from a proposal r, stored as distinct ids with counts, and sum p_T log p_T.

    A row has k slots: the distinct ids drawn (ascending) with how often each was drawn; unused slots
    have count 0 (and id 0). With a proposal (`proposal_temperature`) each slot also stores the
    float16 log(p_T / r) of its id; with the default proposal (r = p_T) that ratio is 1 and is not
    stored, so the weights count / k are exact and sum to 1. The estimate is the same as from the k
    draws one by one (`distil.losses.sparse`): k * (id bytes + 1) + 4 bytes per row, k * (id bytes +
    3) + 4 with a proposal.
    """

    k: int
    temperature: float = 1.0
    proposal_temperature: float | None = None
    seed: int = 0
    name: ClassVar[str] = "sampled"
    _generator: torch.Generator = field(default_factory=torch.Generator, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", round(float(self.temperature), _T_DIGITS))

    def begin(self) -> None:
        self._generator.manual_seed(self.seed)  # the same draws whichever build this format serves

    def params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "temperature": self.temperature,
            "proposal_temperature": self.proposal_temperature,
            "seed": self.seed,
        }

    def files(self, num_classes: int) -> dict[str, np.dtype[Any]]:
        files = {"ids": id_dtype(num_classes), "counts.u8": np.dtype(np.uint8)}
        if self.proposal_temperature is not None:
            files["logratio.f16"] = np.dtype(np.float16)
        return {**files, "aux.f32": np.dtype(np.float32)}

    def width(self, name: str, num_classes: int) -> int:
        return 1 if name == "aux.f32" else self.k

    def check(self, num_classes: int) -> None:
        if not 1 <= self.k <= 255:  # a count is one byte
            raise ConfigError(f"teacher_cache.k must be in [1, 255], got {self.k} (form sampled).")

    def encode(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        z = logits.float()
        logp = torch.log_softmax(z / self.temperature, dim=-1)
        logr = (
            logp
            if self.proposal_temperature is None
            else torch.log_softmax(z / self.proposal_temperature, -1)
        )
        flat = logr.exp().reshape(-1, z.shape[-1])
        draws = torch.multinomial(flat, self.k, replacement=True, generator=self._generator)
        ids, counts = distinct_counts(draws)
        ids, counts = ids.reshape(*z.shape[:-1], self.k), counts.reshape(*z.shape[:-1], self.k)
        p = logp.exp()
        # sum p log p with 0 log 0 = 0: a -inf logit (masked vocabulary) has p = 0 and adds nothing.
        aux = torch.special.xlogy(p, p).sum(-1, keepdim=True)
        out = {"ids": ids.numpy().astype(id_dtype(z.shape[-1])), "counts.u8": counts.numpy().astype(np.uint8)}
        if self.proposal_temperature is not None:
            ratio = (logp.gather(-1, ids) - logr.gather(-1, ids)).masked_fill(counts == 0, 0.0)
            out["logratio.f16"] = ratio.half().numpy()
        return {**out, "aux.f32": aux.numpy()}

    def sparse(
        self, arrays: dict[str, torch.Tensor], rows: torch.Tensor, temperature: float, num_classes: int
    ) -> SparseTargets:
        """The stored draws of `rows` (their weights are for this format's own temperature).

        log_weights are log(count * p_T / (k r)): -inf in unused slots (count 0), log(count / k) for
        the default proposal.
        """
        counts = arrays["counts.u8"].index_select(0, rows).float()
        logw = counts.log() - math.log(self.k)
        if "logratio.f16" in arrays:
            logw = logw + arrays["logratio.f16"].index_select(0, rows).float()
        return SparseTargets(
            form="sampled",
            ids=arrays["ids"].index_select(0, rows).long(),
            log_weights=logw,
            aux=arrays["aux.f32"].index_select(0, rows)[..., 0].float(),
            temperature=self.temperature,
            num_classes=num_classes,
        )


def distinct_counts(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ids of each row of (R, k) draws (ascending) and how often each was drawn.

    Returns:
        (ids, counts), both (R, k) int64: the first u slots of a row hold its u distinct ids; the
        others have id 0 and count 0.
    """
    s = draws.sort(dim=-1).values
    first = torch.ones_like(s, dtype=torch.bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    slot = first.long().cumsum(-1) - 1  # the slot of each draw's id: 0..u-1
    counts = torch.zeros_like(s).scatter_add_(1, slot, torch.ones_like(s))
    ids = torch.zeros_like(s).scatter_(1, slot, s)  # every draw of a slot writes the same id
    return ids, counts


FORMATS: dict[str, type[RowFormat]] = {"full": FullLogits, "topk": TopK, "sampled": Sampled}


def format_from(name: str, params: dict[str, Any]) -> RowFormat:
    """The format `name` with recorded `params` (from a cache's metadata).

    Raises:
        ConfigError: an unknown format name.
    """
    if name not in FORMATS:
        raise ConfigError(unknown_name_message("teacher cache form", name, tuple(FORMATS)))
    kwargs = dict(params)
    if "temperatures" in kwargs:
        kwargs["temperatures"] = tuple(kwargs["temperatures"])
    return FORMATS[name](**kwargs)


# ------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class TeacherViews:
    """V augmented views per sample: the rows a views cache stores the teacher's outputs on.

    Attributes:
        augmenter: the training augmentation (`distil.train.engine.augmenter_for`: the loader's own).
        count: V, views per sample.
    """

    augmenter: Augmenter
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"teacher_cache.views must be >= 1, got {self.count}.")

    def describe(self) -> dict[str, Any]:
        """The cache-key part: V and everything that determines the augmented pixels."""
        return {"count": self.count, **self.augmenter.describe()}


def input_batches(
    split: SampleSplit, batch_size: int, views: TeacherViews | None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first table row, teacher inputs) in table order: the samples, or each view of them in turn."""
    if views is None:
        for start, batch in zip(range(0, len(split), batch_size), split.batches(batch_size), strict=True):
            yield start, batch[INPUTS]
        return
    n = len(split)

    def fetch(ids: torch.Tensor) -> torch.Tensor:  # the mixing partners of a view, as the loaders fetch them
        return sample_inputs(split, ids)

    for view in range(views.count):
        for start, batch in zip(range(0, n, batch_size), split.batches(batch_size), strict=True):
            ids = batch[INDEX] if INDEX in batch else torch.arange(start, start + len(batch[INPUTS]))
            yield view * n + start, views.augmenter(batch[INPUTS], ids, view, fetch=fetch)


# ------------------------------------------------------------------------------------- key, meta


def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
    # A byte view hashes any dtype (bf16 included) without a numpy conversion of the values.
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def cache_key(
    teacher: nn.Module, data: DataBundle, fmt: RowFormat, *, augment: str, views: TeacherViews | None = None
) -> str:
    """SHA-256 of the teacher's weights, the data (description + training split), augment, views, format.

    Returns:
        64 hex digits.
    """
    h = hashlib.sha256(f"distil-teacher-cache-v{FORMAT_VERSION}".encode())
    h.update(f"{type(teacher).__module__}.{type(teacher).__qualname__}".encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, tensor)
    h.update(json.dumps(data.describe(), sort_keys=True, default=str).encode())
    key: dict[str, Any] = {"augment": augment, "form": fmt.name, **fmt.params()}
    if views is not None:
        key["views"] = views.describe()
    h.update(json.dumps(key, sort_keys=True, default=str).encode())
    data.train.update_hash(h)  # the same bytes as hashing train.x, train.y of an in-memory split
    return h.hexdigest()


def read_meta(path: Path) -> dict[str, Any] | None:
    """A cache's metadata when its directory is complete: this version, a known format, and every file
    of the size its recorded dtype and shape give; None otherwise (the caller rebuilds)."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION or meta.get("form") not in FORMATS:
            return None
        for name, spec in meta["files"].items():
            size = np.dtype(spec["dtype"]).itemsize * math.prod(int(d) for d in spec["shape"])
            if (path / name).stat().st_size != size:
                return None
        return dict(meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class Store:
    """An opened cache: its metadata, format and arrays (read-only memory maps wrapped as tensors)."""

    path: Path
    meta: dict[str, Any]
    format: RowFormat
    arrays: dict[str, torch.Tensor]

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def positions(self) -> int | None:
        return self.meta.get("positions")


def open_store(path: str | Path, what: str = "") -> Store:
    """Open a complete cache directory.

    Raises:
        ConfigError: `path` is not a complete cache of this version.
    """
    path = Path(path)
    meta = read_meta(path)
    if meta is None:
        raise ConfigError(
            f"{str(path)!r} is not a complete {what}teacher cache; open_or_build rebuilds it (or delete it)."
        )
    arrays = {
        # mode "c" (copy-on-write): a writable array torch wraps without a warning; the file is never
        # modified, and on CPU the OS pages in only the rows read.
        name: torch.from_numpy(
            np.memmap(path / name, np.dtype(spec["dtype"]), "c", shape=tuple(spec["shape"]))
        )
        for name, spec in meta["files"].items()
    }
    return Store(path, meta, format_from(meta["form"], meta["params"]), arrays)


# ------------------------------------------------------------------------------------- build


@torch.inference_mode()
def teacher_logits(
    teacher: nn.Module, x: torch.Tensor, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """The teacher's float32 (B, K) or (B, T, V) logits on CPU; anything else is refused."""
    x = x.to(device)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    out = teacher(x)
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 3) or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"the teacher cache stores (batch, classes) or (batch, positions, vocabulary) logits, but the "
            f"teacher returned {got}; use teacher_cache.mode=off for teachers with other outputs."
        )
    return out.float().cpu()


def chunk_rows(num_classes: int, chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """Rows of `num_classes` logits the build encodes at once: at most `chunk_elements` logits (>= 1 row)."""
    return max(1, chunk_elements // num_classes)


def check_logits(logits: torch.Tensor, first: int, positions: int) -> None:
    """Refuse (R, V) teacher logits a cache cannot represent: NaN, +inf, or a row that is all -inf.

    -inf alone is fine (a masked vocabulary: those tokens have probability 0).

    Raises:
        ConfigError: naming the first bad row as (sample, position) and the fix.
    """
    bad = torch.isnan(logits).any(-1) | (logits == math.inf).any(-1) | (logits == -math.inf).all(-1)
    if bool(bad.any()):
        row = first + int(bad.nonzero()[0, 0])
        where = f"sample {row // positions}, position {row % positions}" if positions > 1 else f"sample {row}"
        raise ConfigError(
            f"the teacher's logits at {where} are NaN, +inf, or -inf for every class: a cache stores "
            "distributions, and these are none. Fix the teacher (its weights or its masking) or use "
            "teacher_cache.mode=off to see the live teacher fail the same way."
        )


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory`: the process's resident high-water mark (Linux) and the
    accelerator's allocator peak."""
    with contextlib.suppress(OSError):  # "5" resets VmHWM (Linux >= 4.0); elsewhere the process peak is kept
        Path("/proc/self/clear_refs").write_text("5")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, int]:
    """The peak resident memory since `reset_peak_memory` (`peak_rss_bytes`, Linux only) and, on CUDA,
    the allocator's peak (`peak_device_bytes`)."""
    peak: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak["peak_rss_bytes"] = int(line.split()[1]) * 1024
    if device.type == "cuda":
        peak["peak_device_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return peak


def build(
    teacher: nn.Module,
    split: SampleSplit,
    directory: str | Path,
    fmt: RowFormat,
    *,
    key: str,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    views: TeacherViews | None = None,
    extra_meta: dict[str, Any] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Path:
    """Run the frozen `teacher` over the rows of `split` once and write `fmt`'s files atomically.

    Rows take the shape of the teacher's outputs: (N,) for (B, K) logits, (N, T) for a sequence
    model's (B, T, V) (every sample of the split has the same T). With `views`, V * N rows. The
    teacher runs on `batch_size` samples at a time; their logits are encoded `chunk_rows` rows at a
    time (the same bytes for any chunking). The metadata's `build` records the batch size, the chunk,
    the peak memory (`peak_memory`) and the seconds.

    Returns:
        `directory`.

    Raises:
        ConfigError: format parameters that do not fit the class count, outputs that are not logits,
            logits that are NaN, +inf or -inf everywhere in a row (`check_logits`), or samples whose
            outputs differ in length.
    """
    started = time.perf_counter()
    final = Path(directory)
    freeze(teacher)
    device = torch.device(device)
    teacher.to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    samples = len(split)
    n = samples * (views.count if views is not None else 1)
    probe = teacher_logits(teacher, split.head(1), device)
    num_classes = int(probe.shape[-1])
    positions = int(probe.shape[1]) if probe.ndim == 3 else None
    lead = (n,) if positions is None else (n, positions)
    fmt.check(num_classes)
    fmt.begin()
    reset_peak_memory(device)
    shapes = {name: (*lead, fmt.width(name, num_classes)) for name in fmt.files(num_classes)}
    with atomic_dir(final, complete=lambda path: read_meta(path) is not None) as tmp:
        arrays = {
            name: np.memmap(tmp / name, dtype, "w+", shape=shapes[name])
            for name, dtype in fmt.files(num_classes).items()
        }
        # Flat (rows x positions, width) views of the files: chunks of positions are written in place.
        flat = {name: arr.reshape(-1, arr.shape[-1]) for name, arr in arrays.items()}
        per_row = positions or 1
        step = chunk_rows(num_classes, chunk_elements)
        for start, inputs in input_batches(split, batch_size, views):
            logits = teacher_logits(teacher, inputs, device, channels_last)
            if tuple(logits.shape[1:-1]) != lead[1:]:
                raise ConfigError(
                    f"the teacher returned {tuple(logits.shape)} logits for samples {start}.., but "
                    f"{tuple(probe.shape)} for the first: a cache needs every sample padded to the same length."
                )
            logits = logits.reshape(-1, num_classes)
            for at in range(0, logits.shape[0], step):
                chunk, first = logits[at : at + step], start * per_row + at
                check_logits(chunk, first, per_row)
                for name, rows in fmt.encode(chunk).items():
                    flat[name][first : first + chunk.shape[0]] = rows
            del logits
        for arr in arrays.values():
            arr.flush()
        del arrays, flat
        peak = peak_memory(device)
        built = {
            "batch_size": batch_size,
            "chunk_rows": step,
            **peak,
            "seconds": round(time.perf_counter() - started, 3),
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": key,
            "form": fmt.name,
            "params": fmt.params(),
            **fmt.params(),  # flat too, for people reading the file
            "rows": n,
            "samples": samples,
            "positions": positions,
            "num_classes": num_classes,
            "views": views.count if views is not None else None,
            "bytes_per_token": fmt.bytes_per_row(num_classes),
            "build": built,
            "files": {
                name: {"dtype": dtype.name, "shape": list(shapes[name])}
                for name, dtype in fmt.files(num_classes).items()
            },
            "teacher": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra_meta or {}),
        }
        atomic_write_json(tmp / META, meta)
    return final


@dataclass(frozen=True)
class Opened:
    """What `open_or_build` found: the store, its key, and whether it was reused (a hit)."""

    store: Store
    key: str
    hit: bool
    seconds: float


def open_or_build(
    teacher: nn.Module,
    data: DataBundle,
    fmt: RowFormat,
    *,
    augment: str = "none",
    views: TeacherViews | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> Opened:
    """The cache of (teacher, data.train, augment, views, fmt): reused when complete, else built now.

    A directory with the right name but incomplete or inconsistent files (a crash on a file system
    without atomic renames, a manual edit) is rebuilt.
    """
    start = time.perf_counter()
    key = cache_key(teacher, data, fmt, augment=augment, views=views)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = root / key[:32]
    meta = read_meta(directory)
    rows = len(data.train) * (views.count if views is not None else 1)
    hit = meta is not None and meta.get("fingerprint") == key and meta.get("rows") == rows
    if not hit:
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        build(
            teacher,
            data.train,
            directory,
            fmt,
            key=key,
            batch_size=batch_size,
            device=device,
            channels_last=channels_last,
            views=views,
            extra_meta={"data": data.describe(), "augment": augment},
        )
    return Opened(open_store(directory), key, hit, round(time.perf_counter() - start, 3))
