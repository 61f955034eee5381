"""Byte alignment of two tokenizations: chunks where both end a token, multi-byte UTF-8, real BPEs."""

from __future__ import annotations

import pytest
import torch

from distil.data.alignment import (
    NO_CHUNK,
    Alignment,
    TokenizerBytes,
    align_row,
    align_rows,
    chunk_ids,
    encode_spans,
    valid_utf8_runs,
)
from distil.data.batch import IGNORE_INDEX
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.tokenize import get_tokenizer
from distil.errors import DataError

TEXTS = [
    "The quick brown fox jumps over the lazy dog. A naïve café serves crème brûlée.",
    "def add(x, y):\n    return x + y\n\nprint(add(1, 2))  # 3\n",
    "日本語のテキストと English text, mixed — with dashes… and émojis 🙂.",
]


@pytest.fixture(scope="module")
def bpes(tmp_path_factory) -> tuple[TokenizerBytes, TokenizerBytes]:
    """Two deliberately different byte-level BPEs, trained in memory on a few sentences."""
    root = tmp_path_factory.mktemp("bpe")
    a = train_byte_bpe(TEXTS * 10, 320, root / "a")
    b = train_byte_bpe([t.upper() + t[::-1] for t in TEXTS] * 10, 290, root / "b")
    return TokenizerBytes.of(get_tokenizer(a)), TokenizerBytes.of(get_tokenizer(b))


@pytest.fixture(scope="module")
def byte() -> TokenizerBytes:
    return TokenizerBytes.of(get_tokenizer("byte"))


def test_chunks_of_hand_made_tokenizations() -> None:
    # "abcde": student ab|c|de, teacher a|bc|de: both end at 3 and 5 -> chunks [0,3) and [3,5).
    s, t = chunk_ids([(0, 2), (2, 3), (3, 5)], [(0, 1), (1, 3), (3, 5)])
    assert s == [0, 0, 1] and t == [0, 0, 1]
    # A teacher that leaves bytes 2..3 unread: the chunk holding them is covered by one side only.
    s, t = chunk_ids([(0, 1), (1, 2), (2, 3), (3, 4)], [(0, 1), (1, 2), (3, 4)])
    assert s == [0, 1, NO_CHUNK, 2] and t == [0, 1, 2]


def test_valid_runs_skip_cut_characters() -> None:
    data = "é".encode()[1:] + b"ab" + "é".encode() + "日".encode()[:2]
    assert valid_utf8_runs(data) == [(1, 5)]
    assert valid_utf8_runs(b"a\xffb") == [(0, 1), (2, 3)]


def test_byte_rows_cut_mid_character_align_on_whole_characters(byte) -> None:
    text = "naïve café"
    ids = list(text.encode())[3:]  # starts inside ï
    row = align_row(ids, byte, byte)
    assert bytes(row.teacher_ids) == "ve café".encode()
    assert row.student_chunks[0] == NO_CHUNK  # the lone continuation byte is read by no teacher
    # The first chunk after the gap and the last of the row (cut by the block) are not compared.
    assert row.student_chunks[1] == NO_CHUNK and row.student_chunks[-1] == NO_CHUNK
    assert all(c != NO_CHUNK for c in row.student_chunks[2:-1])


def test_round_trip_through_both_tokenizers_reproduces_the_text(bpes, byte) -> None:
    a, b = bpes
    for text in TEXTS:
        for student, teacher in ((byte, a), (a, b), (b, a), (a, byte)):
            ids, _ = encode_spans(student, text)
            row = align_row(ids, student, teacher)
            assert teacher.tokenizer.decode(row.teacher_ids) == text
            assert row.teacher_ids == teacher.tokenizer.encode(text)


def test_chunks_join_tokens_that_cover_the_same_bytes(bpes) -> None:
    a, b = bpes
    text = TEXTS[2]
    s_ids, s_lens = encode_spans(a, text)
    row = align_row(s_ids, a, b)
    t_lens = b.lengths(row.teacher_ids)
    chunks = sorted(set(row.student_chunks) - {NO_CHUNK})
    assert chunks and chunks == sorted(set(row.teacher_chunks) - {NO_CHUNK})
    raw = text.encode()
    for c in chunks:
        s_bytes = b"".join(
            a.table[i] or b"" for i, k in zip(s_ids, row.student_chunks, strict=False) if k == c
        )
        t_bytes = b"".join(
            b.table[i] or b"" for i, k in zip(row.teacher_ids, row.teacher_chunks, strict=False) if k == c
        )
        assert s_bytes == t_bytes and s_bytes in raw
    assert sum(s_lens) == sum(t_lens) == len(raw)


