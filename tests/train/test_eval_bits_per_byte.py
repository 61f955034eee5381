"""Per-epoch validation of a language model reports bits per byte where the tokenizer's bytes are known,
from the same streamed sums as the report's measurement."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from distil.api import train_model
from distil.config import TrainConfig
from distil.data import load_dataset
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.text import load_text
from distil.data.tokenize import get_tokenizer
from distil.measure.bytes import split_bits_per_byte
from distil.models import create_model
from tests.teachers.tiny_lm import tiny_llama

TEXT = "the cat sat on the mat. the dog sat on the log.\n"


def _lm(vocab: int) -> torch.nn.Module:
    return tiny_llama(vocab, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bpb")
    (root / "corpus").mkdir()
    for i in range(3):
        (root / "corpus" / f"d{i}.txt").write_text(TEXT * (i + 3))
    return root


def _data(root: Path, tokenizer: str):
    cache = root / f"c-{Path(tokenizer).name}"
    return load_text(
        root / "corpus",
        tokenizer=tokenizer,
        block_size=16,
        split_by="blocks",
        val_fraction=0.2,
        cache_dir=cache,
    )


CFG = TrainConfig(epochs=1, batch_size=4, lr=1e-3, max_steps=2)


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_each_epoch_reports_val_bits_per_byte_as_the_measurement_computes_it(
    corpus: Path, tokenizer: str
) -> None:
    name = "byte" if tokenizer == "byte" else train_byte_bpe([TEXT] * 20, 270, corpus / "bpe")
    data = _data(corpus, name)
    tok = get_tokenizer(name)
    model = _lm(tok.vocab_size)
    record = train_model(model, data, CFG).history[-1]
    expect = split_bits_per_byte(model, data.val, tok, batch_size=32)
    assert record["val_bits_per_byte"] == pytest.approx(expect["bits_per_byte"], rel=1e-6)
    assert record["eval_bits_per_byte"] == record["val_bits_per_byte"]
    assert record["val_byte_perplexity"] == pytest.approx(2.0 ** record["val_bits_per_byte"], rel=1e-9)
    # Per token vs per byte: the same summed NLL over more bytes than tokens (a BPE's tokens are longer).
    assert record["val_bits_per_byte"] <= record["val_loss"] / math.log(2) + 1e-9


def test_no_bits_per_byte_when_the_tokenizer_changed_or_for_classifiers(corpus: Path) -> None:
    data = _data(corpus, "byte")
    changed = dataclasses.replace(data, extra={**data.extra, "tokenizer": "byte-v0-other"})
    record = train_model(_lm(259), changed, CFG).history[-1]
    assert "val_perplexity" in record and "val_bits_per_byte" not in record
    digits = load_dataset("digits", limit=100)
    torch.manual_seed(0)
    net = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    record = train_model(net, digits, TrainConfig(epochs=1, batch_size=32)).history[-1]
    assert "val_accuracy" in record and not any("bits_per_byte" in k for k in record)
