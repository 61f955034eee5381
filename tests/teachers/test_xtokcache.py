"""The cross-tokenizer teacher cache: per-chunk teacher values through the one store, equal to the live
teacher's loss (value and gradient), keyed by both tokenizers, chosen as every run's cache is chosen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distil.api import distill
from distil.config import GenerationConfig, KDConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.data.batch import IGNORE_INDEX, INDEX, INPUTS, LABELS
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.text import load_text
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError
from distil.losses.compose import build_loss
from distil.teachers.crosstok import (
    CrossTokenizerTeacher,
    cross_tokenizer_source,
    open_cross_tokenizer_cache,
)
from distil.train.engine import fit, make_accelerator
from distil.train.state import TrainStateStore
from tests.teachers.tiny_lm import TEXT
from tests.teachers.tiny_lm import tiny_llama as _lm

OTHER = "a log and a mat; the dogs and cats sit on logs, on mats, at last.\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny corpus read by the byte tokenizer and by a student BPE, and two teacher BPEs of one size."""
    root = tmp_path_factory.mktemp("xtokcache")
    (root / "corpus").mkdir()
    for i in range(3):
        (root / "corpus" / f"d{i}.txt").write_text(TEXT * (i + 1) + OTHER)
    teacher_bpe = train_byte_bpe([TEXT] * 20, 280, root / "teacher-bpe")
    other_teacher_bpe = train_byte_bpe([OTHER] * 20, 280, root / "other-teacher-bpe")
    student_bpe = train_byte_bpe([TEXT, OTHER] * 10, 265, root / "student-bpe")

    def data(tokenizer: str):
        return load_text(
            root / "corpus",
            tokenizer=tokenizer,
            block_size=16,
            split_by="blocks",
            val_fraction=0.2,
            cache_dir=root / f"c-{Path(tokenizer).name}",
        )

    return {
        "byte": data("byte"),
        "bpe": data(student_bpe),
        "teacher": teacher_bpe,
        "other_teacher": other_teacher_bpe,
        "root": root,
    }


def _teacher_vocab(corpus) -> int:
    return max(get_tokenizer(corpus[k]).vocab_size for k in ("teacher", "other_teacher"))


def _loss(terms: dict[str, float], temperature: float = 1.0):
    student = torch.nn.Embedding(259, 259)
    return build_loss(
        KDConfig(terms=terms, temperature=temperature),
        student=student,
        teacher=student,
        sample_x=torch.zeros(2, 3, dtype=torch.long),
        num_classes=259,
    )


def _batch(split, rows: list[int]) -> dict[str, torch.Tensor]:
    index = torch.tensor(rows)
    inputs, labels = split.read_batch(index)
    return {INPUTS: inputs, LABELS: labels, INDEX: index}


def _terms_and_grad(loss, logits_source: torch.Tensor, teacher_out, batch, name: str):
    logits = logits_source.clone().requires_grad_(True)
    value = loss(logits, teacher_out, batch)[name]
    (grad,) = torch.autograd.grad(value, logits)
    return value.detach(), grad


@pytest.mark.parametrize("term", ["alm", "uld"])
def test_the_cached_loss_equals_the_live_loss_in_value_and_gradient(
    corpus, tmp_path: Path, term: str
) -> None:
    """k >= the teacher's vocabulary keeps every probability: uld is exact, as alm always is, on batches
    of rows in any order (the chunks are numbered across the batch as the live alignment numbers them)."""
    data = corpus["byte"]
    tok = get_tokenizer(corpus["teacher"])
    teacher = _lm(tok.vocab_size, 0)
    cross = CrossTokenizerTeacher(teacher, get_tokenizer("byte"), tok, max_teacher_len=64)
    loss = _loss({term: 1.0}, temperature=2.0)
    cached, info = open_cross_tokenizer_cache(
        cross, data, loss, k=tok.vocab_size, cache_dir=tmp_path, batch_size=3
    )
    assert info.form == "aligned" and not info.hit
    torch.manual_seed(5)
    for rows in ([5, 0, 3, 2], [1], list(range(len(data.train)))[::-1]):
        batch = _batch(data.train, rows)
        s = torch.randn(len(rows), batch[INPUTS].shape[1], 259) * 3
        live_value, live_grad = _terms_and_grad(loss, s, cross(batch), batch, term)
        cached_value, cached_grad = _terms_and_grad(loss, s, cached(batch), batch, term)
        assert live_value > 0
        torch.testing.assert_close(cached_value, live_value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cached_grad, live_grad, rtol=1e-4, atol=1e-7)


