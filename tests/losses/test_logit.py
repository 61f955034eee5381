import math

import pytest
import torch

from distil.config import KDConfig
from distil.losses import CELoss, build_loss, kd_kl


def reference_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Hinton's soft loss written out by hand: mean_i sum_k p_t log(p_t / p_s) * T^2."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = [math.exp(v / t) for v in s_row]
        zt = [math.exp(v / t) for v in t_row]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    return torch.tensor(total / len(student) * t * t)


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0, 10.0])
def test_kd_kl_matches_the_formula_written_out(t: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, te = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    torch.testing.assert_close(kd_kl(s, te, t), reference_kd(s, te, t), rtol=1e-5, atol=1e-6)


def test_kd_kl_is_zero_for_identical_logits_and_positive_otherwise() -> None:
    x = torch.randn(4, 10)
    assert kd_kl(x, x, 4.0).abs() < 1e-6
    assert kd_kl(x, x.flip(1), 4.0) > 0


def test_kd_kl_gradient_flows_to_student_only() -> None:
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    kd_kl(s, t.detach(), 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_kl_rejects_mismatched_classes_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="same classes"):
        kd_kl(torch.randn(2, 10), torch.randn(2, 100), 4.0)


def test_hinton_kd_is_the_composed_kd_and_ce_terms() -> None:
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    batch = {"labels": torch.tensor([0, 1, 2, 3, 0, 1])}
    kd = KDConfig(temperature=3.0, kd_weight=0.7, ce_weight=0.3)
    loss = build_loss(
        kd, student=torch.nn.Linear(4, 4), teacher=torch.nn.Identity(), sample_x=s, num_classes=4
    )
    out = loss(s, t, batch)
    ce = torch.nn.functional.cross_entropy(s, batch["labels"])
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["kd"], kd_kl(s, t, 3.0))
    torch.testing.assert_close(out["loss"], 0.7 * out["kd"] + 0.3 * ce)


def test_ce_loss_ignores_teacher() -> None:
    s = torch.randn(4, 3)
    batch = {"labels": torch.tensor([0, 1, 2, 0])}
    out = CELoss()(s, None, batch)
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(s, batch["labels"]))
