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

- ``aligned``: for a teacher with its own tokenizer (`kd.teacher_tokenizer`), per row of student tokens
  what the cross-tokenizer terms need of it per chunk of the byte alignment (`AlignedChunks`): its
  log-likelihood of each chunk, and its k largest probabilities at each chunk's first position. Its rows
  are built from the alignment, not from logits alone (`RowFormat.rows`).

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
from distil.data.alignment import NO_CHUNK, Alignment, TokenizerBytes, align_rows
from distil.data.augment import Augmenter
from distil.data.batch import INDEX, INPUTS, LABELS
from distil.data.loader import sample_inputs
from distil.errors import ConfigError
from distil.fileio import atomic_dir, atomic_write_json
from distil.losses.crosstok import ChunkTargets, teacher_chunk_logprob, teacher_sorted_probs
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

    def rows(self, teacher: nn.Module, split: SampleSplit, plan: BuildPlan) -> RowBlocks:
        """The rows a build writes: by default the teacher's logits on each row's inputs, `encode`d
        (`logit_rows`); a format whose rows need more than the logits (`AlignedChunks`) overrides it."""
        return logit_rows(self, teacher, split, plan)


@dataclass(frozen=True)
class BuildPlan:
    """How a build runs the teacher: rows at a time, where, and which rows (`TeacherViews`)."""

    batch_size: int
    device: torch.device
    channels_last: bool = False
    views: TeacherViews | None = None
    chunk_elements: int = CHUNK_ELEMENTS


@dataclass
class RowBlocks:
    """What a build writes: the files' leading shape, the class count, and the rows block by block.

    Attributes:
        lead: (N,) or (N, T): the rows of every file (each holds (*lead, width) values).
        num_classes: the teacher's classes (vocabulary), which sets the files' widths.
        positions: T of a sequence model's (N, T) rows, else None.
        blocks: (first flat row, {file: (rows, width) values}) in any order; run lazily, inside the
            build's atomic directory.
        summary: facts about the rows the blocks fill in as they run, recorded in the metadata's `build`.
    """

    lead: Shape
    num_classes: int
    positions: int | None
    blocks: Iterator[tuple[int, dict[str, np.ndarray]]]
    summary: dict[str, Any] = field(default_factory=dict)


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


# How a full cache stores its values: float16 for logits (the softmax/sigmoid tolerates its 3 digits),
# float32 for values whose small differences are the signal (regression outputs of 2000 +- 1, embeddings).
FULL_PRECISIONS = ("float16", "float32")