def test_uld_with_fewer_kept_probabilities_is_within_the_teachers_tail_mass(corpus, tmp_path: Path) -> None:
    """With k < V_t the teacher's probabilities past its k largest count as 0: uld's error per chunk is at
    most the tail mass left out (stored beside them), so the mean's at most the counted chunks' mean."""
    data = corpus["byte"]
    tok = get_tokenizer(corpus["teacher"])
    teacher = _lm(tok.vocab_size, 0)
    cross = CrossTokenizerTeacher(teacher, get_tokenizer("byte"), tok, max_teacher_len=64)
    loss = _loss({"uld": 1.0})
    cached, info = open_cross_tokenizer_cache(cross, data, loss, k=4, cache_dir=tmp_path)
    assert info.bytes_per_token == 16 * (4 + 4 + 4 * 4 + 4)  # per row of 16 positions, one temperature
    batch = _batch(data.train, [0, 1, 2, 3])
    s = torch.randn(4, batch[INPUTS].shape[1], 259)
    live = loss(s, cross(batch), batch)["uld"]
    got = loss(s, cached(batch), batch)["uld"]
    arrays = cached.store.arrays
    tails = arrays["tail.f32"].index_select(0, batch[INDEX])
    used = arrays["chunks.i32"].index_select(0, batch[INDEX]).max(dim=1).values + 1
    mean_tail = torch.cat([t[:n] for t, n in zip(tails, used.tolist(), strict=True)]).mean()
    assert 0 < abs(got - live) <= mean_tail + 1e-6
    recorded = info.build["uld_tail_mass"]["1.0"]  # the bound, in every epoch record's teacher_cache
    assert 0 < recorded["mean"] <= recorded["max"] and mean_tail <= recorded["max"]


def test_a_cache_of_another_student_or_teacher_tokenizer_is_not_reused(corpus, tmp_path: Path) -> None:
    vocab = _teacher_vocab(corpus)
    teacher = _lm(vocab, 0)
    loss = _loss({"alm": 1.0})
    student_bpe = get_tokenizer(corpus["bpe"].extra["tokenizer_name"])

    def opened(data, student, tok_name):
        cross = CrossTokenizerTeacher(teacher, student, get_tokenizer(corpus[tok_name]), max_teacher_len=64)
        return open_cross_tokenizer_cache(cross, data, loss, cache_dir=tmp_path)[1]

    first = opened(corpus["byte"], get_tokenizer("byte"), "teacher")
    again = opened(corpus["byte"], get_tokenizer("byte"), "teacher")
    other_teacher_tok = opened(corpus["byte"], get_tokenizer("byte"), "other_teacher")
    other_student_tok = opened(corpus["bpe"], student_bpe, "teacher")
    assert not first.hit and again.hit and again.fingerprint == first.fingerprint
    assert not other_teacher_tok.hit and not other_student_tok.hit
    assert len({first.fingerprint, other_teacher_tok.fingerprint, other_student_tok.fingerprint}) == 3


