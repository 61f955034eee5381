"""The loss protocol: what `distill` and the loop use of a loss, typed, with plain callables still training."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import torch

import distil
from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.losses import CELoss, TeacherNeeds, kd_kl
from distil.losses.compose import build_loss
from distil.losses.protocol import DeclaresTeacherNeeds, DistillationLoss
from distil.models import create_model
from distil.train.mutual import MutualLoss


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=96, val_fraction=0.1, seed=0)


def _nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    return teacher, student


def _kd(
    student_out: torch.Tensor, teacher_out: Any, batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    value = kd_kl(student_out, teacher_out, 2.0)
    return {"loss": value, "kd": value}


class ScheduledKD:
    """A user's distillation loss that implements the protocol structurally (no distil base class)."""

    teacher_needs = TeacherNeeds(live=False, reason="logits only")

    def __init__(self) -> None:
        self.epoch_offset = 0
        self.epochs: list[int] = []

    def __call__(
        self, student_out: Any, teacher_out: Any, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return _kd(student_out, teacher_out, batch)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(self.epoch_offset + epoch)

    def current_temperature(self) -> float:
        return 2.0

    def temperatures(self) -> tuple[float, ...]:
        return (2.0,)


def test_composed_loss_implements_the_protocol_explicitly_and_plain_losses_do_not() -> None:
    teacher, student = _nets()
    loss = build_loss(
        KDConfig(), student=student, teacher=teacher, sample_x=torch.randn(2, 1, 8, 8), num_classes=10
    )
    assert DistillationLoss in type(loss).__mro__ and isinstance(loss, DistillationLoss)
    assert isinstance(ScheduledKD(), DistillationLoss)  # structural: a user class needs no base class
    for plain in (CELoss(), MutualLoss(), _kd):
        assert not isinstance(plain, DistillationLoss)


def test_a_distillation_loss_follows_the_run_epoch_across_phases(digits) -> None:
    teacher, student = _nets()
    loss = ScheduledKD()
    cfg = StudentTrainConfig(epochs=2, batch_size=32, augment="none", teacher_cache="off")
    distill(teacher, student, digits, cfg, loss=loss, first_epoch=3)
    assert loss.epoch_offset == 3 and loss.epochs == [3, 4]


def test_a_plain_callable_trains_and_cannot_continue_a_schedule(digits) -> None:
    teacher, student = _nets()
    cfg = StudentTrainConfig(epochs=1, batch_size=32, augment="none", teacher_cache="off")
    history = distill(teacher, student, digits, cfg, loss=_kd).history
    assert history[-1]["train_loss"] == pytest.approx(history[-1]["train_kd"])
    with pytest.raises(ValueError, match="first_epoch=1 needs a DistillationLoss"):
        distill(teacher, student, digits, cfg, loss=_kd, first_epoch=1)


def test_a_plain_callable_that_declares_its_needs_trains_from_the_cache(digits, tmp_path: Path) -> None:
    def kd_only(
        student_out: Any, teacher_out: Any, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return _kd(student_out, teacher_out, batch)

    kd_only.teacher_needs = TeacherNeeds(live=False, reason="logits only")  # type: ignore[attr-defined]
    assert isinstance(kd_only, DeclaresTeacherNeeds) and not isinstance(kd_only, DistillationLoss)
    teacher, student = _nets()
    cfg = StudentTrainConfig(epochs=1, batch_size=32, augment="none", teacher_cache={"dir": str(tmp_path)})
    record = distill(teacher, student, digits, cfg, loss=kd_only).history[-1]
    assert record["teacher_source"] == "cache", record["teacher_source_reason"]


def _probes(path: Path) -> list[str]:
    """`getattr/hasattr/setattr(<something named *loss*>, ...)` calls in a module's source."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and node.args
            and "loss" in ast.unparse(node.args[0])
        ):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_api_and_the_loop_use_the_protocol_rather_than_probing_the_loss() -> None:
    # Regression: distill and the loop probed the loss by attribute names (a typo'd or renamed member
    # silently fell back); they now test `isinstance(loss, DistillationLoss)` and use typed members.
    src = Path(distil.__file__).parent
    modules = [src / "api.py", *sorted((src / "train").glob("*.py")), *sorted((src / "run").glob("*.py"))]
    assert [probe for path in modules for probe in _probes(path)] == []