def test_eos_is_a_chunk_of_its_own_and_the_first_tokens_are_context(bpes, byte) -> None:
    a, _ = bpes
    ids = [*list(b"The fox"), byte.eos_id, *list(b"ef")]
    inputs, labels = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    al = align_rows(inputs, labels, byte, a)
    teacher_ids = [*a.tokenizer.encode("The fox"), a.eos_id, *a.tokenizer.encode("ef")]
    assert a.lengths(teacher_ids[:1]) == [3]  # "The" is one token of the teacher
    assert al.teacher_inputs[0].tolist() == teacher_ids[:-1]
    assert al.teacher_targets[0].tolist() == teacher_ids[1:]
    eos_pos_s = ids.index(byte.eos_id) - 1
    eos_pos_t = teacher_ids.index(a.eos_id) - 1
    assert al.student_chunks[0, eos_pos_s] == al.teacher_chunks[0, eos_pos_t] != NO_CHUNK
    # Positions 0 and 1 predict "h" and "e", inside the teacher's first token (never predicted).
    assert al.student_chunks[0, :2].tolist() == [NO_CHUNK, NO_CHUNK]
    assert al.student_chunks[0, 2] != NO_CHUNK


def test_identical_tokenizers_give_one_chunk_per_token(byte) -> None:
    ids = torch.tensor([list(b"hello world")])
    al = align_rows(ids[:, :-1], ids[:, 1:], byte, byte)
    assert al.num_chunks == 9  # the last token's chunk ends where the block cuts the text: not compared
    assert torch.equal(al.student_chunks, al.teacher_chunks)
    assert torch.equal(al.teacher_inputs, ids[:, :-1]) and torch.equal(al.student_targets, ids[:, 1:])


def test_a_tokenizer_that_changes_the_text_is_refused(byte) -> None:
    class Lower:
        def encode(self, text: str) -> list[int]:
            return list(text.lower().encode())

    lower = TokenizerBytes(Lower(), byte.table, byte.eos_id)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="does not reproduce"):
        encode_spans(lower, "ABC")


def test_an_id_past_the_students_tokenizer_ends_the_row_like_padding(byte) -> None:
    """A student whose output is padded beyond its tokenizer may sample such an id on-policy: it spells
    no text, so the row's text ends there instead of the run stopping with an error."""
    ids = [*b"abc def", len(byte.table) + 3, *b"ghi"]
    row = align_row(ids, byte, byte)
    assert bytes(row.teacher_ids) == b"abc def"
    assert all(c == NO_CHUNK for c in row.student_chunks[7:])
    with pytest.raises(DataError, match="outside the student's vocabulary"):
        align_row([*b"ab", -5], byte, byte)


@pytest.fixture(scope="module")
def chat(tmp_path_factory, bpes) -> TokenizerBytes:
    """A byte-level BPE with ChatML special tokens and a pad token, as chat models' tokenizers have."""
    root = tmp_path_factory.mktemp("chat")
    tok = get_tokenizer(train_byte_bpe([t[::-1] for t in TEXTS] * 10, 280, root / "base"))
    tok.hf.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "pad_token": "<pad>"}
    )
    tok.hf.save_pretrained(str(root / "chat"))
    return TokenizerBytes.of(get_tokenizer(f"hf:{root / 'chat'}"))


