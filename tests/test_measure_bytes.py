"""Bits per byte: the same number for any tokenizer of a model that spreads its probability evenly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distil.data.text import TokenRowSplit
from distil.data.tokenize import get_tokenizer
from distil.measure.bytes import split_bits_per_byte


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
