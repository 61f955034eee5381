"""distill() with a teacher of another tokenizer: aligned by bytes when named, refused with the fix when not."""

from __future__ import annotations

import pytest
import torch

from distil.api import distill, distill_loss
from distil.config import GenerationConfig, KDConfig, StudentTrainConfig, parse_recipe
from distil.data import load_dataset
from distil.data.batch import GENERATED, INPUTS, LABELS, MASK
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.text import load_text
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError, DataError
from distil.losses.crosstok import alm_loss
from distil.teachers.crosstok import CrossTokenizerTeacher
from distil.train.completions import Sampling
from distil.train.engine import fit
from distil.train.onpolicy import OnPolicy
from tests.teachers.tiny_lm import TEXT
from tests.teachers.tiny_lm import tiny_llama as _lm


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
    # teacher_cache auto: the teacher's per-chunk values are cached (tests/teachers/test_xtokcache.py).
    assert record["teacher_source"] == "cache" and "own tokenizer" in record["teacher_source_reason"]
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=False))
    # The epoch record says how much of the trained text the teacher terms compared (cut chunks are not).
    assert 0 < record["train_aligned_fraction"] < 1


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


# -- what a teacher with another tokenizer cannot be combined with ---------------------------------------


def test_seq_kd_with_a_teacher_tokenizer_is_refused_naming_the_fix(setup) -> None:
    """seq-KD would write the teacher's ids (its own vocabulary) into the student's rows: refused, in code
    and when a recipe is read, before anything is generated."""
    data, name = setup
    teacher = _lm(get_tokenizer(name).vocab_size, 0)
    cfg = StudentTrainConfig(epochs=1, batch_size=4, generation=GenerationConfig(seq_kd=True))
    kd = KDConfig(terms={"ce": 0.3, "alm": 0.7}, teacher_tokenizer=name)
    with pytest.raises(ConfigError, match=r"seq_kd cannot be used with kd\.teacher_tokenizer.*seq_kd=false"):
        distill(teacher, _lm(259, 1), data, cfg, kd)
    recipe = {
        "student_train": {"generation": {"seq_kd": True}},
        "kd": {"terms": {"alm": 1.0}, "teacher_tokenizer": name},
    }
    with pytest.raises(ConfigError, match=r"seq_kd cannot be used with kd\.teacher_tokenizer"):
        parse_recipe(recipe)


def test_teacher_cache_off_with_a_teacher_tokenizer_runs_live_and_on_is_read(setup) -> None:
    """`teacher_cache: on` with a teacher tokenizer is a valid recipe now (its cache stores per-chunk
    values); `off` runs the teacher live and says so."""
    data, name = setup
    teacher = _lm(get_tokenizer(name).vocab_size, 0)
    kd = KDConfig(terms={"alm": 1.0}, teacher_tokenizer=name)
    recipe = parse_recipe(
        {"student_train": {"teacher_cache": "on"}, "kd": {"terms": {"alm": 1.0}, "teacher_tokenizer": name}}
    )
    assert recipe.student_train.teacher_cache.mode == "on"
    off = StudentTrainConfig(epochs=1, batch_size=4, max_steps=1, teacher_cache="off")
    record = distill(teacher, _lm(259, 1), data, off, kd).history[-1]
    assert record["teacher_source"] == "live" and record["teacher_source_reason"] == "teacher_cache=off"
    assert 0 < record["train_aligned_fraction"] < 1  # live and cached alike


# -- on-policy: the student's own samples, aligned by bytes -----------------------------------------------


@pytest.fixture(scope="module")
def sums(tmp_path_factory):
    data = load_dataset("arithmetic", options={"digits": 2, "train_size": 64, "test_size": 8})
    byte = get_tokenizer("byte")
    texts = [byte.decode([i for i in row.tolist() if i < 256]) for row in data.train.head(64)]
    name = train_byte_bpe(texts * 4, 300, tmp_path_factory.mktemp("sums") / "bpe")
    return data, name


def _arith_lm(vocab: int, seed: int) -> torch.nn.Module:
    return _lm(vocab, seed)