@dataclass(frozen=True)
class FullLogits(RowFormat):
    """All outputs per row: logits as float16 (the default), regression values and embeddings as float32.

    Attributes:
        precision: "float16" or "float32"; float32 is part of the cache key (`params`), so a float16 cache of
            the same teacher is never reused for it.
    """

    precision: str = "float16"
    name: ClassVar[str] = "full"

    def __post_init__(self) -> None:
        if self.precision not in FULL_PRECISIONS:
            raise ConfigError(
                unknown_name_message("full teacher cache precision", self.precision, FULL_PRECISIONS)
            )

    @property
    def values_file(self) -> str:
        """The one file's name: "values.f16" or "values.f32"."""
        return "values.f16" if self.precision == "float16" else "values.f32"

    def params(self) -> dict[str, Any]:
        # float16 records nothing, so the keys of existing logit caches stay what they were.
        return {} if self.precision == "float16" else {"precision": self.precision}

    def files(self, num_classes: int) -> dict[str, np.dtype[Any]]:
        return {self.values_file: np.dtype(self.precision)}

    def width(self, name: str, num_classes: int) -> int:
        return num_classes

    def encode(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        if self.precision == "float32":
            return {self.values_file: logits.float().numpy()}
        return {self.values_file: to_float16(logits)}

    def dense(
        self, arrays: dict[str, torch.Tensor], rows: torch.Tensor, temperature: float | None
    ) -> torch.Tensor:
        """Float32 values of `rows`."""
        return arrays[self.values_file].index_select(0, rows).float()


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


@dataclass(frozen=True)
class AlignedChunks(RowFormat):
    """What the cross-tokenizer terms need of a teacher with its own tokenizer, per row of student tokens.

    A teacher with another tokenizer is compared with the student over *chunks*, stretches of text both
    tokenizations split at their ends (`distil.data.alignment`). For a fixed row of student tokens the
    chunks are fixed, so the teacher's part of `alm` and `uld` is too: per chunk, its log-likelihood of
    the chunk (`alm`) and, with `k` > 0, its k largest probabilities at the chunk's first position,
    sorted, with the probability left out, per temperature (`uld`). A row has at most T chunks (each has
    a student position), numbered from 0 in the row; files (lead (N,)):

    - ``chunks.i32``: (T,) the chunk each student position predicts a token of (-1: none);
    - ``logprob.f32``: (T,) l_T of chunk slot 0..T-1 (0 in unused slots);
    - with k > 0, ``probs.f32``: (T * len(temperatures) * min(k, V_t)) and ``tail.f32``:
      (T * len(temperatures)) the sorted probabilities and the tail mass (the bound of `uld`'s error).

    Keyed (`cache_key`) by both tokenizers' fingerprints (hashes of their vocabularies and merges), the
    teacher's context length, T, k, the temperatures and `version`, besides the teacher's weights and
    the data. `tokenizers` (student's, teacher's byte tables) is needed to build, not to read.
    """

    positions: int
    student_tokenizer: str
    teacher_tokenizer: str
    k: int = 0
    temperatures: tuple[float, ...] = ()
    max_teacher_len: int | None = None
    # 2: special tokens separate text instead of ending the row; chunks cut by the row's end or by invalid
    # UTF-8 are dropped. A version-1 cache holds other chunks: its key differs, so it is rebuilt.
    version: int = 2
    name: ClassVar[str] = "aligned"
    tokenizers: tuple[TokenizerBytes, TokenizerBytes] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        temps = cache_temperatures(self.temperatures) if self.k > 0 else ()
        object.__setattr__(self, "temperatures", temps)

    def params(self) -> dict[str, Any]:
        return {
            "positions": self.positions,
            "student_tokenizer": self.student_tokenizer,
            "teacher_tokenizer": self.teacher_tokenizer,
            "k": self.k,
            "temperatures": list(self.temperatures),
            "max_teacher_len": self.max_teacher_len,
            "version": self.version,
        }

    def kept(self, num_classes: int) -> int:
        """Probabilities kept per chunk and temperature: min(k, V_t) (all of them when k >= V_t)."""
        return min(self.k, num_classes)

    def files(self, num_classes: int) -> dict[str, np.dtype[Any]]:
        files = {"chunks.i32": np.dtype(np.int32), "logprob.f32": np.dtype(np.float32)}
        if self.k > 0:
            files.update({"probs.f32": np.dtype(np.float32), "tail.f32": np.dtype(np.float32)})
        return files

    def width(self, name: str, num_classes: int) -> int:
        per_slot = {
            "probs.f32": len(self.temperatures) * self.kept(num_classes),
            "tail.f32": len(self.temperatures),
        }
        return self.positions * per_slot.get(name, 1)

    def encode(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        raise ConfigError(
            "aligned rows are encoded with their byte alignment (AlignedChunks.rows), not from logits"
        )

    def rows(self, teacher: nn.Module, split: SampleSplit, plan: BuildPlan) -> RowBlocks:
        """Align each batch of student rows with the teacher's tokenization, run the teacher on it, and
        keep its per-chunk values (`encode_aligned`).

        Raises:
            ConfigError: no tokenizers given, views, rows of another length than `positions`, or teacher
                log-likelihoods that are NaN or infinite.
        """
        if self.tokenizers is None:
            raise ConfigError(
                "an aligned teacher cache is built with both tokenizers (AlignedChunks.tokenizers)"
            )
        if plan.views is not None:
            raise ConfigError("an aligned (cross-tokenizer) teacher cache stores no augmented views")
        student, own = self.tokenizers
        probe = teacher_logits(teacher, torch.tensor([[own.eos_id]]), plan.device)
        num_classes = int(probe.shape[-1])

        def blocks() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            for start, batch in zip(
                range(0, len(split), plan.batch_size), split.batches(plan.batch_size), strict=True
            ):
                inputs, labels = batch[INPUTS], batch[LABELS]
                if inputs.shape[1] != self.positions:
                    raise ConfigError(
                        f"rows {start}.. have {inputs.shape[1]} tokens, the cache {self.positions}: an aligned "
                        "cache needs every row of one length."
                    )
                alignment = align_rows(inputs, labels, student, own, max_teacher_len=self.max_teacher_len)
                logits = teacher_logits(teacher, alignment.teacher_inputs, plan.device)
                rows = self.encode_aligned(logits, alignment, start)
                if self.k > 0:
                    tails.append(_used_tails(rows, len(self.temperatures)))
                yield start, rows
            if tails:
                summary["uld_tail_mass"] = _tail_summary(torch.cat(tails), self.temperatures)

        tails: list[torch.Tensor] = []
        summary: dict[str, Any] = {}
        return RowBlocks((len(split),), num_classes, None, blocks(), summary)

    def encode_aligned(
        self, logits: torch.Tensor, alignment: Alignment, first: int = 0
    ) -> dict[str, np.ndarray]:
        """The rows of one batch: its teacher logits (B, U, V_t) on `alignment`'s teacher inputs.

        Raises:
            ConfigError: a chunk log-likelihood that is NaN or infinite (naming the sample), or a row with
                more chunks than positions.
        """
        rows = alignment.student_chunks.shape[0]
        slot_row, slot, local = _row_slots(alignment, rows)
        if bool((slot >= self.positions).any()):
            raise ConfigError(
                f"a row of samples {first}.. has more chunks than its {self.positions} positions"
            )
        l_t = teacher_chunk_logprob(logits, alignment)
        bad = ~torch.isfinite(l_t)
        if bool(bad.any()):
            sample = first + int(slot_row[bad.nonzero()[0, 0]])
            raise ConfigError(
                f"the teacher's log-likelihood of a chunk of sample {sample} is {float(l_t[bad][0])}: its logits "
                "are NaN or +inf, or give its own token probability 0. Fix the teacher, or use "
                "teacher_cache.mode=off to see the live teacher fail the same way."
            )
        logprob = torch.zeros(rows, self.positions)
        logprob[slot_row, slot] = l_t
        out = {"chunks.i32": local.to(torch.int32).numpy(), "logprob.f32": logprob.numpy()}
        if self.k > 0:
            kept = self.kept(logits.shape[-1])
            probs = torch.zeros(rows, self.positions, len(self.temperatures), kept)
            tail = torch.zeros(rows, self.positions, len(self.temperatures))
            for j, t in enumerate(self.temperatures):
                head, rest = teacher_sorted_probs(logits, alignment, t, self.k)
                probs[slot_row, slot, j] = head
                tail[slot_row, slot, j] = rest
            out["probs.f32"] = probs.reshape(rows, -1).numpy()
            out["tail.f32"] = tail.reshape(rows, -1).numpy()
        return out

    def targets(
        self,
        arrays: dict[str, torch.Tensor],
        rows: torch.Tensor,
        student_targets: torch.Tensor,
        num_classes: int,
    ) -> ChunkTargets:
        """The `ChunkTargets` of `rows`, numbered across them as a live alignment of the batch numbers them.

        Args:
            arrays: the store's files.
            rows: (B,) the rows (sample ids) of the batch.
            student_targets: (B, T) the token each student position predicts (`next_tokens`).
            num_classes: the teacher's vocabulary (V_t).
        """
        local = arrays["chunks.i32"].index_select(0, rows).long()
        counts = (local.max(dim=1).values + 1).clamp(min=0)
        offsets = counts.cumsum(0) - counts
        chunks = torch.where(local >= 0, local + offsets.unsqueeze(1), NO_CHUNK)
        used = torch.arange(self.positions).unsqueeze(0) < counts.unsqueeze(1)  # row-major: global order
        logprob = arrays["logprob.f32"].index_select(0, rows)[used]
        probs = None
        if self.k > 0:
            shape = (len(rows), self.positions, len(self.temperatures), self.kept(num_classes))
            probs = arrays["probs.f32"].index_select(0, rows).reshape(shape)[used]
        return ChunkTargets(student_targets, chunks, int(counts.sum()), logprob, probs, self.temperatures)


def _used_tails(rows: dict[str, np.ndarray], temperatures: int) -> torch.Tensor:
    """(chunks, temperatures) the tail masses of one block's chunks (its rows' used slots)."""
    chunks = torch.from_numpy(rows["chunks.i32"]).long()
    used = torch.arange(chunks.shape[1]).unsqueeze(0) <= chunks.max(dim=1).values.unsqueeze(1)
    return torch.from_numpy(rows["tail.f32"]).reshape(*chunks.shape, temperatures)[used]


def _tail_summary(tails: torch.Tensor, temperatures: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """Per temperature, the mean and the largest teacher probability `uld` left out of a chunk: its loss
    differs from the exact one by at most the mean over the chunks a batch counts."""
    if len(tails) == 0:
        return {str(t): {"mean": 0.0, "max": 0.0} for t in temperatures}
    return {
        str(t): {"mean": float(tails[:, j].mean()), "max": float(tails[:, j].max())}
        for j, t in enumerate(temperatures)
    }


def _row_slots(alignment: Alignment, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each chunk's row and slot in it, and the student chunks numbered within their rows.

    `align_rows` numbers a batch's chunks row after row, each row's consecutively: a chunk's slot is its
    id minus the smallest id in its row.

    Returns:
        ((num_chunks,) row of each chunk, (num_chunks,) its slot, (B, T) row-local student chunks).
    """
    n = alignment.num_chunks
    row_of = torch.zeros(n, dtype=torch.long)
    for chunks in (alignment.student_chunks, alignment.teacher_chunks):
        which = torch.arange(chunks.shape[0]).unsqueeze(1).expand_as(chunks)
        keep = chunks != NO_CHUNK
        row_of.scatter_(0, chunks[keep], which[keep])
    first = torch.full((rows,), n, dtype=torch.long).scatter_reduce(0, row_of, torch.arange(n), reduce="amin")
    slot = torch.arange(n) - first[row_of]
    s = alignment.student_chunks
    which = torch.arange(rows).unsqueeze(1).expand_as(s)
    local = torch.where(s != NO_CHUNK, s - first[which], NO_CHUNK)
    return row_of, slot, local


def next_tokens(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T) the token each student position predicts, as `distil.data.alignment.align_rows` sets its
    `student_targets`: the next input, and at the last position the last label (`IGNORE_INDEX` if none)."""
    return torch.cat([inputs[:, 1:], labels[:, -1:].to(inputs.dtype)], dim=1)


FORMATS: dict[str, type[RowFormat]] = {
    "full": FullLogits,
    "topk": TopK,
    "sampled": Sampled,
    "aligned": AlignedChunks,
}


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
    """The teacher's float32 (B, K) or (B, T, V) logits on CPU; a dense teacher's (B, K, H, W) as its
    (B, H*W, K) pixel rows (the dense terms read either); anything else is refused."""
    x = x.to(device)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    out = teacher(x)
    if isinstance(out, torch.Tensor) and out.ndim == 4:
        out = out.flatten(2).transpose(1, 2)  # every pixel a position: stored as a sequence model's rows
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


def logit_rows(fmt: RowFormat, teacher: nn.Module, split: SampleSplit, plan: BuildPlan) -> RowBlocks:
    """A logit format's rows: the teacher's logits on each row's inputs, `encode`d `chunk_rows` at a time.

    Rows take the shape of the teacher's outputs: (N,) for (B, K) logits, (N, T) for a sequence model's
    (B, T, V) (every sample of the split has the same T). With `plan.views`, V * N rows.

    Raises:
        ConfigError: outputs that are not logits, logits that are NaN, +inf or -inf everywhere in a row
            (`check_logits`), or samples whose outputs differ in length.
    """
    n = len(split) * (plan.views.count if plan.views is not None else 1)
    probe = teacher_logits(teacher, split.head(1), plan.device)
    num_classes = int(probe.shape[-1])
    positions = int(probe.shape[1]) if probe.ndim == 3 else None
    lead = (n,) if positions is None else (n, positions)
    per_row = positions or 1
    step = chunk_rows(num_classes, plan.chunk_elements)

    def blocks() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for start, inputs in input_batches(split, plan.batch_size, plan.views):
            logits = teacher_logits(teacher, inputs, plan.device, plan.channels_last)
            if tuple(logits.shape[1:-1]) != lead[1:]:
                raise ConfigError(
                    f"the teacher returned {tuple(logits.shape)} logits for samples {start}.., but "
                    f"{tuple(probe.shape)} for the first: a cache needs every sample padded to the same length."
                )
            logits = logits.reshape(-1, num_classes)
            for at in range(0, logits.shape[0], step):
                chunk, first = logits[at : at + step], start * per_row + at
                check_logits(chunk, first, per_row)
                yield first, fmt.encode(chunk)
            del logits

    return RowBlocks(lead, num_classes, positions, blocks())


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

    What the rows are is the format's (`RowFormat.rows`: by default the teacher's logits, `logit_rows`);
    the teacher runs on `batch_size` samples at a time and logits are encoded `chunk_rows` rows at a
    time (the same bytes for any chunking). The metadata's `build` records the batch size, the chunk,
    the peak memory (`peak_memory`) and the seconds.

    Returns:
        `directory`.

    Raises:
        ConfigError: format parameters that do not fit the class count, or what the format's rows
            refuse (`logit_rows`, `AlignedChunks.rows`).
    """
    started = time.perf_counter()
    final = Path(directory)
    freeze(teacher)
    device = torch.device(device)
    teacher.to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    plan = BuildPlan(batch_size, device, channels_last, views, chunk_elements)
    made = fmt.rows(teacher, split, plan)
    num_classes = made.num_classes
    fmt.check(num_classes)
    fmt.begin()
    reset_peak_memory(device)
    shapes = {name: (*made.lead, fmt.width(name, num_classes)) for name in fmt.files(num_classes)}
    with atomic_dir(final, complete=lambda path: read_meta(path) is not None) as tmp:
        arrays = {
            name: np.memmap(tmp / name, dtype, "w+", shape=shapes[name])
            for name, dtype in fmt.files(num_classes).items()
        }
        # Flat (rows x positions, width) views of the files: blocks of rows are written in place.
        flat = {name: arr.reshape(-1, arr.shape[-1]) for name, arr in arrays.items()}
        for first, block in made.blocks:
            for name, rows in block.items():
                flat[name][first : first + rows.shape[0]] = rows
        for arr in arrays.values():
            arr.flush()
        del arrays, flat
        peak = peak_memory(device)
        built = {
            "batch_size": batch_size,
            "chunk_rows": chunk_rows(num_classes, chunk_elements),
            **peak,
            "seconds": round(time.perf_counter() - started, 3),
            **made.summary,
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": key,
            "form": fmt.name,
            "params": fmt.params(),
            **fmt.params(),  # flat too, for people reading the file
            "rows": made.lead[0],
            "samples": len(split),
            "positions": made.positions,
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
