"""DeepInversion: the BatchNorm statistics loss, its decrease under the inversion, and the refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.errors import ModelError
from distil.models.seed import LargeNet
from distil.synth import DeepInversionConfig, SynthesisConfig, synthesize
from distil.synth.deepinversion import (
    batchnorm_layers,
    bn_statistics_loss,
    invert_batch,
    record_bn_inputs,
)
from tests.synth.bn_factory import make


def _teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = make(num_classes=3, in_channels=1, image_size=6)
    bn = net[1]
    assert isinstance(bn, nn.BatchNorm2d)
    # Running statistics a trained net would have: away from the defaults (0, 1), so the loss is not 0.
    bn.running_mean.copy_(torch.tensor([0.5, -0.2, 0.1, 0.3]))  # type: ignore[operator]
    bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5, 0.8]))  # type: ignore[operator]
    return net.eval().requires_grad_(False)


def test_bn_statistics_loss_equals_a_hand_computation() -> None:
    teacher = _teacher()
    x = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    layers = [m for _, m in batchnorm_layers(teacher)]
    with record_bn_inputs(teacher) as moments:
        teacher(x)
        loss = bn_statistics_loss(list(moments), layers)
    # By hand: the conv's output per channel over (N, H, W), biased variance, l2 norms of the gaps.
    feature = teacher[0](x)
    mean = feature.permute(1, 0, 2, 3).reshape(4, -1).mean(1)
    var = ((feature.permute(1, 0, 2, 3).reshape(4, -1) - mean[:, None]) ** 2).mean(1)
    bn = teacher[1]
    expected = torch.sqrt(((mean - bn.running_mean) ** 2).sum()) + torch.sqrt(
        ((var - bn.running_var) ** 2).sum()
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() > 0.1


def test_hooks_are_removed_after_recording() -> None:
    teacher = _teacher()
    with record_bn_inputs(teacher) as moments:
        teacher(torch.randn(2, 1, 6, 6))
    assert len(moments) == 1
    teacher(torch.randn(2, 1, 6, 6))
    assert len(moments) == 1  # no hook left behind


def test_inversion_lowers_the_bn_and_class_terms() -> None:
    teacher = _teacher()
    seen: list[dict[str, float]] = []
    cfg = DeepInversionConfig(iterations=60, batch_size=8, lr=0.1, jitter=0, flip=False)
    x = invert_batch(
        teacher,
        torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
        (1, 6, 6),
        cfg,
        generator=torch.Generator().manual_seed(0),
        on_step=seen.append,
    )
    assert x.shape == (8, 1, 6, 6) and not x.requires_grad
    assert seen[-1]["bn"] < 0.5 * seen[0]["bn"]
    assert seen[-1]["ce"] < seen[0]["ce"]
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is never trained


def test_deepinversion_makes_balanced_targets_with_ids_reproducibly() -> None:
    teacher = _teacher()
    cfg = SynthesisConfig(count=12, seed=3, deepinversion=DeepInversionConfig(iterations=80, batch_size=6))
    synthetic = synthesize(teacher, (1, 6, 6), 3, cfg)
    assert torch.bincount(synthetic.targets, minlength=3).tolist() == [4, 4, 4]
    assert synthetic.ids[0] == "deepinversion-s3-000000" and len(set(synthetic.ids)) == 12
    again = synthesize(teacher, (1, 6, 6), 3, cfg)
    assert torch.equal(synthetic.inputs, again.inputs)  # seeded: reproducible


@pytest.mark.parametrize("teacher", [LargeNet(3, 1, 8), nn.Sequential(nn.Flatten(), nn.Linear(64, 3))])
def test_a_teacher_without_batchnorm_is_refused_naming_the_adversarial_method(teacher: nn.Module) -> None:
    with pytest.raises(ModelError, match=r"has none.*adversarial"):
        synthesize(teacher, (1, 8, 8), 3, SynthesisConfig(count=4))


def test_an_unknown_method_lists_the_valid_ones() -> None:
    from distil.errors import ConfigError

    with pytest.raises(ConfigError, match="adversarial"):
        synthesize(_teacher(), (1, 6, 6), 3, SynthesisConfig(method="deepinversio"))


def test_the_competition_term_reads_the_student_without_changing_it() -> None:
    teacher = _teacher()
    torch.manual_seed(1)
    student = make(num_classes=3, in_channels=1, image_size=6).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = SynthesisConfig(
        count=4, deepinversion=DeepInversionConfig(iterations=3, batch_size=4, competition_weight=1.0)
    )
    synthesize(teacher, (1, 6, 6), 3, cfg, student=student)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())  # BN stats too
    assert student.training and all(p.requires_grad and p.grad is None for p in student.parameters())


def test_invert_batch_freezes_a_train_mode_teacher_and_gives_it_back_as_it_came() -> None:
    # rev27: a caller passing a train-mode teacher had its BN running statistics overwritten.
    teacher = _teacher().train().requires_grad_(True)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = DeepInversionConfig(iterations=3, batch_size=4, lr=0.1)
    invert_batch(
        teacher, torch.tensor([0, 1, 2, 0]), (1, 6, 6), cfg, generator=torch.Generator().manual_seed(0)
    )
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name  # BN running statistics and counters untouched
    assert all(p.grad is None for p in teacher.parameters())
    assert teacher.training and all(m.training for m in teacher.modules())  # mode restored
    assert all(p.requires_grad for p in teacher.parameters())  # flags restored