def _chat_row(chat: TokenizerBytes, block: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A ChatML conversation as data/chat.py makes its row: prompt masked, right-padded with the pad id."""
    text = (
        "<|im_start|>user\nwhat is two plus two<|im_end|>\n"
        "<|im_start|>assistant\nthe assistant says four<|im_end|>"
    )
    ids = chat.tokenizer.encode(text)
    start = ids.index(chat.tokenizer.hf.convert_tokens_to_ids("<|im_start|>"), 1)
    pad = chat.tokenizer.pad_id  # what data/chat.py pads with (pad_id_of)
    assert pad is not None and pad != chat.eos_id
    x = ids[:-1] + [pad] * (block - len(ids) + 1)
    y = ids[1:] + [IGNORE_INDEX] * (block - len(ids) + 1)
    y[: start + 3] = [IGNORE_INDEX] * (start + 3)  # the prompt and the assistant's header
    return torch.tensor([x]), torch.tensor([y]), start


def test_special_tokens_other_than_eos_separate_text_and_only_padding_ends_the_row(chat, bpes) -> None:
    """A ChatML row starts with <|im_start|>: the completion's text after it is compared (rev24), the
    special tokens themselves are in no chunk, and the padding after the conversation ends the row."""
    teacher, _ = bpes
    x, y, _ = _chat_row(chat, 64)
    al = align_rows(x, y, chat, teacher)
    completion = (y != IGNORE_INDEX) & (al.student_chunks >= 0)
    assert int(completion.sum()) > 0
    specials = {chat.tokenizer.hf.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")}
    targets = al.student_targets[0].tolist()
    assert all(al.student_chunks[0, i] == NO_CHUNK for i, t in enumerate(targets) if t in specials)
    pad = chat.tokenizer.pad_id
    assert all(al.student_chunks[0, i] == NO_CHUNK for i, t in enumerate(targets) if t == pad)
    # The teacher reads the text between the special tokens, none of theirs (it has no such tokens).
    read = [*al.teacher_inputs[0].tolist(), int(al.teacher_targets[0, -1])]
    spelled = b"".join(teacher.table[i] or b"" for i in read)
    assert b"im_start" not in spelled and b"the assistant says four" in spelled


def test_text_holding_a_special_tokens_string_is_read_as_text(bpes, byte) -> None:
    """A literal '<|endoftext|>' in the text is the teacher's characters, not its EOS id (rev24): the
    teacher's HF encode would otherwise turn it into an id that spells no bytes and stop the run."""
    teacher, _ = bpes
    text = "print('<|endoftext|>') marks the end of a document."
    row = align_row(list(text.encode()), byte, teacher)
    assert b"".join(teacher.table[i] or b"" for i in row.teacher_ids) == text.encode()
    assert teacher.eos_id not in row.teacher_ids


def _last_counted(al: Alignment, row: int = 0) -> int:
    """The last student position of a row whose chunk is compared."""
    return max(i for i, c in enumerate(al.student_chunks[row].tolist()) if c != NO_CHUNK)


def test_the_last_chunk_is_compared_only_when_the_row_ends_at_eos(bpes, byte) -> None:
    """The teacher encodes a row cut by the block as it stands, so its last token is often a fragment it
    would not use in context: that chunk is dropped, unless the text ends there (EOS)."""
    a, _ = bpes
    cut = torch.tensor([list(b"The quick brown fox jumps")])
    al = align_rows(cut[:, :-1], cut[:, 1:], byte, a)
    last_teacher_chunk = int(al.teacher_chunks[0, (al.teacher_targets[0] != IGNORE_INDEX).sum() - 1])
    assert last_teacher_chunk == NO_CHUNK and _last_counted(al) < cut.shape[1] - 2
    whole = torch.tensor([[*b"The quick brown fox jumps", byte.eos_id]])
    al = align_rows(whole[:, :-1], whole[:, 1:], byte, a)
    assert _last_counted(al) == whole.shape[1] - 2  # the EOS, a chunk of its own, and what precedes it
    assert int(al.student_chunks[0, -2]) != NO_CHUNK


def test_the_first_chunk_after_invalid_utf8_is_not_compared(byte) -> None:
    ids = [*b"ab", 0xFF, *b"cd", byte.eos_id]
    row = align_row(ids, byte, byte)
    # "b" ends at the gap, 0xFF is read by no teacher, "c" starts after it: none compared; "d" and EOS are.
    assert row.student_chunks[1:4] == [NO_CHUNK] * 3
    assert NO_CHUNK not in (row.student_chunks[4], row.student_chunks[5])