def test_the_key_names_both_tokenizers_by_content_not_by_path(corpus, tmp_path: Path) -> None:
    """The same teacher tokenizer copied to another directory has the same fingerprint: a hit."""
    import shutil

    tok = get_tokenizer(corpus["teacher"])
    teacher = _lm(tok.vocab_size, 0)
    copy = shutil.copytree(corpus["teacher"].removeprefix("hf:"), tmp_path / "copied-bpe")
    loss = _loss({"alm": 1.0})
    infos = [
        open_cross_tokenizer_cache(
            CrossTokenizerTeacher(teacher, get_tokenizer("byte"), get_tokenizer(name), max_teacher_len=64),
            corpus["byte"],
            loss,
            cache_dir=tmp_path / "caches",
        )[1]
        for name in (corpus["teacher"], f"hf:{copy}")
    ]
    assert not infos[0].hit and infos[1].hit


def _cfg(mode: str, tmp_path: Path, k: int = 16, **kwargs) -> StudentTrainConfig:
    return StudentTrainConfig(
        epochs=1,
        batch_size=4,
        lr=1e-2,
        max_steps=3,
        teacher_cache={"mode": mode, "dir": str(tmp_path / "caches"), "k": k},
        **kwargs,
    )


def test_distill_with_the_cache_trains_the_student_the_live_teacher_trains(corpus, tmp_path: Path) -> None:
    data, name = corpus["byte"], corpus["teacher"]
    kd = KDConfig(terms={"ce": 0.3, "alm": 0.5, "uld": 0.2}, temperature=1.0, teacher_tokenizer=name)
    vocab = get_tokenizer(name).vocab_size
    runs = {}
    for mode in ("off", "on", "auto"):
        student = _lm(259, 1)
        cfg = _cfg(mode, tmp_path, k=vocab)  # every probability kept: uld exact
        runs[mode] = (distill(_lm(vocab, 0), student, data, cfg, kd).history[-1], student)
    assert runs["off"][0]["teacher_source"] == "live"
    assert runs["on"][0]["teacher_source"] == "cache" and not runs["on"][0]["teacher_cache"]["hit"]
    auto = runs["auto"][0]
    assert auto["teacher_source"] == "cache" and auto["teacher_cache"]["hit"]  # the same key: reused
    assert (
        "own tokenizer" in auto["teacher_source_reason"]
        and "both tokenizers" in auto["teacher_source_reason"]
    )
    assert auto["teacher_cache"]["form"] == "aligned"
    for mode in ("on", "auto"):
        for a, b in zip(runs["off"][1].parameters(), runs[mode][1].parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_on_policy_batches_run_the_teacher_live_with_the_one_wording(corpus, tmp_path: Path) -> None:
    """The decision is `choose_teacher_source`'s: on-policy generation runs the teacher live under auto,
    and `on` is refused with its message."""
    tok = get_tokenizer(corpus["teacher"])
    cross = CrossTokenizerTeacher(_lm(tok.vocab_size, 0), get_tokenizer("byte"), tok)
    loss = _loss({"alm": 1.0})
    accelerator = make_accelerator()
    generation = GenerationConfig(lmbda=0.5)
    fn, record = cross_tokenizer_source(
        cross, corpus["byte"], loss, _cfg("auto", tmp_path, generation=generation), accelerator
    )
    assert fn is cross and record["teacher_source"] == "live"
    assert "on-policy distillation" in record["teacher_source_reason"]
    with pytest.raises(ValueError, match=r"teacher_cache=on cannot be used with on-policy distillation"):
        _cfg("on", tmp_path, generation=generation)  # refused when the recipe is read, as for any run


def test_a_per_position_cache_form_is_refused_for_a_cross_tokenizer_run(corpus, tmp_path: Path) -> None:
    tok = get_tokenizer(corpus["teacher"])
    cross = CrossTokenizerTeacher(_lm(tok.vocab_size, 0), get_tokenizer("byte"), tok)
    cfg = StudentTrainConfig(teacher_cache={"mode": "on", "form": "sampled", "dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"teacher_cache\.form=sampled.*teacher_cache\.form=auto"):
        cross_tokenizer_source(cross, corpus["byte"], _loss({"alm": 1.0}), cfg, make_accelerator())


class Crash(Exception):
    """Stands in for a kill: raised right after the n-th training state reached the disk."""


def test_a_run_on_the_cache_killed_mid_epoch_resumes_to_bit_identical_weights(corpus, tmp_path: Path) -> None:
    """The pattern of tests/reliability/test_resume.py: the cached teacher reads rows by their ids, so a
    resumed run (other RNG states, another process's cache object) trains exactly the same student."""
    data = corpus["byte"]
    tok = get_tokenizer(corpus["teacher"])
    cross = CrossTokenizerTeacher(_lm(tok.vocab_size, 0), get_tokenizer("byte"), tok, max_teacher_len=64)
    cfg = StudentTrainConfig(epochs=1, batch_size=4, lr=1e-2, checkpoint_every=3)
    loss = _loss({"ce": 0.3, "alm": 0.5, "uld": 0.2})

    def run(store: TrainStateStore | None) -> torch.nn.Module:
        cached, _ = open_cross_tokenizer_cache(cross, data, loss, k=8, cache_dir=tmp_path / "caches")
        student = _lm(259, 1)
        fit(student, data, cfg, loss, teacher=cached, checkpoint=store)
        return student

    reference = run(None)
    store = TrainStateStore(tmp_path / "state", every=3)
    original = store.save

    def save(state):
        original(state)
        raise Crash  # after the first state: mid-epoch (step 3 of about 8)

    store.save = save  # type: ignore[method-assign]
    with pytest.raises(Crash):
        run(store)
    torch.manual_seed(1234)
    resumed = run(TrainStateStore(tmp_path / "state", every=3))
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_prompt_rows_cached_equal_live_with_the_prompt_unscored(tmp_path: Path) -> None:
    """Prompt/completion rows (labels IGNORE on the prompt and the padding): the cached targets count the
    same chunks (the completion's) as the live alignment, with the same loss."""
    data = load_dataset("arithmetic", options={"digits": 2, "train_size": 24, "test_size": 4})
    byte = get_tokenizer("byte")
    texts = [byte.decode([i for i in row.tolist() if i < 256]) for row in data.train.head(24)]
    tok = get_tokenizer(train_byte_bpe(texts * 4, 300, tmp_path / "bpe"))
    cross = CrossTokenizerTeacher(_lm(tok.vocab_size, 0), byte, tok, max_teacher_len=64)
    loss = _loss({"alm": 0.5, "uld": 0.5})
    cached, _ = open_cross_tokenizer_cache(cross, data, loss, k=tok.vocab_size, cache_dir=tmp_path / "c")
    batch = _batch(data.train, [7, 3, 11, 0])
    assert bool((batch[LABELS] == IGNORE_INDEX).any(dim=1).all())  # every row has an unscored prompt
    live_out, cached_out = cross(batch), cached(batch)
    assert cached_out.num_chunks == live_out.alignment.num_chunks
    torch.testing.assert_close(cached_out.student_targets, live_out.alignment.student_targets)
    torch.testing.assert_close(cached_out.student_chunks, live_out.alignment.student_chunks)
    s = torch.randn(4, batch[INPUTS].shape[1], 259)
    for name in ("alm", "uld"):
        torch.testing.assert_close(loss(s, cached_out, batch)[name], loss(s, live_out, batch)[name])


def test_a_cache_of_the_old_chunking_is_not_reused() -> None:
    """Version 2 chunks differently (special tokens separate text, cut chunks dropped): its key differs
    from a version-1 cache's, so an old cache is rebuilt, not read with the new alignment."""
    from distil.teachers.store import AlignedChunks

    new = AlignedChunks(positions=8, student_tokenizer="s", teacher_tokenizer="t")
    assert new.version >= 2
    old = AlignedChunks(positions=8, student_tokenizer="s", teacher_tokenizer="t", version=1)
    assert new.params() != old.params()
