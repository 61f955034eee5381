"""Cross-tokenizer terms: uld and alm against hand computations, the clamping trap, refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distil.config import KDConfig
from distil.data.alignment import NO_CHUNK, Alignment
from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError, DataError
from distil.losses.compose import build_loss
from distil.losses.crosstok import (
    ALIGNED_FRACTION,
    alm_loss,
    binary_kl,
    check_cross_tokenizer_terms,
    uld_loss,
)
from distil.losses.functional import kd_kl
from distil.teachers.crosstok import CrossTokenizerTeacher

TEXT = "the cat sat on the mat, the dog sat on the log."


def _bkl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def _hand_alignment() -> Alignment:
    # Student: 3 positions, chunk 0 = positions 0 and 1, chunk 1 = position 2.
    # Teacher: 2 positions, chunk 0 = position 0, chunk 1 = position 1.
    return Alignment(
        student_targets=torch.tensor([[1, 2, 3]]),
        student_chunks=torch.tensor([[0, 0, 1]]),
        teacher_inputs=torch.tensor([[0, 4]]),
        teacher_targets=torch.tensor([[4, 0]]),
        teacher_chunks=torch.tensor([[0, 1]]),
        num_chunks=2,
    )


def test_alm_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(1, 3, 4), torch.randn(1, 2, 5)
    ps, pt = torch.softmax(s, -1)[0], torch.softmax(t, -1)[0]
    chunk_s = [float(ps[0, 1] * ps[1, 2]), float(ps[2, 3])]
    chunk_t = [float(pt[0, 4]), float(pt[1, 0])]
    expect = sum(_bkl(p, q) for p, q in zip(chunk_t, chunk_s, strict=False)) / 2
    got = alm_loss(s, t, _hand_alignment())
    assert got.item() == pytest.approx(expect, rel=1e-5)
    expect_abs = sum(abs(math.log(p) - math.log(q)) for p, q in zip(chunk_t, chunk_s, strict=False)) / 2
    assert alm_loss(s, t, _hand_alignment(), distance="abs").item() == pytest.approx(expect_abs, rel=1e-5)
    # A chunk with a position that does not count (a prompt token) is left out whole.
    masked = alm_loss(s, t, _hand_alignment(), torch.tensor([[True, False, True]]))
    assert masked.item() == pytest.approx(_bkl(chunk_t[1], chunk_s[1]), rel=1e-5)


def test_uld_matches_a_hand_computation() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(1, 3, 4), torch.randn(1, 2, 6)

    def w1(a: torch.Tensor, b: torch.Tensor) -> float:
        a = sorted(torch.softmax(a, -1).tolist(), reverse=True) + [0.0] * 2
        b = sorted(torch.softmax(b, -1).tolist(), reverse=True)
        return sum(abs(x - y) for x, y in zip(a, b, strict=False))

    # Chunk 0 starts at student position 0 and teacher position 0; chunk 1 at 2 and 1.
    expect = (w1(s[0, 0], t[0, 0]) + w1(s[0, 2], t[0, 1])) / 2
    assert uld_loss(s, t, _hand_alignment()).item() == pytest.approx(expect, rel=1e-5)


def test_a_chunk_left_out_by_the_mask_cannot_poison_the_loss_or_its_gradient() -> None:
    # The student rules out its target in chunk 0 (logit -inf: log-likelihood -inf); the mask leaves that
    # chunk out, so the loss is chunk 1's alone and every gradient is finite (the reduction is a weighted
    # mean without boolean indexing, which cost a host sync per step).
    torch.manual_seed(2)
    s, t = torch.randn(1, 3, 4), torch.randn(1, 2, 5)
    s[0, 0, 1] = float("-inf")
    s.requires_grad_(True)
    mask = torch.tensor([[True, False, True]])
    ps, pt = torch.softmax(s.detach(), -1)[0], torch.softmax(t, -1)[0]
    for loss, expect in (
        (alm_loss(s, t, _hand_alignment(), mask), _bkl(float(pt[1, 0]), float(ps[2, 3]))),
        (uld_loss(s, t, _hand_alignment(), mask), None),
    ):
        assert torch.isfinite(loss)
        if expect is not None:
            assert loss.item() == pytest.approx(expect, rel=1e-5)
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(grad).all()
        assert grad[0, :2].abs().sum() == 0  # the left-out chunk gets no gradient
    # Nothing counted: 0, with a gradient path.
    none = alm_loss(s, t, _hand_alignment(), torch.zeros(1, 3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_binary_kl_is_zero_on_equal_and_positive_otherwise() -> None:
    lp = torch.log(torch.tensor([0.3, 0.9]))
    assert torch.allclose(binary_kl(lp, lp), torch.zeros(2), atol=1e-7)
    assert binary_kl(lp, lp - 0.5).gt(0).all()


def _byte_batch(text: str) -> dict[str, torch.Tensor]:
    ids = torch.tensor([list(text.encode())])
    return {INPUTS: ids[:, :-1].clone(), LABELS: ids[:, 1:].clone()}


def _loss(terms: dict[str, float]):
    student = nn.Embedding(259, 259)
    return build_loss(
        KDConfig(terms=terms, temperature=1.0),
        student=student,
        teacher=student,
        sample_x=torch.zeros(2, 3, dtype=torch.long),
        num_classes=259,
    )


def test_alm_with_one_tokenizer_is_the_per_token_likelihood_match() -> None:
    torch.manual_seed(2)
    batch = _byte_batch(TEXT)
    batch[LABELS][0, :5] = IGNORE_INDEX  # a prompt: not counted
    s, t = torch.randn(1, batch[INPUTS].shape[1], 259), torch.randn(1, batch[INPUTS].shape[1], 259)
    labels = batch[LABELS][0]
    keep = labels != IGNORE_INDEX
    lp_s = torch.log_softmax(s[0], -1)[keep, labels[keep]]
    lp_t = torch.log_softmax(t[0], -1)[keep, labels[keep]]
    expect = binary_kl(lp_t, lp_s).mean()
    got = _loss({"alm": 1.0})(s, t, batch)["alm"]
    assert got.item() == pytest.approx(expect.item(), rel=1e-5)
    # And through the cross-tokenizer teacher with the byte tokenizer on both sides (chunks = tokens, but
    # the last, cut by the row's end, is not compared: the identity alignment drops it too when unlabelled).
    teacher = nn.Embedding(259, 259)
    out = CrossTokenizerTeacher(teacher, get_tokenizer("byte"), get_tokenizer("byte"))(batch)
    cut = {**batch, LABELS: batch[LABELS].clone()}
    cut[LABELS][0, -1] = IGNORE_INDEX
    direct = _loss({"alm": 1.0})(s, teacher(batch[INPUTS]), cut)["alm"]
    assert _loss({"alm": 1.0})(s, out, batch)["alm"].item() == pytest.approx(direct.item(), rel=1e-6)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    words = [TEXT, "the cat and the dog", "on the mat on the log", "sat sat sat the the"] * 20
    return get_tokenizer(train_byte_bpe(words, 290, tmp_path_factory.mktemp("bpe") / "t"))


def test_the_clamping_trap_distil_aligns_by_bytes(bpe) -> None:
    """A byte student and a BPE teacher: clamping the student's ids into the teacher's vocabulary (what other
    tools did) gives another loss than the alignment; distil gives the aligned one, equal to a reference
    built from the tokenizer's own offset mapping."""
    torch.manual_seed(3)
    teacher = nn.Embedding(bpe.vocab_size, bpe.vocab_size)  # a bigram LM: logits of the next token
    batch = _byte_batch(TEXT)
    s = torch.randn(1, batch[INPUTS].shape[1], 259)
    loss = _loss({"alm": 1.0})
    got = loss(s, CrossTokenizerTeacher(teacher, get_tokenizer("byte"), bpe)(batch), batch)["alm"]

    # Reference: the teacher's tokens and their spans from transformers' offset mapping (ASCII: chars =
    # bytes). Every byte ends a student token, so each teacher token after the first is one chunk.
    enc = bpe.hf(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    t_ids, spans = enc["input_ids"], enc["offset_mapping"]
    lp_t = torch.log_softmax(teacher(torch.tensor(t_ids[:-1])), -1)
    lp_s = torch.log_softmax(s[0], -1)
    labels = batch[LABELS][0]
    terms = []
    for j in range(1, len(t_ids) - 1):  # the last token's chunk is cut by the row's end: not compared
        a, b = spans[j]
        l_t = lp_t[j - 1, t_ids[j]]
        l_s = sum(lp_s[p - 1, labels[p - 1]] for p in range(a, b))  # position p-1 predicts byte p
        terms.append(binary_kl(l_t.reshape(1), l_s.reshape(1)))
    expect = torch.cat(terms).mean()
    assert got.item() == pytest.approx(expect.item(), rel=1e-5)

    clamped = teacher(batch[INPUTS].clamp(max=bpe.vocab_size - 1))[..., :259]  # the trap
    trap = loss(s, clamped, batch)["alm"]
    assert trap.item() != pytest.approx(got.item(), rel=0.5)
    with pytest.raises(ConfigError, match="uld or alm"):
        _loss({"kd": 1.0})(s, CrossTokenizerTeacher(teacher, get_tokenizer("byte"), bpe)(batch), batch)
    assert kd_kl(s, clamped, 1.0).item() > 0  # the trap even runs, silently, for per-token KD


def test_per_token_terms_are_refused_across_tokenizers() -> None:
    with pytest.raises(ConfigError, match="uld or alm"):
        check_cross_tokenizer_terms({"ce": 0.3, "kd": 0.7})
    check_cross_tokenizer_terms({"ce": 0.3, "alm": 0.5, "uld": 0.2})


def test_uld_and_alm_train_from_a_cross_tokenizer_teacher(bpe) -> None:
    teacher = nn.Embedding(bpe.vocab_size, bpe.vocab_size)
    student = nn.Embedding(259, 259)
    batch = _byte_batch(TEXT)
    out = CrossTokenizerTeacher(teacher, get_tokenizer("byte"), bpe)(batch)
    terms = _loss({"ce": 0.3, "alm": 0.5, "uld": 0.2})(student(batch[INPUTS]), out, batch)
    terms["loss"].backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert teacher.weight.grad is None


def test_cross_tokenizer_terms_report_the_fraction_of_completion_positions_compared(bpe) -> None:
    """alm and uld report `aligned_fraction` (compared counted positions / counted positions), which the
    epoch record averages: a run whose rows are mostly not compared shows it."""
    teacher = nn.Embedding(bpe.vocab_size, bpe.vocab_size)
    batch = _byte_batch(TEXT)
    batch[LABELS][0, :5] = IGNORE_INDEX  # a prompt: neither counted nor compared
    out = CrossTokenizerTeacher(teacher, get_tokenizer("byte"), bpe)(batch)
    s = torch.randn(1, batch[INPUTS].shape[1], 259)
    terms = _loss({"ce": 1.0, "alm": 1.0, "uld": 1.0})(s, out, batch)
    counts = batch[LABELS] != IGNORE_INDEX
    chunks = out.alignment.student_chunks
    # A chunk is compared when all of its positions count (one straddling the prompt's end is not).
    whole = [c for c in set(chunks[0].tolist()) - {NO_CHUNK} if bool(counts[chunks == c].all())]
    compared = sum(int((chunks == c).sum()) for c in whole)
    assert 0 < terms[ALIGNED_FRACTION].item() < 1
    assert terms[ALIGNED_FRACTION].item() == pytest.approx(compared / counts.sum().item())
    assert terms["loss"].item() == pytest.approx((terms["ce"] + terms["alm"] + terms["uld"]).item())


def test_a_first_batch_that_compares_no_completion_position_is_refused() -> None:
    """Labels only on the row's last token, whose chunk the row's end cuts: alm would be 0 on every batch
    (the rev24 chat rows were); the run stops with the causes instead of training silently on nothing."""
    teacher = nn.Embedding(259, 259)
    batch = _byte_batch(TEXT)
    batch[LABELS][0, :-1] = IGNORE_INDEX
    out = CrossTokenizerTeacher(teacher, get_tokenizer("byte"), get_tokenizer("byte"))(batch)
    s = torch.randn(1, batch[INPUTS].shape[1], 259)
    with pytest.raises(DataError, match="compare none of the first batch"):
        _loss({"ce": 1.0, "alm": 1.0})(s, out, batch)
    loss = _loss({"ce": 1.0, "alm": 1.0})
    loss(s, out, _byte_batch(TEXT))  # a first batch with compared positions passes; later ones may have none
    assert loss(s, out, batch)[ALIGNED_FRACTION].item() == 0.0
