"""A teacher that reads the batch's text with its own tokenizer (`kd.teacher_tokenizer`).

`CrossTokenizerTeacher(batch)` turns each row of student ids (from the data, or the student's own
generations on-policy: it sees whatever batch the loop trains on) into the teacher's ids of the same
bytes (`distil.data.alignment.align_rows`), runs the frozen teacher on them, and returns its logits with
the alignment (`distil.losses.crosstok.CrossTokenizerOutput`), which only the cross-tokenizer terms (uld,
alm) read.

For a fixed training split the chunks of every row are fixed, so the teacher's part of those terms is
too: `cross_tokenizer_source` decides between it and a cache as every run decides
(`distil.teachers.cache.choose_teacher_source`: on-policy batches, which are generated, run it live), and
the cache (`distil.teachers.store.AlignedChunks`, read by `CachedCrossTokenizerTeacher`) stores per row
the teacher's log-likelihood of each chunk (`alm`) and its k largest probabilities at each chunk's first
position, sorted (`uld`), keyed by the teacher's weights, both tokenizers' fingerprints and the data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from distil.config import KDConfig, TrainConfig, cache_settings, cross_tokenizer_problems
from distil.data.alignment import TokenizerBytes, align_row, align_rows, row_tokens
from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS
from distil.data.bundle import LANGUAGE_MODELING, DataBundle, SampleSplit
from distil.data.text import EOS_ID, TokenRowSplit
from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.errors import ConfigError
from distil.losses.compose import ComposedLoss, resolve_terms
from distil.losses.crosstok import ChunkTargets, CrossTokenizerOutput, check_cross_tokenizer_terms
from distil.losses.protocol import DeclaresTeacherNeeds, DistillationLoss
from distil.losses.vocab import MAX_PADDING
from distil.teachers import store
from distil.teachers.cache import CacheInfo, batch_rows, choose_teacher_source, main_process_first
from distil.teachers.live import freeze
from distil.teachers.source import on_policy_lmbda, teacher_augment
from distil.teachers.store import next_tokens


class CrossTokenizerTeacher:
    """Runs a frozen teacher on its own tokenization of each batch's text.

    Args:
        module: the teacher (a causal LM over `teacher_tokenizer`'s ids).
        student_tokenizer: the tokenizer of the batches' ids.
        teacher_tokenizer: the teacher's.
        max_teacher_len: the most tokens the teacher reads per row (None: no limit).
    """

    def __init__(
        self,
        module: nn.Module,
        student_tokenizer: Tokenizer,
        teacher_tokenizer: Tokenizer,
        *,
        max_teacher_len: int | None = None,
    ) -> None:
        self.module = freeze(module)
        self.student = TokenizerBytes.of(student_tokenizer)
        self.teacher = TokenizerBytes.of(teacher_tokenizer)
        self.max_teacher_len = max_teacher_len

    def to(self, device: torch.device | str) -> CrossTokenizerTeacher:
        self.module.to(device)
        return self

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any]) -> CrossTokenizerOutput:
        inputs = batch[INPUTS]
        alignment = align_rows(
            inputs, batch[LABELS], self.student, self.teacher, max_teacher_len=self.max_teacher_len
        ).to(inputs.device)
        logits = self.module(alignment.teacher_inputs)
        return CrossTokenizerOutput(logits, alignment)


def _context_length(module: nn.Module) -> int | None:
    """A Hugging Face model's position limit (`max_position_embeddings`), else None."""
    config = getattr(getattr(module, "hf", module), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def _check_teacher_vocab(module: nn.Module, tokenizer: Tokenizer) -> None:
    """Refuse a teacher whose output width does not fit its tokenizer (a wrong tokenizer named)."""
    device = next(module.parameters()).device
    width = int(module(torch.tensor([[tokenizer.eos_id]], device=device)).shape[-1])
    if not tokenizer.vocab_size <= width <= tokenizer.vocab_size + MAX_PADDING:
        raise ConfigError(
            f"the teacher predicts {width} ids but kd.teacher_tokenizer ({tokenizer.fingerprint}) has "
            f"{tokenizer.vocab_size}: name the tokenizer the teacher was trained with."
        )


def data_tokenizer(data: DataBundle, *, trust_code: bool = False) -> Tokenizer:
    """The tokenizer of a language-model bundle's ids, rebuilt from its name and checked by fingerprint.

    Raises:
        ConfigError: data that is not language modelling, or whose tokenizer was passed as an object
            (no name to rebuild it from) or has changed since the data was tokenized.
    """
    name = data.extra.get("tokenizer_name")
    if data.task != LANGUAGE_MODELING or not name:
        raise ConfigError(
            "kd.teacher_tokenizer aligns the teacher's tokens with the student's by bytes, which needs "
            f"language-model data read with a named tokenizer (data.tokenizer); dataset {data.name!r} "
            f"({data.task}) has none."
        )
    tok = get_tokenizer(name, trust_remote_code=trust_code)
    if tok.fingerprint != data.extra.get("tokenizer", tok.fingerprint):
        raise ConfigError(
            f"the tokenizer {name!r} is now {tok.fingerprint}, but the data was tokenized with "
            f"{data.extra['tokenizer']}; read the data again."
        )
    return tok


def cross_tokenizer_teacher(
    teachers: list[nn.Module],
    data: DataBundle,
    kd: KDConfig,
    cfg: TrainConfig | None = None,
    *,
    trust_code: bool = False,
) -> CrossTokenizerTeacher | None:
    """The teacher of a cross-tokenizer run (`kd.teacher_tokenizer` set), checked; None when it is unset.

    Raises:
        ConfigError: settings of `cfg` it cannot serve (`distil.config.cross_tokenizer_problems`: seq-KD),
            an ensemble, data that is not language modelling or has no tokenizer,
            per-token terms (`check_cross_tokenizer_terms`), or a teacher whose output does not fit the
            tokenizer named.
    """
    if kd.teacher_tokenizer is None:
        return None
    problems = cross_tokenizer_problems(kd, cfg) if cfg is not None else []
    if problems:
        raise ConfigError("\n".join(problems))
    student_tok = data_tokenizer(data, trust_code=trust_code)
    if len(teachers) > 1:
        raise ConfigError("kd.teacher_tokenizer takes one teacher; drop kd.teachers (ensembles).")
    check_cross_tokenizer_terms(resolve_terms(kd))
    tok = get_tokenizer(kd.teacher_tokenizer, trust_remote_code=trust_code)
    with torch.no_grad():
        freeze(teachers[0])
        _check_teacher_vocab(teachers[0], tok)
    return CrossTokenizerTeacher(teachers[0], student_tok, tok, max_teacher_len=_context_length(teachers[0]))


def _own_row(
    tokens: list[int],
    labels: list[int],
    student: TokenizerBytes,
    teacher: TokenizerBytes,
    max_len: int | None,
) -> tuple[list[int], list[int]]:
    """One student row re-read by the teacher: its (inputs, next-token labels), a label kept only where the
    teacher's token lies wholly in bytes whose student tokens are labelled (a prompt stays unscored)."""
    row = align_row(tokens, student, teacher)
    scored: set[int] = (
        set()
    )  # the units (bytes, EOS) of the labelled student tokens: token j is label j - 1's
    for j, (a, b) in enumerate(row.student_spans[1:], start=1):
        if labels[j - 1] != IGNORE_INDEX:
            scored.update(range(a, b))
    ids = row.teacher_ids[: max_len + 1] if max_len is not None else row.teacher_ids
    targets = [
        i if all(u in scored for u in range(a, b)) else IGNORE_INDEX
        for i, (a, b) in zip(ids[1:], row.teacher_spans[1 : len(ids)], strict=True)
    ]
    return ids[:-1], targets


def retokenized_split(
    split: SampleSplit,
    student: TokenizerBytes,
    teacher: TokenizerBytes,
    *,
    max_len: int | None = None,
    batch_size: int = 256,
) -> TokenRowSplit:
    """`split`'s text as the teacher reads it: each row's bytes encoded by the teacher's tokenizer.

    Each row keeps its text (the byte alignment of `distil.data.alignment.align_row`: no decoding to
    strings and back) and what is scored in it; only the teacher's tokens lying wholly in labelled text are
    labelled. Each tokenization's first token of a row is context only, so the bytes a model is scored on
    differ by that token's. Rows are right-padded with the teacher's EOS (labels `IGNORE_INDEX`).

    Args:
        split: token rows of the student's tokenizer (inputs and next-token labels).
        student, teacher: the two tokenizers with their byte tables.
        max_len: the most tokens the teacher reads per row (its context length); None: no limit.
        batch_size: rows read at once.
    """
    rows: list[tuple[list[int], list[int]]] = []
    for batch in split.batches(batch_size):
        inputs, labels = batch[INPUTS], batch[LABELS]
        for tokens, y in zip(row_tokens(inputs, labels), labels.tolist(), strict=True):
            rows.append(_own_row(tokens, y, student, teacher, max_len))
    width = max([1, *(len(x) for x, _ in rows)])
    ids = torch.full((len(rows), width), teacher.eos_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for k, (x, y) in enumerate(rows):
        ids[k, : len(x)] = torch.tensor(x, dtype=torch.long)
        targets[k, : len(y)] = torch.tensor(y, dtype=torch.long)
    return TokenRowSplit(ids, targets)


def teacher_view(
    data: DataBundle,
    kd: KDConfig,
    teacher: nn.Module | None = None,
    *,
    trust_code: bool = False,
    rows: bool = True,
) -> DataBundle:
    """The run's data as a teacher with its own tokenizer (`kd.teacher_tokenizer`) reads it: the test split
    re-tokenized (`retokenized_split`, up to the teacher's context length), no train or val rows, and
    `extra` naming the teacher's tokenizer and vocabulary, so its checkpoint is built, measured (bits per
    byte from its own byte table) and saved for that tokenizer. `rows=False`: no test rows either (the view
    a teacher is built for, before its context length is known).

    Raises:
        ConfigError: data that is not language modelling or has no named tokenizer (`data_tokenizer`), or a
            tokenizer that is not byte-level.
    """
    assert kd.teacher_tokenizer is not None
    student = TokenizerBytes.of(data_tokenizer(data, trust_code=trust_code))
    tok = get_tokenizer(kd.teacher_tokenizer, trust_remote_code=trust_code)
    own = TokenizerBytes.of(tok)
    max_len = _context_length(teacher) if teacher is not None else None
    test = retokenized_split(
        data.test if rows else data.test.take(torch.zeros(0, dtype=torch.long)), student, own, max_len=max_len
    )
    empty = test.take(torch.zeros(0, dtype=torch.long))
    extra = {
        **data.extra,
        "tokenizer": tok.fingerprint,
        "tokenizer_name": kd.teacher_tokenizer,
        "vocab_size": str(tok.vocab_size),
        EOS_ID: str(tok.eos_id),
        # The text is the data's, read with another tokenizer: say whose tokens the blocks were cut in.
        "retokenized_from": data.extra.get("tokenizer", ""),
    }
    return dataclasses.replace(
        data,
        train=empty,
        val=empty,
        test=test,
        extra=extra,
        options={**data.options, "tokenizer": kd.teacher_tokenizer},
    )


class CachedCrossTokenizerTeacher:
    """A `TeacherFn` reading a cross-tokenizer run's teacher cache (`distil.teachers.store.AlignedChunks`):
    `cached(batch) -> ChunkTargets`, by `batch["index"]`, what `alm` and `uld` need per chunk.

    Args:
        opened: the store (`store.open_or_build` with an `AlignedChunks` format).

    Raises:
        ConfigError: a store of another form.
    """

    def __init__(self, opened: store.Store) -> None:
        if not isinstance(opened.format, store.AlignedChunks):
            raise ConfigError(
                f"{str(opened.path)!r} holds {opened.format.name} rows, not a cross-tokenizer teacher's "
                "per-chunk values (form aligned)."
            )
        self.store = opened
        self.format: store.AlignedChunks = opened.format
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> CachedCrossTokenizerTeacher:
        self.device = torch.device(device)
        return self

    def __call__(self, batch: dict[str, Any]) -> ChunkTargets:
        inputs, labels = batch[INPUTS], batch[LABELS]
        if inputs.shape[1] != self.format.positions:
            raise ConfigError(
                f"this cross-tokenizer teacher cache holds rows of {self.format.positions} tokens, the batch "
                f"{inputs.shape[1]}: it was built for other data (teacher_cache.mode=off runs the teacher live)."
            )
        rows = batch_rows(batch, None, self.store.rows).cpu()
        targets = next_tokens(inputs, labels)
        out = self.format.targets(self.store.arrays, rows, targets.cpu(), self.store.num_classes)
        return dataclasses.replace(
            out,
            student_chunks=out.student_chunks.to(inputs.device),
            student_targets=targets,
            logprob=out.logprob.to(inputs.device),
            sorted_probs=out.sorted_probs.to(inputs.device) if out.sorted_probs is not None else None,
        )


def aligned_format(cross: CrossTokenizerTeacher, data: DataBundle, loss: Any, k: int) -> store.AlignedChunks:
    """The cache format of a cross-tokenizer run: keyed by both tokenizers' fingerprints and the
    teacher's context length; with `uld` among the loss's terms (or a loss that does not name them), the
    teacher's `k` largest probabilities per chunk at every temperature of the loss's schedule."""
    composed = loss if isinstance(loss, ComposedLoss) else None
    uld = composed is None or "uld" in composed.terms
    scheduled = loss if isinstance(loss, DistillationLoss) else None
    return store.AlignedChunks(
        positions=int(data.train.head(1).shape[1]),
        student_tokenizer=cross.student.tokenizer.fingerprint,
        teacher_tokenizer=cross.teacher.tokenizer.fingerprint,
        k=k if uld else 0,
        temperatures=scheduled.temperatures() if scheduled is not None and uld else (1.0,),
        max_teacher_len=cross.max_teacher_len,
        tokenizers=(cross.student, cross.teacher),
    )


def open_cross_tokenizer_cache(
    cross: CrossTokenizerTeacher,
    data: DataBundle,
    loss: Any,
    *,
    k: int = 16,
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> tuple[CachedCrossTokenizerTeacher, CacheInfo]:
    """The cross-tokenizer teacher cache of (teacher, both tokenizers, data.train, loss): reused when
    complete, else built now (`distil.teachers.store.open_or_build` with `aligned_format`).

    Returns:
        (the cached teacher on CPU, info saying where it is and whether it was a hit).
    """
    opened = store.open_or_build(
        cross.module,
        data,
        aligned_format(cross, data, loss, k),
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
    )
    return CachedCrossTokenizerTeacher(opened.store), CacheInfo.of(opened)


def cross_tokenizer_source(
    cross: CrossTokenizerTeacher,
    data: DataBundle,
    loss: Any,
    cfg: TrainConfig,
    accelerator: Accelerator,
) -> tuple[CrossTokenizerTeacher | CachedCrossTokenizerTeacher, dict[str, Any]]:
    """Where a cross-tokenizer run's teacher outputs come from, decided as every run's are
    (`distil.teachers.cache.choose_teacher_source`: on-policy batches, sharding, a loss that needs the
    live teacher or `teacher_cache=off` run it live; `on` refused with the same messages), and the record
    every epoch logs.

    Raises:
        ConfigError: what `choose_teacher_source` refuses, or a `teacher_cache.form` other than auto (the
            cross-tokenizer cache has its own form).
    """
    cache = cache_settings(cfg)
    augment, _ = teacher_augment(data, cfg)
    needs = loss.teacher_needs if isinstance(loss, DeclaresTeacherNeeds) else None
    source, reason = choose_teacher_source(
        cache.mode, augment, needs=needs, sharded=cfg.fsdp.enabled, on_policy=on_policy_lmbda(cfg)
    )
    if source != "cache":
        return cross.to(accelerator.device), {"teacher_source": source, "teacher_source_reason": reason}
    if cache.form != "auto":
        raise ConfigError(
            f"teacher_cache.form={cache.form} stores teacher outputs at the student's token positions, but the "
            "teacher reads the text with its own tokenizer (kd.teacher_tokenizer): its cache stores per-chunk "
            "values (form aligned). Fix: teacher_cache.form=auto (teacher_cache.k sets the probabilities uld "
            "keeps per chunk)."
        )
    with main_process_first(accelerator):
        cached, info = open_cross_tokenizer_cache(
            cross,
            data,
            loss,
            k=cache.k,
            cache_dir=cache.dir,
            device=accelerator.device,
            batch_size=cfg.batch_size,
        )
    reason += (
        f"; the teacher reads the text with its own tokenizer ({cross.teacher.tokenizer.fingerprint}), so the "
        "cache stores its values per chunk of the byte alignment, keyed by both tokenizers"
    )
    record = {"teacher_source": "cache", "teacher_source_reason": reason, "teacher_cache": info.to_dict()}
    return cached.to(accelerator.device), record


__all__ = [
    "CachedCrossTokenizerTeacher",
    "CrossTokenizerTeacher",
    "aligned_format",
    "cross_tokenizer_source",
    "cross_tokenizer_teacher",
    "data_tokenizer",
    "open_cross_tokenizer_cache",
    "retokenized_split",
    "teacher_view",
]
