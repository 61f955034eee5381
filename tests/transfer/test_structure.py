"""Structure transfer: reused teacher modules (copied/shared, frozen/trainable) and the unfreeze schedule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from distil.api import distill, train_model
from distil.config import StudentTrainConfig, TrainConfig
from distil.data import DataBundle, Split, load_dataset
from distil.errors import TransferError
from distil.models import create_model
from distil.train.engine import FitResult
from distil.transfer import UnfreezeSchedule, fit_in_phases, reuse_modules

X8 = torch.randn(2, 1, 8, 8)


def _net(width: float = 1.0, seed: int = 0, model: str = "largenet") -> nn.Module:
    torch.manual_seed(seed)
    return create_model(model, num_classes=10, in_channels=1, image_size=8, width=width)


def test_copy_frozen_reuses_teacher_conv_layers_and_keeps_new_head_trainable() -> None:
    teacher, student = _net(seed=0), _net(seed=1)
    fc1_before = student.fc1.weight.clone()
    records = reuse_modules(teacher, student, ["conv1", "conv2"], mode="copy", freeze=True, example_inputs=X8)
    assert student.conv1 is not teacher.conv1
    assert torch.equal(student.conv1.weight, teacher.conv1.weight)
    assert torch.equal(student.conv2.bias, teacher.conv2.bias)
    assert not any(p.requires_grad for p in student.conv1.parameters())
    assert all(p.requires_grad for p in student.fc1.parameters())
    assert torch.equal(student.fc1.weight, fc1_before)  # the new layers keep their own init
    assert teacher.conv1.weight.requires_grad  # the teacher itself is not frozen by a copy
    assert [(r.module, r.mode, r.frozen) for r in records] == [
        ("conv1", "copy", True),
        ("conv2", "copy", True),
    ]
    assert records[0].parameters == 64 * 9 + 64


def test_share_uses_the_very_same_module_and_copy_trainable_stays_trainable() -> None:
    teacher, student = _net(seed=0), _net(seed=1)
    reuse_modules(teacher, student, ["conv1"], mode="share")
    assert student.conv1 is teacher.conv1
    other = _net(seed=2)
    reuse_modules(teacher, other, ["conv2"], mode="copy", freeze=False)
    assert all(p.requires_grad for p in other.conv2.parameters())
    with pytest.raises(TransferError, match="shared module is the teacher's own object"):
        reuse_modules(teacher, _net(), ["conv1"], mode="share", freeze=False)


def test_unknown_module_lists_closest_and_misfit_restores_the_student() -> None:
    teacher = _net()
    with pytest.raises(TransferError, match=r"teacher has no module 'conv3' \(closest: conv2, conv1"):
        reuse_modules(teacher, _net(seed=1), ["conv3"])
    student = _net(model="smallnet", seed=1)
    own = student.conv2
    with pytest.raises(TransferError, match="does not run with the teacher's conv2"):
        reuse_modules(teacher, student, ["conv2"], example_inputs=X8)
    assert student.conv2 is own


def test_unfreeze_schedule_flips_requires_grad_at_the_right_epoch() -> None:
    model = _net()
    schedule = UnfreezeSchedule(("conv1", "conv2"), epoch=3)
    assert schedule.apply(model, 1) is False and not model.conv1.weight.requires_grad
    assert schedule.apply(model, 2) is False and not model.conv2.bias.requires_grad
    assert schedule.apply(model, 3) is True and model.conv1.weight.requires_grad
    assert model.fc1.weight.requires_grad
    with pytest.raises(TransferError, match=">= 2"):
        UnfreezeSchedule(("conv1",), epoch=1)


def test_fit_in_phases_splits_epochs_at_the_unfreeze_epoch() -> None:
    model = _net()
    calls: list[tuple[int, bool]] = []

    def train(m: nn.Module, cfg: TrainConfig, description: str) -> FitResult:
        calls.append((cfg.epochs, m.conv1.weight.requires_grad))
        return FitResult(m, [{"epoch": e + 1, "stage": description} for e in range(cfg.epochs)])

    _, history = fit_in_phases(train, model, TrainConfig(epochs=5), UnfreezeSchedule(("conv1",), 3), "s")
    assert calls == [(2, False), (3, True)]
    assert [r["phase"] for r in history] == ["s", "s", "s-unfrozen", "s-unfrozen", "s-unfrozen"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert [r["reused_trainable"] for r in history] == [False, False, True, True, True]


def test_unfreeze_schedule_in_real_training_changes_reused_weights_only_after_unfreezing() -> None:
    data = load_dataset("digits", limit=128, val_fraction=0.1, seed=0)
    teacher, student = _net(seed=0), _net(seed=1)
    reuse_modules(teacher, student, ["conv1"], mode="copy", freeze=True)
    snapshots: list[torch.Tensor] = []
    cfg = TrainConfig(epochs=2, batch_size=32, augment="none", lr=0.05)

    def train(m: nn.Module, phase: TrainConfig, description: str) -> Any:
        result = train_model(m, data, phase, description=description)
        snapshots.append(result.model.conv1.weight.detach().clone())
        return result

    fc_before = student.fc2.weight.detach().clone()
    trained, _ = fit_in_phases(train, student, cfg, UnfreezeSchedule(("conv1",), 2), "s")
    assert torch.equal(snapshots[0], teacher.conv1.weight)  # frozen during epoch 1
    assert not torch.equal(snapshots[1], teacher.conv1.weight)  # trained from epoch 2
    assert not torch.equal(trained.fc2.weight, fc_before)


def _tiny_images(n: int = 64, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g) * 2 + 0.5  # far from BatchNorm's initial (0, 1) statistics
    split = Split(x, torch.randint(0, 10, (n,), generator=g))
    empty = Split(x[:0], split.y[:0])
    return DataBundle(
        "synthetic",
        split,
        empty,
        Split(x[:16], split.y[:16]),
        [str(i) for i in range(10)],
        (0.0,) * 3,
        (1.0,) * 3,
    )


@pytest.mark.parametrize("mode", ["share", "copy"])
def test_frozen_reused_batchnorm_stays_in_eval_mode_and_the_teacher_is_unchanged(mode: str) -> None:
    data = _tiny_images()
    torch.manual_seed(0)
    teacher = create_model("resnet20", num_classes=10, in_channels=3, image_size=8)
    torch.manual_seed(1)
    student = create_model("resnet8", num_classes=10, in_channels=3, image_size=8)
    teacher.eval()
    before_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        before_out = teacher(data.train.x)
    reuse_modules(teacher, student, ["conv1", "bn1"], mode=mode, freeze=True)  # type: ignore[arg-type]
    cfg = StudentTrainConfig(epochs=2, batch_size=16, augment="none", lr=0.05, teacher_cache="off")
    trained = distill(teacher, student, data, cfg).model

    after_state = teacher.state_dict()
    changed = [k for k in before_state if not torch.equal(before_state[k], after_state[k])]
    assert not changed, f"the teacher changed during distillation: {changed}"
    with torch.no_grad():
        assert torch.equal(teacher.eval()(data.train.x), before_out)
    # The reused BatchNorm (shared or a frozen copy) kept the teacher's running statistics.
    assert torch.equal(trained.bn1.running_mean, before_state["bn1.running_mean"])
    assert torch.equal(trained.bn1.running_var, before_state["bn1.running_var"])
    assert int(trained.bn1.num_batches_tracked) == int(before_state["bn1.num_batches_tracked"])
    trained.train()
    trained(data.train.x[:4])
    assert not trained.bn1.training and trained.layer1.training  # held in eval; the rest trains


def test_unfreezing_releases_the_eval_mode_hold() -> None:
    data = _tiny_images()
    teacher = create_model("resnet8", num_classes=10, in_channels=3, image_size=8)
    student = create_model("resnet8", num_classes=10, in_channels=3, image_size=8)
    reuse_modules(teacher, student, ["bn1"], mode="copy", freeze=True)
    schedule = UnfreezeSchedule(("bn1",), 2)
    stats = student.bn1.running_mean.clone()
    schedule.apply(student, 1)
    student.train()(data.train.x[:8])
    assert torch.equal(student.bn1.running_mean, stats) and not student.bn1.training
    schedule.apply(student, 2)
    student.train()(data.train.x[:8])
    assert student.bn1.training and not torch.equal(student.bn1.running_mean, stats)
    copied = copy.deepcopy(student)  # the hold travels with a copy (e.g. pipeline dry runs)
    schedule.apply(copied, 1)
    copied.train()(data.train.x[:8])
    assert not copied.bn1.training
