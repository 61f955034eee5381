"""Review of issue 24 (rev24): cross-tokenizer alignment cases the suite does not cover.

Both tests fail on main at 8e25675.
"""

from __future__ import annotations

import pytest
import torch

from distil.data.alignment import TokenizerBytes, align_row, align_rows
from distil.data.batch import IGNORE_INDEX
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError

TEXTS = [
    "The quick brown fox jumps over the lazy dog. A naive cafe.",
    "def add(x, y):\n    return x + y\n",
    "user asks what is two plus two and the assistant says four",
] * 10


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    root = tmp_path_factory.mktemp("rev24")
    teacher = TokenizerBytes.of(get_tokenizer(train_byte_bpe(TEXTS, 300, root / "teacher")))
    student = get_tokenizer(train_byte_bpe([t[::-1] for t in TEXTS], 280, root / "student"))
    # A student tokenizer with ChatML-style special tokens, as an HF chat template renders them.
    student.hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    student.hf.save_pretrained(str(root / "student_chat"))
    chat = TokenizerBytes.of(get_tokenizer(f"hf:{root / 'student_chat'}"))
    return chat, teacher


def test_a_chat_rows_completion_is_compared_or_refused_not_silently_dropped(toks) -> None:
    """A ChatML row starts with <|im_start|> (a special token without bytes): align_row treats it as
    padding and ends the row at position 0, so no chunk of the assistant's completion is compared and
    alm/uld are silently 0 on every chat row. Expected: the completion's text is compared (special tokens
    as separators, like EOS), or the run is refused with a message."""
    chat, teacher = toks
    text = (
        "<|im_start|>user\nwhat is two plus two<|im_end|>\n"
        "<|im_start|>assistant\nthe assistant says four<|im_end|>"
    )
    ids = chat.tokenizer.encode(text)
    start = ids.index(chat.tokenizer.hf.convert_tokens_to_ids("<|im_start|>"), 1)
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    y[0, : start + 3] = IGNORE_INDEX  # the prompt, as data/chat.py masks it
    try:
        al = align_rows(x, y, chat, teacher)
    except (ConfigError, ValueError) as e:  # a refusal naming the problem is acceptable
        assert "special" in str(e)
        return
    completion = (y != IGNORE_INDEX) & (al.student_chunks >= 0)
    assert int(completion.sum()) > 0, f"{al.num_chunks} chunks: the completion is never compared"


def test_text_holding_the_teachers_special_token_string_is_read_as_text(toks) -> None:
    """A byte student's text that contains the literal string '<|endoftext|>' (code about tokenizers, chat
    logs): the teacher's HF encode turns it into its EOS id, which spells no bytes, and encode_spans
    raises DataError blaming a normalizer/prefix space: the run stops mid-epoch. Expected: the teacher
    reads it as text (encode with split_special_tokens=True), or it is a separator as the student's EOS."""
    _, teacher = toks
    byte = TokenizerBytes.of(get_tokenizer("byte"))
    text = "print('<|endoftext|>') marks the end of a document."
    row = align_row(list(text.encode()), byte, teacher)
    assert b"".join(teacher.table[i] or b"" for i in row.teacher_ids) == text.encode()
