"""Sequence-level KD: the teacher's completions generated once, cached, and trained on."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distil.api import distill
from distil.config import GenerationConfig, KDConfig, StudentTrainConfig, TeacherCacheConfig
from distil.data import load_dataset
from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS
from distil.data.text import TokenRowSplit
from distil.errors import ConfigError, DataError, ModelError
from distil.models import create_model
from distil.teachers import generations as gen
from distil.teachers.generations import (
    GeneratedSplit,
    Settings,
    check_prompt_rows,
    generations_key,
    open_or_build,
    seq_kd_data,
)
from distil.train.completions import Sampling, generate_completions

pytest.importorskip("transformers")

LLAMA = {
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}
SMALL = {"digits": 2, "operations": "+", "train_size": 60, "test_size": 8, "pad_operands": True}


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset("arithmetic", options=SMALL)


def _llama(data: Any, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("hf-causal-lm", num_classes=data.num_classes, config=LLAMA)


def _cfg(tmp_path: Path, **generation: Any) -> StudentTrainConfig:
    return StudentTrainConfig(
        epochs=1,
        batch_size=16,
        teacher_cache=TeacherCacheConfig(mode="off", dir=str(tmp_path)),
        generation=GenerationConfig(seq_kd=True, **generation),
    )


def _settings(data: Any, temperature: float = 0.0) -> Settings:
    from distil.data.tokenize import get_tokenizer

    eos = get_tokenizer("byte").eos_id
    return Settings(Sampling(temperature=temperature), eos_id=eos, pad_id=eos, batch_size=16)


def _no_generation(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("generate was called for cached completions")


def test_the_training_rows_become_prompt_plus_the_teachers_greedy_completion(data, tmp_path: Path) -> None:
    teacher = _llama(data)
    settings = _settings(data)
    built = open_or_build(teacher, data, settings, cache_dir=tmp_path)
    assert not built.hit and len(built.split) == len(data.train)
    assert built.split.sample_shape == data.train.sample_shape
    # The same rows as generate_completions gives batch by batch, in split order.
    for batch, mine in zip(data.train.batches(16), built.split.batches(16), strict=True):
        want = generate_completions(teacher, batch, settings.sampling, eos_id=settings.eos_id).batch
        assert torch.equal(mine[INPUTS], want[INPUTS]) and torch.equal(mine[LABELS], want[LABELS])
        assert torch.equal(mine["index"], batch["index"])  # the same sample positions: caches key alike
        # The prompt keeps no label, as in the data.
        first = (batch[LABELS] != IGNORE_INDEX).int().argmax(1)
        for row, p in enumerate(first.tolist()):
            assert (mine[LABELS][row, :p] == IGNORE_INDEX).all()
            assert torch.equal(mine[INPUTS][row, : p + 1], batch[INPUTS][row, : p + 1])
    meta = json.loads((built.path / "meta.json").read_text())
    assert meta["build"]["generated_tokens"] > 0 and meta["build"]["seconds"] >= 0
    assert sorted(p.name for p in built.path.iterdir()) == ["labelled.npy", "meta.json", "tokens.npy"]
    np.load(built.path / "tokens.npy", allow_pickle=False)  # plain arrays, never pickles


def test_a_second_run_reuses_the_files_without_generating(data, tmp_path: Path, monkeypatch) -> None:
    teacher = _llama(data)
    first = open_or_build(teacher, data, _settings(data), cache_dir=tmp_path)
    monkeypatch.setattr(gen, "generate_completions", _no_generation)
    again = open_or_build(teacher, data, _settings(data), cache_dir=tmp_path)
    assert again.hit and again.key == first.key
    assert torch.equal(again.split.head(5), first.split.head(5))


def test_the_key_changes_with_the_teacher_and_the_sampling_not_the_students_settings(data, tmp_path) -> None:
    teacher = _llama(data)
    key = generations_key(teacher, data, _settings(data))
    assert generations_key(_llama(data, seed=1), data, _settings(data)) != key
    assert generations_key(teacher, data, _settings(data, temperature=0.7)) != key
    compiled = replace(_settings(data), sampling=Sampling(temperature=0.0, compile_step=True))
    assert generations_key(teacher, data, compiled) == key  # how fast they were decoded, not which
    sweep = [_cfg(tmp_path, temperature=0), _cfg(tmp_path, temperature=0).model_copy(update={"lr": 0.5})]
    records = [seq_kd_data([teacher], data, c, None)[1]["completions"] for c in sweep]
    assert "built" in records[0] and "cached" in records[1]


def test_sampled_completions_are_reproducible(data, tmp_path: Path) -> None:
    teacher = _llama(data)
    a = open_or_build(teacher, data, _settings(data, 1.0), cache_dir=tmp_path / "a")
    torch.manual_seed(123)  # the global RNG's state does not matter: the build seeds its own draws
    b = open_or_build(teacher, data, _settings(data, 1.0), cache_dir=tmp_path / "b")
    assert not b.hit and torch.equal(a.split.head(len(data.train)), b.split.head(len(data.train)))


def test_a_killed_builds_directory_is_rebuilt(data, tmp_path: Path) -> None:
    teacher = _llama(data)
    built = open_or_build(teacher, data, _settings(data), cache_dir=tmp_path)
    (built.path / "labelled.npy").write_bytes(b"half")  # a broken file: the directory no longer validates
    again = open_or_build(teacher, data, _settings(data), cache_dir=tmp_path)
    assert not again.hit and torch.equal(again.split.head(4), built.split.head(4))


def test_the_split_reads_like_a_token_split(data, tmp_path: Path) -> None:
    split = open_or_build(_llama(data), data, _settings(data), cache_dir=tmp_path).split
    inputs, labels = split.read_batch(torch.arange(len(split)))
    same = TokenRowSplit(inputs, labels)
    import hashlib

    h1, h2 = hashlib.sha256(), hashlib.sha256()
    split.update_hash(h1)
    same.update_hash(h2)
    assert h1.hexdigest() == h2.hexdigest()
    part = split.take(torch.tensor([3, 1]))
    assert torch.equal(part[0][INPUTS], split[3][INPUTS]) and torch.equal(part[1][LABELS], split[1][LABELS])
    revived = pickle.loads(pickle.dumps(part))
    assert isinstance(revived, GeneratedSplit) and torch.equal(revived.head(2), part.head(2))


def test_seq_kd_refuses_data_without_one_prompt_per_row() -> None:
    plain = torch.arange(12).reshape(2, 6)
    with pytest.raises(DataError, match=r"every position.*seq_kd=false"):
        check_prompt_rows(TokenRowSplit(plain, plain + 1))
    two = torch.tensor([[-100, 5, -100, -100, 6, -100]])
    with pytest.raises(DataError, match="several completions"):
        check_prompt_rows(TokenRowSplit(torch.zeros(1, 6, dtype=torch.long), two))
    packed = torch.tensor([[5, 6, -100, -100, -100, -100]])
    with pytest.raises(DataError, match="starts inside a completion"):
        check_prompt_rows(TokenRowSplit(torch.zeros(1, 6, dtype=torch.long), packed))


def test_distill_trains_on_the_teachers_completions_and_says_so(data, tmp_path: Path, monkeypatch) -> None:
    teacher, student = _llama(data), _llama(data, seed=2)
    seen: list[Any] = []
    records: list[dict[str, Any]] = []
    import distil.api as api

    real_fit = api.fit

    def spy_fit(model: Any, used: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(used)
        return real_fit(model, used, *args, **kwargs)

    monkeypatch.setattr(api, "fit", spy_fit)
    kd = KDConfig(temperature=1.0, kd_weight=0.5, ce_weight=0.5)
    result = distill(teacher, student, data, _cfg(tmp_path, temperature=0), kd, on_epoch_end=records.append)
    used = seen[0]
    assert isinstance(used.train, GeneratedSplit)
    assert used.val is data.val and used.test is data.test  # evaluation stays on the gold answers
    assert used.describe() != data.describe()  # a logit cache or training state keys it apart
    record = result.history[-1]
    assert record["completions"].startswith("teacher (seq-KD, built, key ")
    assert record["completions_build"]["generated_tokens"] > 0 and records[0]["completions"]
    # A student sweep: the same generations, not generated again.
    monkeypatch.setattr(gen, "generate_completions", _no_generation)
    cfg = _cfg(tmp_path, temperature=0).model_copy(update={"lr": 0.01})
    again = distill(teacher, _llama(data, seed=3), data, cfg, kd)
    assert "cached" in again.history[-1]["completions"] and "completions_build" not in again.history[-1]


def test_seq_kd_refuses_classification_and_teachers_that_cannot_generate(data, tmp_path: Path) -> None:
    digits = load_dataset("digits")
    net = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ConfigError, match="classification task"):
        seq_kd_data([net], digits, _cfg(tmp_path), None)
    with pytest.raises(ModelError, match="cannot generate"):
        seq_kd_data([torch.nn.Linear(2, 2)], data, _cfg(tmp_path), None)
    with pytest.raises(ConfigError, match="ensemble"):
        seq_kd_data([_llama(data), _llama(data)], data, _cfg(tmp_path), None)
    torch.manual_seed(0)  # a teacher whose sliding window the compiled decoding step cannot run
    window = create_model(
        "hf-causal-lm",
        num_classes=data.num_classes,
        config={**LLAMA, "model_type": "mistral", "sliding_window": 2},
    )
    with pytest.raises(ModelError, match=r"compiled decoding step: it attends through a sliding window"):
        seq_kd_data([window], data, _cfg(tmp_path, compile_step=True), None)
    assert not (tmp_path / "generations").exists()  # refused before anything was built


def test_plain_text_is_refused_before_anything_is_generated(tmp_path: Path, monkeypatch) -> None:
    from distil.data.text import load_text

    (tmp_path / "a.txt").write_text("hello world, plain text without prompts. " * 20)
    text = load_text(tmp_path / "a.txt", block_size=16, split_by="blocks", cache_dir=tmp_path / "tok")
    monkeypatch.setattr(gen, "generate_completions", _no_generation)
    with pytest.raises(DataError, match="every position"):
        seq_kd_data([_llama(text)], text, _cfg(tmp_path / "c"), None)
