"""Aligning two tokenizations of one text by bytes: the chunks where both tokenizers end a token.

A teacher and a student with different tokenizers read the same text as different token sequences. The
alignment is exact: a *chunk* is the text between two consecutive byte offsets at which both tokenizations
have a token boundary, so both models' tokens over a chunk spell the same bytes after the same preceding
bytes. The sum of a model's token log-probabilities over a chunk is the log-probability of *its own token
sequence* for those bytes, not of the bytes (other tokenizations of them have probability too): comparing
the two sums (`distil.losses.crosstok`) is an approximate likelihood match.

Offsets are measured in *units*: one per byte, and one for each special token without bytes. The student's
end-of-sequence token (which joins documents) is the teacher's EOS, a chunk of its own. Another special
token (a chat template's ``<|im_start|>``) separates the text around it: it has a unit the teacher does not
read, so it is in no chunk, and the teacher's text continues after it. The student's padding token (where it
differs from EOS: the chat rows' padding) ends the row's text. A token's bytes
come from its tokenizer's byte table (:func:`byte_table`: the byte tokenizer's are trivial, a byte-level
BPE's come from its vocabulary), so a student's ids, from data or from its own generations, are turned into
the text the teacher reads without decoding and re-encoding through strings that could change it;
:func:`encode_spans` checks that the teacher's tokens concatenate back to exactly the text it was given.

The row-level entry point is :func:`align_rows`: (B, T) student inputs and next-token labels in, the
teacher's ids of the same text and, per position of either model, the chunk of the token it predicts.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from distil.data.batch import IGNORE_INDEX
from distil.data.tokenize import ByteTokenizer, Tokenizer
from distil.errors import ConfigError, DataError

NO_CHUNK = -1
"""The chunk id of a position whose predicted token lies in no chunk both models cover whole."""


def _gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of the printable-character alphabet byte-level BPEs (GPT-2's) spell bytes with."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _hf_byte_table(hf: Any, where: str) -> list[bytes | None]:
    """The bytes of every id of a byte-level Hugging Face fast tokenizer (special tokens: None)."""
    backend = getattr(hf, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None or type(decoder).__name__ != "ByteLevel":
        raise ConfigError(
            f"the tokenizer {where} is not byte-level (its decoder is {type(decoder).__name__}), so its tokens' "
            "bytes are not known exactly; cross-tokenizer distillation supports the byte tokenizer and "
            "byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, or one trained with tokenizers' ByteLevel)."
        )
    inverse = _gpt2_byte_decoder()
    added = {int(i): tok for i, tok in getattr(hf, "added_tokens_decoder", {}).items()}
    table: list[bytes | None] = []
    for i, piece in enumerate(hf.convert_ids_to_tokens(list(range(len(hf))))):
        if i in added:
            table.append(None if added[i].special else added[i].content.encode("utf-8"))
        elif piece is None or any(ch not in inverse for ch in piece):
            table.append(None)
        else:
            table.append(bytes(inverse[ch] for ch in piece))
    return table


def byte_table(tokenizer: Tokenizer) -> list[bytes | None]:
    """The bytes each id stands for (None for special tokens: EOS, BOS, PAD, ...), indexed by id.

    Raises:
        ConfigError: a tokenizer whose tokens' bytes cannot be known exactly (not byte-level).
    """
    if isinstance(tokenizer, ByteTokenizer):
        return [bytes([i]) for i in range(ByteTokenizer.BYTES)] + [None] * (tokenizer.vocab_size - 256)
    hf = getattr(tokenizer, "hf", None)
    if hf is None:
        raise ConfigError(
            f"{tokenizer!r}: cross-tokenizer alignment needs each token's bytes, known for the byte tokenizer "
            "and byte-level Hugging Face tokenizers (hf:DIR)."
        )
    return _hf_byte_table(hf, repr(tokenizer))


@dataclass
class TokenizerBytes:
    """A tokenizer with its byte table, built once (an HF vocabulary's table takes a moment)."""

    tokenizer: Tokenizer
    table: list[bytes | None]
    eos_id: int
    pad_id: int | None = None
    """The id rows are padded with where it is not EOS (`distil.data.chat.pad_id_of`); None: no such id."""

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> TokenizerBytes:
        pad = getattr(tokenizer, "pad_id", None)
        eos = tokenizer.eos_id
        return cls(tokenizer, byte_table(tokenizer), eos, None if pad is None or pad == eos else int(pad))

    def lengths(self, ids: Sequence[int]) -> list[int]:
        """The byte length of each id (0 for special tokens)."""
        return [len(self.table[i] or b"") for i in ids]


def encode_text(tok: TokenizerBytes, text: str) -> list[int]:
    """The ids of `text` read as text: a special token's string in it ("<|endoftext|>") is spelled out.

    A Hugging Face tokenizer turns such a string into its special id even without added special tokens;
    that id spells no bytes, so the text would not be reproduced. `split_special_tokens=True` reads it as
    the characters it is.
    """
    hf = getattr(tok.tokenizer, "hf", None)
    if hf is None:
        return tok.tokenizer.encode(text)
    ids: list[int] = hf(text, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
    return ids


def encode_spans(tok: TokenizerBytes, text: str) -> tuple[list[int], list[int]]:
    """The ids of `text` and each id's byte length, checked to concatenate back to `text`'s UTF-8 bytes.

    Raises:
        DataError: the tokens do not spell the text (a tokenizer that normalizes, adds a prefix space, or
            reads a special token's string as its special id): the two models would then read different
            texts.
    """
    ids = encode_text(tok, text)
    pieces = [tok.table[i] or b"" for i in ids]
    if b"".join(pieces) != text.encode("utf-8"):
        raise DataError(
            f"{tok.tokenizer!r} does not reproduce the text it encodes ({text[:40]!r}... becomes "
            f"{b''.join(pieces)[:40]!r}...): it normalizes the text, adds a prefix space, or turns a special "
            "token's string in the text into a special id, so its tokens cannot be aligned with another "
            "tokenizer's by bytes. Use a tokenizer without normalizers (add_prefix_space false) whose "
            "special tokens are not split out of text (split_special_tokens)."
        )
    return ids, [len(p) for p in pieces]


def valid_utf8_runs(data: bytes) -> list[tuple[int, int]]:
    """The maximal stretches of `data` that are valid UTF-8, as (start, end) byte offsets.

    A block of a byte stream may start or end inside a character, and a model's sample may hold any bytes:
    the teacher reads only the text it can, and chunks touching the rest are not compared.
    """
    runs: list[tuple[int, int]] = []
    start = p = 0
    n = len(data)
    while p < n:
        b = data[p]
        size = (
            1
            if b < 0x80
            else 2
            if 0xC2 <= b < 0xE0
            else 3
            if 0xE0 <= b < 0xF0
            else 4
            if 0xF0 <= b < 0xF5
            else 0
        )
        ok = size > 0 and p + size <= n
        if ok and size > 1:
            try:
                data[p : p + size].decode("utf-8")
            except UnicodeDecodeError:
                ok = False
        if ok:
            p += size
            continue
        if p > start:
            runs.append((start, p))
        p += 1
        start = p
    if n > start:
        runs.append((start, n))
    return runs


def chunk_ids(
    student_spans: Sequence[tuple[int, int]], teacher_spans: Sequence[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """The chunk of each student token and each teacher token, from their (start, end) unit spans.

    Chunks are the intervals between consecutive offsets where both tokenizations have a boundary. A chunk
    is kept only when both sides cover it whole (their tokens' lengths add up to its width on each side)
    and each side has at least one token in it; the tokens of any other chunk get `NO_CHUNK`. Kept chunks
    are numbered 0, 1, ... in text order.

    Args:
        student_spans: per student token, its [start, end) in units, increasing.
        teacher_spans: the same for the teacher's tokens (they may leave gaps: bytes it could not read).

    Returns:
        (student chunk per token, teacher chunk per token).
    """
    s_bounds = {a for a, _ in student_spans} | {b for _, b in student_spans}
    t_bounds = {a for a, _ in teacher_spans} | {b for _, b in teacher_spans}
    common = sorted(s_bounds & t_bounds)

    def raw(spans: Sequence[tuple[int, int]]) -> list[int]:
        # A token lies in the interval that starts at the last common boundary at or before its start.
        return [bisect.bisect_right(common, a) - 1 for a, _ in spans]

    s_raw, t_raw = raw(student_spans), raw(teacher_spans)
    width_s: dict[int, int] = {}
    width_t: dict[int, int] = {}
    for c, (a, b) in zip(s_raw, student_spans, strict=True):
        width_s[c] = width_s.get(c, 0) + (b - a)
    for c, (a, b) in zip(t_raw, teacher_spans, strict=True):
        width_t[c] = width_t.get(c, 0) + (b - a)
    keep = sorted(
        c
        for c in width_s
        if 0 <= c < len(common) - 1 and width_s[c] == width_t.get(c) == common[c + 1] - common[c]
    )
    number = {c: k for k, c in enumerate(keep)}
    return [number.get(c, NO_CHUNK) for c in s_raw], [number.get(c, NO_CHUNK) for c in t_raw]


@dataclass
class RowAlignment:
    """One row's teacher tokens and the chunk of every token of both models (`chunk_ids`).

    `student_spans` and `teacher_spans` are each token's (start, end) units in the row's text (one per
    byte, one per special token); the student's stop where the row's text does (at padding).
    """

    teacher_ids: list[int]
    student_chunks: list[int]
    teacher_chunks: list[int]
    student_spans: list[tuple[int, int]] = field(default_factory=list)
    teacher_spans: list[tuple[int, int]] = field(default_factory=list)


def drop_cut_chunks(
    student_chunks: list[int],
    teacher_chunks: list[int],
    student_spans: Sequence[tuple[int, int]],
    cut_starts: set[int],
    cut_ends: set[int],
) -> tuple[list[int], list[int]]:
    """Both sides' chunks without those that start in `cut_starts` or end in `cut_ends`, renumbered.

    Where the text is cut (the row's end inside the text, a gap of invalid UTF-8), the teacher encodes a
    fragment: its token there is often one it would not use in context (the row "...hel" ends with "hel"
    where the text goes on "hello"), so its likelihood of the chunk is biased low. Such chunks are not
    compared, as a row's first chunk is not.
    """
    bounds: dict[int, tuple[int, int]] = {}
    for c, (a, b) in zip(student_chunks, student_spans, strict=False):
        if c != NO_CHUNK:
            lo, hi = bounds.get(c, (a, b))
            bounds[c] = (min(lo, a), max(hi, b))
    keep = sorted(c for c, (a, b) in bounds.items() if a not in cut_starts and b not in cut_ends)
    number = {c: k for k, c in enumerate(keep)}

    def renumbered(chunks: list[int]) -> list[int]:
        return [number.get(c, NO_CHUNK) for c in chunks]

    return renumbered(student_chunks), renumbered(teacher_chunks)


def align_row(student_ids: Sequence[int], student: TokenizerBytes, teacher: TokenizerBytes) -> RowAlignment:
    """The teacher's tokens of the text `student_ids` spell, and both sides' chunks.

    The student's tokens are turned into bytes by its byte table; each stretch between special tokens is
    encoded by the teacher (each valid UTF-8 run of it separately), and the student's EOS becomes the
    teacher's. Another special token without bytes separates the stretches: one unit that the teacher does
    not read (in no chunk). The student's padding id (`TokenizerBytes.pad_id`) ends the row: it and what
    follows get no chunk. So does an id past the tokenizer's table: a model whose output is padded beyond
    its tokenizer can sample one on-policy, and it spells no text. Chunks at a cut in the text are dropped
    (`drop_cut_chunks`): the last one when the row's text runs to its last token, and those next to a gap
    of invalid UTF-8.

    Raises:
        DataError: a negative student id, or a teacher tokenizer that does not reproduce the text
            (`encode_spans`).
    """
    s_spans: list[tuple[int, int]] = []
    t_ids: list[int] = []
    t_spans: list[tuple[int, int]] = []
    cut_starts: set[int] = set()
    cut_ends: set[int] = set()
    unit = 0
    segment = bytearray()
    seg_start = 0
    in_text = False  # whether the last token read spelled bytes (the row's end then cuts the text)

    def flush() -> None:
        data = bytes(segment)
        for a, b in valid_utf8_runs(data):
            if a > 0:
                cut_starts.add(seg_start + a)
            if b < len(data):
                cut_ends.add(seg_start + b)
            ids, lens = encode_spans(teacher, data[a:b].decode("utf-8"))
            pos = seg_start + a
            for i, n in zip(ids, lens, strict=True):
                t_ids.append(i)
                t_spans.append((pos, pos + n))
                pos += n
        segment.clear()

    for i in student_ids:
        i = int(i)
        if i < 0:
            raise DataError(f"token id {i} is outside the student's vocabulary [0, {len(student.table)})")
        if i == student.pad_id or i >= len(student.table):
            in_text = False  # the text before padding is whole
            break
        piece = student.table[i]
        in_text = piece is not None
        if piece is not None:
            s_spans.append((unit, unit + len(piece)))
            segment.extend(piece)
            unit += len(piece)
            continue
        flush()
        s_spans.append((unit, unit + 1))
        if i == student.eos_id:
            t_ids.append(teacher.eos_id)
            t_spans.append((unit, unit + 1))
        unit += 1
        seg_start = unit
    flush()
    if in_text:
        cut_ends.add(unit)
    s_chunks, t_chunks = chunk_ids(s_spans, t_spans)
    s_chunks, t_chunks = drop_cut_chunks(s_chunks, t_chunks, s_spans, cut_starts, cut_ends)
    s_chunks += [NO_CHUNK] * (len(student_ids) - len(s_chunks))
    return RowAlignment(t_ids, s_chunks, t_chunks, s_spans, t_spans)


@dataclass
class Alignment:
    """A batch's alignment between the student's positions and the teacher's.

    Position ``i`` of a model predicts its token ``i + 1``; its chunk is that token's. Chunk ids are
    numbered across the batch (row by row), so sums over chunks are one scatter.

    Attributes:
        student_targets: (B, T) the token each student position predicts (`IGNORE_INDEX` where unknown).
        student_chunks: (B, T) the chunk of that token, `NO_CHUNK` where it is in none.
        teacher_inputs: (B, U) the teacher's ids of the same text (all but its last token), padded.
        teacher_targets: (B, U) the token each teacher position predicts (`IGNORE_INDEX` on padding).
        teacher_chunks: (B, U) the chunk of that token, `NO_CHUNK` where none.
        num_chunks: chunks in the batch.
    """

    student_targets: torch.Tensor
    student_chunks: torch.Tensor
    teacher_inputs: torch.Tensor
    teacher_targets: torch.Tensor
    teacher_chunks: torch.Tensor
    num_chunks: int

    def to(self, device: torch.device | str) -> Alignment:
        return Alignment(
            self.student_targets.to(device),
            self.student_chunks.to(device),
            self.teacher_inputs.to(device),
            self.teacher_targets.to(device),
            self.teacher_chunks.to(device),
            self.num_chunks,
        )


def row_tokens(inputs: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """Each row's whole token sequence: its inputs, then the last label when it is a token.

    Labels are the next tokens (``labels[i] == inputs[i + 1]``), `IGNORE_INDEX` on prompts and padding;
    the inputs hold the prompt's tokens too, so only the last label adds a token.
    """
    rows = []
    for x, y in zip(inputs.tolist(), labels.tolist(), strict=True):
        rows.append(x + ([y[-1]] if y[-1] != IGNORE_INDEX else []))
    return rows


def align_rows(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    student: TokenizerBytes,
    teacher: TokenizerBytes,
    *,
    max_teacher_len: int | None = None,
) -> Alignment:
    """Align a batch of student rows with the teacher's tokenization of the same text.

    Args:
        inputs: (B, T) student ids.
        labels: (B, T) next-token ids, `IGNORE_INDEX` where a position has no label (the alignment does
            not mask them: the loss does, with the batch's mask of positions that count).
        student, teacher: the two tokenizers with their byte tables.
        max_teacher_len: the most tokens the teacher reads per row (its context length); the rest of a
            row's chunks are not compared. None: no limit.

    Returns:
        The `Alignment` (on the CPU).
    """
    b, t = inputs.shape
    rows = row_tokens(inputs.cpu(), labels.cpu())
    aligned = [align_row(r, student, teacher) for r in rows]
    if max_teacher_len is not None:
        for row in aligned:
            cut = max_teacher_len + 1  # U inputs predict U targets
            if len(row.teacher_ids) > cut:
                dropped = set(row.teacher_chunks[cut:]) - {NO_CHUNK}
                row.teacher_ids = row.teacher_ids[:cut]
                row.teacher_chunks = [NO_CHUNK if c in dropped else c for c in row.teacher_chunks[:cut]]
                row.student_chunks = [NO_CHUNK if c in dropped else c for c in row.student_chunks]
    u = max(1, max(len(r.teacher_ids) for r in aligned) - 1)
    s_targets = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    s_chunks = torch.full((b, t), NO_CHUNK, dtype=torch.long)
    t_inputs = torch.full((b, u), teacher.eos_id, dtype=torch.long)
    t_targets = torch.full((b, u), IGNORE_INDEX, dtype=torch.long)
    t_chunks = torch.full((b, u), NO_CHUNK, dtype=torch.long)
    offset = 0
    for k, (tokens, row) in enumerate(zip(rows, aligned, strict=True)):
        # Position i predicts token i + 1: the first token of each side is context only.
        n = len(tokens) - 1
        s_targets[k, :n] = torch.tensor(tokens[1:], dtype=torch.long)
        used = [c for c in row.student_chunks[1 : n + 1]] + [c for c in row.teacher_chunks[1:]]
        first = {row.student_chunks[0], row.teacher_chunks[0] if row.teacher_chunks else NO_CHUNK}
        # A chunk holding either side's first token is not predicted whole by that side: not compared.
        keep = sorted(set(used) - first - {NO_CHUNK})
        number = {c: offset + j for j, c in enumerate(keep)}
        s_chunks[k, :n] = torch.tensor([number.get(c, NO_CHUNK) for c in row.student_chunks[1 : n + 1]])
        m = len(row.teacher_ids) - 1
        if m > 0:
            t_inputs[k, :m] = torch.tensor(row.teacher_ids[:-1], dtype=torch.long)
            t_targets[k, :m] = torch.tensor(row.teacher_ids[1:], dtype=torch.long)
            t_chunks[k, :m] = torch.tensor([number.get(c, NO_CHUNK) for c in row.teacher_chunks[1:]])
        offset += len(keep)
    return Alignment(s_targets, s_chunks, t_inputs, t_targets, t_chunks, offset)


def identity_alignment(labels: torch.Tensor, inputs: torch.Tensor | None = None) -> Alignment:
    """The alignment of one tokenizer with itself: every labelled position is a chunk of one token.

    Args:
        labels: (B, T) next-token ids, `IGNORE_INDEX` where none.
        inputs: the teacher's inputs (the same ids; only carried along).
    """
    valid = labels != IGNORE_INDEX
    chunks = torch.full_like(labels, NO_CHUNK, dtype=torch.long)
    count = int(valid.sum())
    chunks[valid] = torch.arange(count, device=labels.device)
    feed = inputs if inputs is not None else labels.clamp(min=0)
    return Alignment(labels, chunks, feed, labels, chunks, count)


__all__ = [
    "NO_CHUNK",
    "Alignment",
    "RowAlignment",
    "TokenizerBytes",
    "align_row",
    "align_rows",
    "byte_table",
    "chunk_ids",
    "drop_cut_chunks",
    "encode_spans",
    "encode_text",
    "identity_alignment",
    "row_tokens",
    "valid_utf8_runs",
]
