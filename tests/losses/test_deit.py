"""DeiT distillation through the distillation token: pure functions against the formula written out,
the registered terms inside the composed loss, and the errors for students without the token."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distil.config import KDConfig
from distil.errors import ConfigError
from distil.losses import CELoss, build_loss, method_terms
from distil.losses.deit import deit_hard, deit_soft
from distil.models import TokenLogits, create_model


def _logits(
    seed: int, b: int = 6, k: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cls, dist, teacher = (torch.randn(b, k, generator=g) * 2 for _ in range(3))
    return cls, dist, teacher, torch.randint(0, k, (b,), generator=g)


def _ce_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    return -log_p[torch.arange(len(targets)), targets].mean()


def test_hard_deit_is_half_label_ce_on_the_class_head_plus_half_teacher_argmax_ce_on_the_dist_head() -> None:
    cls, dist, teacher, y = _logits(0)
    expected = 0.5 * _ce_reference(cls, y) + 0.5 * _ce_reference(dist, teacher.argmax(1))
    torch.testing.assert_close(deit_hard(cls, dist, y, teacher), expected)
    w = 0.25
    expected_w = (1 - w) * _ce_reference(cls, y) + w * _ce_reference(dist, teacher.argmax(1))
    torch.testing.assert_close(deit_hard(cls, dist, y, teacher, distill_weight=w), expected_w)


def test_hard_deit_uses_only_the_teachers_argmax() -> None:
    cls, dist, teacher, y = _logits(1)
    sharper = teacher * 10  # same argmax, other probabilities
    torch.testing.assert_close(deit_hard(cls, dist, y, teacher), deit_hard(cls, dist, y, sharper))


def test_soft_deit_is_half_label_ce_plus_half_t2_kl_on_the_dist_head() -> None:
    cls, dist, teacher, y = _logits(2)
    t = 3.0
    p_t = torch.softmax(teacher / t, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(dist / t, 1))).sum(1).mean() * t * t
    expected = 0.5 * _ce_reference(cls, y) + 0.5 * kl
    torch.testing.assert_close(deit_soft(cls, dist, y, teacher, t), expected)


def test_unlabeled_samples_still_learn_from_the_teacher() -> None:
    cls, dist, teacher, y = _logits(3)
    y = y.clone()
    y[:2] = -100
    ce_cls = F.cross_entropy(cls, y, ignore_index=-100)
    expected = 0.5 * ce_cls + 0.5 * _ce_reference(dist, teacher.argmax(1))
    torch.testing.assert_close(deit_hard(cls, dist, y, teacher), expected)


def test_mismatched_shapes_are_refused() -> None:
    cls, dist, teacher, y = _logits(4)
    with pytest.raises(ValueError, match="same classes"):
        deit_hard(cls, dist, y, teacher[:, :3])
    with pytest.raises(ValueError, match="one shape"):
        deit_soft(cls, dist[:, :3], y, teacher, 2.0)


def _token_student() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "vit-tiny", num_classes=5, in_channels=1, image_size=8, dim=16, depth=1, heads=2, distill_token=True
    )


def _loss(terms: dict[str, float], student: torch.nn.Module, **options: dict) -> torch.nn.Module:
    kd = KDConfig(terms=terms, temperature=2.0, options=options)
    teacher = create_model("tiny-cnn", num_classes=5, in_channels=1, image_size=8)
    return build_loss(kd, student=student, teacher=teacher, sample_x=torch.randn(2, 1, 8, 8), num_classes=5)


@pytest.mark.parametrize("method", ["deit", "deit_soft"])
def test_the_method_trains_both_heads_through_the_composed_loss(method: str) -> None:
    student = _token_student().train()
    loss = _loss(method_terms(method), student)
    x, y, teacher = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.randn(4, 5)
    out = student(x)
    assert isinstance(out, TokenLogits)
    terms = loss(out, teacher, {"labels": y})
    fn = (
        deit_hard(out.cls, out.dist, y, teacher)
        if method == "deit"
        else deit_soft(out.cls, out.dist, y, teacher, 2.0)
    )
    torch.testing.assert_close(terms[method], fn)
    torch.testing.assert_close(terms["loss"], fn)
    terms["loss"].backward()
    assert student.head.weight.grad is not None and student.head.weight.grad.abs().sum() > 0
    assert student.head_dist.weight.grad is not None and student.head_dist.weight.grad.abs().sum() > 0


def test_plain_terms_see_the_averaged_heads() -> None:
    student = _token_student().train()
    loss = _loss({"ce": 0.3, "kd": 0.7}, student)
    x, y, teacher = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.randn(4, 5)
    out = student(x)
    terms = loss(out, teacher, {"labels": y})
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.logits, y))
    torch.testing.assert_close(CELoss()(out, None, {"labels": y})["ce"], F.cross_entropy(out.logits, y))


def test_the_distill_weight_option_is_passed_and_checked() -> None:
    student = _token_student().train()
    loss = _loss({"deit": 1.0}, student, deit={"distill_weight": 0.2})
    x, y, teacher = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.randn(4, 5)
    out = student(x)
    expected = deit_hard(out.cls, out.dist, y, teacher, distill_weight=0.2)
    torch.testing.assert_close(loss(out, teacher, {"labels": y})["deit"], expected)
    with pytest.raises(ConfigError, match=r"distill_weight must be in \[0, 1\]"):
        _loss({"deit": 1.0}, student, deit={"distill_weight": 1.5})


@pytest.mark.parametrize("term", ["deit", "deit_soft"])
def test_a_student_without_the_token_is_refused_with_the_fix(term: str) -> None:
    student = create_model("vit-tiny", num_classes=5, in_channels=1, image_size=8, dim=16, depth=1, heads=2)
    loss = _loss({term: 1.0}, student)
    plain = student.train()(torch.randn(4, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"student has none.*distill_token: true"):
        loss(plain, torch.randn(4, 5), {"labels": torch.tensor([0, 1, 2, 3])})


def test_the_deit_methods_are_named_methods() -> None:
    assert method_terms("deit") == {"deit": 1.0}
    assert method_terms("deit_soft") == {"deit_soft": 1.0}


def test_mutual_learning_trains_a_token_student_on_its_averaged_heads() -> None:
    from distil.train.mutual import MutualLoss, mutual_losses

    student = _token_student().train()
    peer = create_model("vit-tiny", num_classes=5, in_channels=1, image_size=8, dim=16, depth=1, heads=2)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    outs = (student(x), peer.train()(x))
    terms = MutualLoss()(outs, None, {"labels": y})
    expected = mutual_losses([outs[0].logits, outs[1]], y, 1.0, 1.0, 1.0)
    torch.testing.assert_close(terms["s0_loss"], expected[0]["loss"])


@pytest.mark.parametrize("term", ["deit", "deit_soft"])
@pytest.mark.parametrize("task", ["multilabel", "regression", "embedding", "dense"])
def test_deit_terms_are_refused_on_tasks_other_than_classification(term: str, task: str) -> None:
    # CE on (B,) class labels and a softmax teacher: on other tasks they died later in a gather/shape error.
    from distil.losses.registry import check_term_tasks

    with pytest.raises(ConfigError):
        check_term_tasks([term], task)
    check_term_tasks([term], "classification")
