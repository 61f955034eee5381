"""Bits per byte: the same number for any tokenizer of a model that spreads its probability evenly, and in
every language model's measurement (`distil.measure.measure`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.text import TokenRowSplit
from distil.data.tokenize import get_tokenizer
from distil.measure import measure
from distil.measure.bytes import known_token_bytes, split_bits_per_byte, token_byte_lengths
from distil.measure.tasks import LM_TASK
from distil.run.lm_report import lm_token_bytes


class Uniform(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab) + self.anchor


def test_uniform_byte_model_costs_log2_vocab_bits_per_byte() -> None:
    ids = torch.tensor([list(b"hello world, bits per byte!")])
    labels = ids[:, 1:].clone()
    labels[0, :3] = -100  # a prompt: neither its NLL nor its bytes count
    split = TokenRowSplit(ids[:, :-1], labels)
    out = split_bits_per_byte(Uniform(259), split, get_tokenizer("byte"))
    assert out["bits_per_byte"] == pytest.approx(math.log2(259), rel=1e-5)
    assert out["bytes"] == labels.ne(-100).sum().item()


def test_measure_reports_bits_per_byte_and_byte_perplexity_beside_perplexity() -> None:
    """The one streaming measurement (`measure`) gives per-byte figures equal to the formula written out:
    summed NLL of the labelled tokens / the bytes they spell / ln 2; specials (EOS) spell no bytes."""
    torch.manual_seed(0)
    text = list(b"the quick brown fox jumps over the lazy dog")
    ids = torch.tensor([[*text[:20], 258], [*text[20:40], 258]])  # 258: the byte tokenizer's EOS
    labels = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], dim=1)
    labels[0, :2] = -100
    split = TokenRowSplit(ids, labels)
    model = nn.Sequential(nn.Embedding(259, 8), nn.Linear(8, 259))
    measured = measure(
        model,
        split,
        LM_TASK,
        latency=False,
        vocab_size=259,
        token_bytes=token_byte_lengths(get_tokenizer("byte")),
    )
    logits = model(ids)
    keep = labels != -100
    nll = nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
    spelled = int((labels[keep] < 256).sum())
    extra = measured.metrics.extra
    assert extra["bits_per_byte"] == pytest.approx(nll / spelled / math.log(2), rel=1e-5)
    assert extra["byte_perplexity"] == pytest.approx(2 ** extra["bits_per_byte"], rel=1e-9)
    assert extra["perplexity"] == pytest.approx(math.exp(nll / int(keep.sum())), rel=1e-5)
    # Without the tokenizer's bytes the row is per token only (no made-up per-byte figure).
    plain = measure(model, split, LM_TASK, latency=False, vocab_size=259).metrics.extra
    assert "bits_per_byte" not in plain and plain["perplexity"] == pytest.approx(extra["perplexity"])


def test_a_bpe_and_the_byte_tokenizer_give_one_per_byte_figure_for_one_text(tmp_path: Path) -> None:
    """A model that is uniform over its vocabulary costs log2(V) per token: per byte, that is
    log2(V) * tokens / bytes, whatever the tokenizer; the byte table of a BPE counts each token's bytes."""
    text = "low lower lowest newer newest wider widest " * 8
    bpe = get_tokenizer(train_byte_bpe([text], 300, tmp_path / "tok"))
    ids = torch.tensor([bpe.encode(text)])
    split = TokenRowSplit(ids[:, :-1], ids[:, 1:])
    lengths = token_byte_lengths(bpe)
    spelled = int(lengths[ids[0, 1:]].sum())
    assert spelled == len(text.encode()) - int(lengths[ids[0, 0]])
    extra = measure(Uniform(len(lengths)), split, LM_TASK, latency=False, token_bytes=lengths).metrics.extra
    tokens = ids.shape[1] - 1
    assert extra["bits_per_byte"] == pytest.approx(math.log2(len(lengths)) * tokens / spelled, rel=1e-5)


def test_a_tokenizer_whose_bytes_are_unknown_gives_no_per_byte_figure_and_says_why() -> None:
    class Words:
        vocab_size, eos_id = 10, 0

    lengths, why = known_token_bytes(Words())  # type: ignore[arg-type]
    assert lengths is None and "byte-level" in why
    assert known_token_bytes(None)[0] is None
    assert lm_token_bytes("classification", get_tokenizer("byte")) is None
    assert lm_token_bytes(LM_TASK, get_tokenizer("byte")) is not None
