"""A teacher that reads the batch's text with its own tokenizer (`kd.teacher_tokenizer`).

`CrossTokenizerTeacher(batch)` turns each row of student ids (from the data, or the student's own
generations on-policy: it sees whatever batch the loop trains on) into the teacher's ids of the same
bytes (`distil.data.alignment.align_rows`), runs the frozen teacher on them, and returns its logits with
the alignment (`distil.losses.crosstok.CrossTokenizerOutput`), which only the cross-tokenizer terms (uld,
alm) read. The teacher always runs live: a cache of teacher logits is keyed by the student's ids.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from distil.config import KDConfig, TrainConfig, cross_tokenizer_problems
from distil.data.alignment import TokenizerBytes, align_row, align_rows, row_tokens
from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS
from distil.data.bundle import LANGUAGE_MODELING, DataBundle, SampleSplit
from distil.data.text import EOS_ID, TokenRowSplit
from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.errors import ConfigError
from distil.losses.compose import resolve_terms
from distil.losses.crosstok import CrossTokenizerOutput, check_cross_tokenizer_terms
from distil.losses.vocab import MAX_PADDING
from distil.teachers.live import freeze


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
        ConfigError: settings of `cfg` it cannot serve (`distil.config.cross_tokenizer_problems`: seq-KD,
            teacher_cache=on), an ensemble, data that is not language modelling or has no tokenizer,
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


def cross_tokenizer_record(kd: KDConfig) -> dict[str, Any]:
    """What every epoch of a cross-tokenizer run logs about its teacher source."""
    return {
        "teacher_source": "live",
        "teacher_source_reason": f"the teacher reads the text with its own tokenizer ({kd.teacher_tokenizer}), "
        "aligned by bytes in each batch: a teacher cache stores outputs at the student's token positions",
    }


__all__ = [
    "CrossTokenizerTeacher",
    "cross_tokenizer_record",
    "cross_tokenizer_teacher",
    "data_tokenizer",
    "retokenized_split",
    "teacher_view",
]
