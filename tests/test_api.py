"""`distill`: Hinton KD is the composed {kd, ce} loss, so its schedules apply; one loss across phases."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig, TrainConfig
from distil.data import load_dataset
from distil.losses import logit
from distil.losses.compose import ComposedLoss
from distil.models import create_model
from distil.transfer import UnfreezeSchedule, fit_in_phases


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=128, val_fraction=0.1, seed=0)


def _nets(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    return teacher, student


def test_default_hinton_loss_follows_warmup_and_temperature_schedule(digits, monkeypatch) -> None:
    # Regression: without kd.terms, a separate KD loss ignored kd.warmup and kd.temperature_final.
    temperatures: list[float] = []
    real = logit.kd_kl

    def spy(s: torch.Tensor, t: torch.Tensor, temperature: float, mask=None, **kw) -> torch.Tensor:
        temperatures.append(temperature)
        return real(s, t, temperature, mask=mask, **kw)

    monkeypatch.setattr(logit, "kd_kl", spy)
    teacher, student = _nets()
    cfg = StudentTrainConfig(epochs=3, batch_size=64, augment="none", teacher_cache="off")
    kd = KDConfig(temperature=4.0, temperature_final=1.0, warmup={"kd": 2}, kd_weight=0.9, ce_weight=0.1)
    history = distill(teacher, student, digits, cfg, kd).history
    steps = len(temperatures) // 3
    assert temperatures == [4.0] * steps + [2.5] * steps + [1.0] * steps
    # The weights are constant within an epoch, so the epoch means obey the same weighted sum.
    for record, w_kd in zip(history, (0.45, 0.9, 0.9), strict=True):
        assert record["train_loss"] == pytest.approx(w_kd * record["train_kd"] + 0.1 * record["train_ce"])


def test_one_loss_is_carried_across_unfreeze_phases(digits, monkeypatch) -> None:
    # Regression: each phase rebuilt the loss (random FitNets regressor, restarted schedules).
    from distil.run.stages import distiller

    seen: list[dict[str, Any]] = []
    real_set_epoch = ComposedLoss.set_epoch

    def regressor_weight(loss: ComposedLoss) -> torch.Tensor:
        return loss.terms["fitnet"].adapters[0][0].weight.detach().clone()

    def spy(self: ComposedLoss, epoch: int) -> None:
        real_set_epoch(self, epoch)
        seen.append(
            {"loss": self, "epoch": self.epoch, "T": self.current_temperature(), "w": regressor_weight(self)}
        )

    monkeypatch.setattr(ComposedLoss, "set_epoch", spy)
    teacher, student = _nets()
    cfg = TrainConfig(epochs=3, batch_size=64, augment="none", lr=0.05)
    kd = KDConfig(
        terms={"ce": 1.0, "kd": 1.0, "fitnet": 1.0},
        feature_pairs=[("conv2", "conv2")],
        temperature=4.0,
        temperature_final=1.0,
    )
    recipe = SimpleNamespace(kd=kd)
    run = SimpleNamespace(log=lambda record: None)
    ends: list[torch.Tensor] = []
    with distiller(teacher, None, digits, recipe, cfg, None, None, run) as train:  # type: ignore[arg-type]

        def phase(model: torch.nn.Module, phase_cfg: TrainConfig, description: str) -> Any:
            result = train(model, phase_cfg, description)
            ends.append(regressor_weight(seen[-1]["loss"]))
            return result

        fit_in_phases(phase, student, cfg, UnfreezeSchedule(("conv1",), 2), "s")
        assert student.conv2._forward_hooks  # the carried loss keeps its hooks until the block ends
    assert not student.conv2._forward_hooks and not teacher.conv2._forward_hooks
    assert len({id(s["loss"]) for s in seen}) == 1
    assert [s["epoch"] for s in seen] == [0, 1, 2]  # the epoch passed to set_epoch continues
    assert [s["T"] for s in seen] == [4.0, 2.5, 1.0]  # so does the temperature schedule
    torch.testing.assert_close(seen[1]["w"], ends[0], rtol=0, atol=0)  # phase 2 starts where 1 ended
    assert not torch.equal(seen[0]["w"], ends[0])  # and the regressor did train in phase 1


def test_a_refused_teacher_source_leaves_no_feature_hooks_on_the_models(digits) -> None:
    # Regression: the loss built by `distill` was closed only around `fit`, so a source refused after it
    # was built (here a cache demanded for a term that needs the teacher's features) left its hooks on.
    from distil.errors import ConfigError

    teacher, student = _nets()
    cfg = StudentTrainConfig(epochs=1, batch_size=64, augment="none", teacher_cache="on")
    kd = KDConfig(terms={"kd": 1.0, "fitnet": 1.0}, feature_pairs=[("conv2", "conv2")])
    with pytest.raises(ConfigError, match="teacher_cache=on"):
        distill(teacher, student, digits, cfg, kd)
    assert not student.conv2._forward_hooks and not teacher.conv2._forward_hooks


def test_the_teacher_source_is_one_function_that_returns_the_callable_and_its_record(digits) -> None:
    from distil.teachers.source import teacher_source
    from distil.train.engine import make_accelerator

    teacher, _ = _nets()
    accelerator = make_accelerator("cpu")
    loss = object()  # a user loss that declares nothing: the teacher runs live
    live, record = teacher_source([teacher], digits, loss, StudentTrainConfig(augment="none"), accelerator)  # type: ignore[arg-type]
    assert record["teacher_source"] == "live" and "teacher_cache" not in record
    batch = {"inputs": digits.train.head(4)}
    assert torch.equal(live(batch), teacher(batch["inputs"]))
    assert not any(p.requires_grad for p in teacher.parameters())  # frozen whichever source is used
