"""The adversarial generator: its step raises the disagreement; the game keeps the inputs asked for."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distil.errors import ConfigError, ModelError
from distil.models.seed import LargeNet, TinyCNN
from distil.synth import AdversarialConfig, SynthesisConfig, synthesize
from distil.synth.adversarial import Generator, disagreement, generator_step, play, student_step
from tests.synth.bn_factory import make


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = TinyCNN(3, 1).eval().requires_grad_(False)
    student = TinyCNN(3, 1).eval()
    return teacher, student


def test_the_generator_step_increases_student_teacher_disagreement() -> None:
    teacher, student = _pair()
    generator = Generator(8, (1, 6, 6))
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(disagreement(student(generator(z)), teacher(generator(z))))
    opt = torch.optim.SGD(generator.parameters(), lr=0.05)
    reported = generator_step(generator, student, teacher, opt, z)
    with torch.no_grad():
        after = float(disagreement(student(generator(z)), teacher(generator(z))))
    assert reported == pytest.approx(before, rel=1e-5)
    assert after > before  # ascent, not descent
    assert all(p.grad is None for p in teacher.parameters())


def test_the_student_step_decreases_its_kd_loss_on_the_batch() -> None:
    teacher, student = _pair()
    generator = Generator(8, (1, 6, 6)).eval()
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    _, first = student_step(generator, student, teacher, opt, z, 1.0)
    for _ in range(5):
        _, last = student_step(generator, student, teacher, opt, z, 1.0)
    assert last < first


def test_the_game_keeps_count_inputs_spread_over_it_and_applies_without_batchnorm() -> None:
    teacher = LargeNet(3, 1, 8, width=0.1).eval()  # no BatchNorm: the adversarial method still applies
    cfg = SynthesisConfig(
        method="adversarial",
        count=10,
        adversarial=AdversarialConfig(steps=2, student_steps=2, batch_size=4, z_dim=4),
    )
    synthetic = synthesize(teacher, (1, 8, 8), 3, cfg, student=TinyCNN(3, 1))
    assert synthetic.inputs.shape == (10, 1, 8, 8)
    assert synthetic.targets is None and synthetic.teacher_agreement is None  # made for no class
    assert synthetic.student is not None


def test_the_game_refuses_more_inputs_than_it_generates_and_needs_a_student() -> None:
    teacher = TinyCNN(3, 1).eval()
    small = AdversarialConfig(steps=1, student_steps=1, batch_size=2)
    with pytest.raises(ModelError, match="raise steps"):
        synthesize(
            teacher,
            (1, 6, 6),
            3,
            SynthesisConfig(method="adversarial", count=5, adversarial=small),
            student=TinyCNN(3, 1),
        )
    with pytest.raises(ConfigError, match="student"):
        synthesize(teacher, (1, 6, 6), 3, SynthesisConfig(method="adversarial", count=2, adversarial=small))


def test_class_entropy_is_log_k_for_a_balanced_batch_and_0_for_one_class() -> None:
    from distil.synth.adversarial import class_entropy

    balanced = torch.eye(3) * 50.0  # each sample one class, all classes present
    assert class_entropy(balanced).item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), rel=1e-4)
    one_class = torch.tensor([[50.0, 0.0, 0.0]] * 4)
    assert class_entropy(one_class).item() == pytest.approx(0.0, abs=1e-4)


def test_the_balance_term_moves_the_generator_towards_more_teacher_classes() -> None:
    from distil.synth.adversarial import class_entropy

    teacher, student = _pair()
    generator = Generator(8, (1, 6, 6))
    z = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(class_entropy(teacher(generator(z))))
    opt = torch.optim.SGD(generator.parameters(), lr=0.05)
    for _ in range(5):
        generator_step(generator, student, teacher, opt, z, balance_weight=100.0)
    with torch.no_grad():
        after = float(class_entropy(teacher(generator(z))))
    assert after > before


def test_play_freezes_a_train_mode_teacher_and_gives_it_back_as_it_came() -> None:
    # rev27: a caller passing a train-mode teacher had its BN running statistics overwritten.
    torch.manual_seed(0)
    teacher = make(num_classes=3, in_channels=1, image_size=6).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = AdversarialConfig(steps=2, student_steps=1, batch_size=4, z_dim=4)
    play(teacher, TinyCNN(3, 1), (1, 6, 6), 4, cfg)
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name  # BN running statistics and counters untouched
    assert all(p.grad is None for p in teacher.parameters())
    assert teacher.training and all(m.training for m in teacher.modules())  # mode restored
    assert all(p.requires_grad for p in teacher.parameters())  # flags restored


def test_both_steps_take_a_token_vit_student_in_training_mode() -> None:
    # A DeiT student in training mode returns its two heads (TokenLogits); the game reads their average.
    from distil.models.vit import vit_tiny

    torch.manual_seed(0)
    teacher = TinyCNN(3, 1).eval().requires_grad_(False)
    student = vit_tiny(num_classes=3, in_channels=1, image_size=8, distill_token=True).train()
    generator = Generator(8, (1, 8, 8))
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    gap = generator_step(generator, student, teacher, torch.optim.SGD(generator.parameters(), lr=0.01), z)
    _, loss = student_step(
        generator, student, teacher, torch.optim.SGD(student.parameters(), lr=0.01), z, 1.0
    )
    assert math.isfinite(gap) and math.isfinite(loss)  # not a TypeError on TokenLogits