def test_on_policy_with_a_teacher_tokenizer_trains_with_alm(sums) -> None:
    """generation.lmbda=1 with kd.teacher_tokenizer + alm: every batch is the byte student's own sample,
    which the BPE teacher reads with its tokenizer; the student's weights move."""
    data, name = sums
    teacher, student = _arith_lm(get_tokenizer(name).vocab_size, 0), _arith_lm(data.num_classes, 1)
    before = [p.detach().clone() for p in student.parameters()]
    cfg = StudentTrainConfig(
        epochs=1, batch_size=8, lr=1e-2, max_steps=2, generation=GenerationConfig(lmbda=1.0)
    )
    kd = KDConfig(terms={"ce": 0.5, "alm": 0.5}, temperature=1.0, teacher_tokenizer=name)
    record = distill(teacher, student, data, cfg, kd).history[-1]
    assert record["on_policy_batches"] == 2 and record["generated_tokens"] > 0
    assert record["teacher_source"] == "live"
    assert record["train_ce"] == 0.0 and torch.isfinite(torch.tensor(record["train_alm"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def _invalid_utf8(batch: dict) -> bool:
    rows = [
        [i for i, keep in zip(x, m, strict=True) if keep]
        for x, m in zip(batch[LABELS].tolist(), batch[MASK].tolist(), strict=True)
    ]

    def bad(row: list[int]) -> bool:
        try:
            bytes(i for i in row if i < 256).decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    return any(bad(r) for r in rows)


def test_a_byte_students_invalid_utf8_samples_are_aligned_without_crashing(sums) -> None:
    """A byte student samples any byte (an untrained one, at temperature 1, about half of them above 0x7F):
    its samples are not valid UTF-8, the teacher reads the valid runs only, and the loss stays finite."""
    data, name = sums
    teacher, student = _arith_lm(get_tokenizer(name).vocab_size, 0), _arith_lm(data.num_classes, 1)
    seen: list[dict] = []

    class Spy(CrossTokenizerTeacher):
        def __call__(self, batch):
            seen.append(batch)
            return super().__call__(batch)

    cross = Spy(teacher, get_tokenizer("byte"), get_tokenizer(name))
    cfg = StudentTrainConfig(epochs=1, batch_size=8, lr=1e-2, max_steps=2)
    kd = KDConfig(terms={"alm": 1.0}, temperature=1.0, teacher_tokenizer=name)
    loss = distill_loss(kd, teacher=teacher, student=student, data=data, cfg=cfg)
    always = OnPolicy(1.0, Sampling(temperature=1.0, top_p=1.0), eos_id=int(data.extra["eos_id"]), seed=0)
    record = fit(student, data, cfg, loss, teacher=cross, rewriter=always).history[-1]
    assert seen and all(b.get(GENERATED) is True for b in seen)
    assert any(_invalid_utf8(b) for b in seen)
    assert torch.isfinite(torch.tensor(record["train_alm"]))


def test_bytes_that_are_not_utf8_leave_their_chunks_out_and_the_loss_finite(sums) -> None:
    """The same, made by hand: a row of stray continuation and lead bytes between text."""
    _, name = sums
    teacher, student = _arith_lm(get_tokenizer(name).vocab_size, 0), _arith_lm(259, 1)
    row = [*b"12+34=", 0xFF, 0xC3, 0x80, 0x80, 0xE2, *b"46", 0xF0, 0x9F]
    inputs = torch.tensor([row[:-1], [0xFF] * (len(row) - 1)])
    labels = torch.tensor([row[1:], [0xFE] * (len(row) - 1)])
    out = CrossTokenizerTeacher(teacher, get_tokenizer("byte"), get_tokenizer(name))(
        {INPUTS: inputs, LABELS: labels}
    )
    assert out.alignment.num_chunks > 0  # the valid text around the bad bytes is still compared
    value = alm_loss(student(inputs), out.logits, out.alignment)
    assert torch.isfinite(value)


def test_distil_run_refuses_a_teacher_tokenizer_with_a_teacher_it_would_train_before_writing_anything(
    tmp_path,
) -> None:
    """`distil run` would train its teacher on the data's tokens: refused naming a teacher checkpoint."""
    from distil.run import run_pipeline

    recipe = parse_recipe(
        {"teacher": {"model": "hf-causal-lm"},
         "kd": {"terms": {"ce": 0.3, "alm": 0.7}, "teacher_tokenizer": "byte"}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"kd\.teacher_tokenizer=.*teacher\.checkpoint.*distil distill"):
        run_pipeline(recipe, tmp_path / "runs", show_progress=False)
    assert not (tmp_path / "runs").exists()


def test_kd_teachers_with_a_teacher_tokenizer_are_refused_when_the_recipe_is_read() -> None:
    with pytest.raises(ConfigError, match=r"kd\.teachers cannot be used with kd\.teacher_tokenizer"):
        parse_recipe(
            {
                "kd": {
                    "terms": {"alm": 1.0},
                    "teacher_tokenizer": "byte",
                    "teachers": [{"model": "smallnet", "checkpoint": "t"}],
                }
            }
        )


def test_init_from_a_teacher_with_another_tokenizer_is_refused_when_the_recipe_is_read() -> None:
    # Parameter transfer copies embedding rows by id: with two tokenizers of the same size it would
    # run silently, starting the student from embeddings whose rows mean other strings.
    with pytest.raises(
        ConfigError, match=r"transfer\.init=teacher cannot be used with kd\.teacher_tokenizer"
    ):
        parse_recipe(
            {"kd": {"terms": {"alm": 1.0}, "teacher_tokenizer": "byte"}, "transfer": {"init": "teacher"}}
        )
