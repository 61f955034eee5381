"""distill() with a teacher of another tokenizer: aligned by bytes when named, refused with the fix when not."""

from __future__ import annotations

import pytest
import torch

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.text import load_text
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError, DataError
from distil.models import create_model

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat.\n"


def _lm(vocab: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = {
        "model_type": "llama",
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    return create_model("hf-causal-lm", num_classes=vocab, config=config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("xtok")
    (root / "corpus").mkdir()
    for i in range(4):
        (root / "corpus" / f"d{i}.txt").write_text(TEXT * (i + 2))
    data = load_text(
        root / "corpus", block_size=16, split_by="blocks", val_fraction=0.2, cache_dir=root / "c"
    )
    name = train_byte_bpe([TEXT] * 20, 280, root / "bpe")
    return data, name


def _cfg() -> StudentTrainConfig:
    return StudentTrainConfig(epochs=1, batch_size=4, lr=1e-3, max_steps=2)


def test_a_teacher_with_its_own_tokenizer_distills_a_byte_student(setup) -> None:
    data, name = setup
    teacher, student = _lm(get_tokenizer(name).vocab_size, 0), _lm(259, 1)
    before = [p.detach().clone() for p in student.parameters()]
    kd = KDConfig(terms={"ce": 0.3, "alm": 0.5, "uld": 0.2}, temperature=1.0, teacher_tokenizer=name)
    result = distill(teacher, student, data, _cfg(), kd)
    record = result.history[-1]
    assert record["teacher_source"] == "live" and name in record["teacher_source_reason"]
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=False))


def test_another_vocabulary_without_its_tokenizer_is_refused_with_the_fix(setup) -> None:
    data, name = setup
    teacher = _lm(get_tokenizer(name).vocab_size, 0)
    with pytest.raises(DataError, match=r"kd\.teacher_tokenizer.*uld or alm"):
        distill(teacher, _lm(259, 1), data, _cfg(), KDConfig(terms={"ce": 0.3, "kd": 0.7}))


def test_per_token_terms_with_another_tokenizer_are_refused(setup) -> None:
    data, name = setup
    teacher = _lm(get_tokenizer(name).vocab_size, 0)
    with pytest.raises(ConfigError, match="uld or alm"):
        distill(
            teacher, _lm(259, 1), data, _cfg(), KDConfig(terms={"ce": 0.3, "kd": 0.7}, teacher_tokenizer=name)
        )


def test_a_teacher_tokenizer_that_does_not_fit_the_teacher_is_refused(setup) -> None:
    data, name = setup
    with pytest.raises(ConfigError, match="name the tokenizer the teacher was trained with"):
        distill(_lm(2000, 0), _lm(259, 1), data, _cfg(), KDConfig(terms={"alm": 1.0}, teacher_tokenizer=name))
