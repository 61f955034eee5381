"""`max_steps`: a step budget beside epochs; the schedule spans it and a run stopped inside it resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig, TrainConfig
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.losses import CELoss
from distil.losses.compose import ComposedLoss
from distil.models import create_model
from distil.train.engine import fit
from distil.train.optim import step_budget
from distil.train.state import TrainStateStore
from distil.transfer.structure import UnfreezeSchedule, fit_in_phases
from tests.reliability.test_resume import Crash, _assert_same_weights, _crash_after


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=200)  # 180 train samples: 5 steps of 32 per epoch


def _net():
    torch.manual_seed(0)
    return create_model("smallnet", num_classes=10, in_channels=1, image_size=8)


def test_the_budget_is_epochs_or_max_steps() -> None:
    assert step_budget(TrainConfig(epochs=3), 5) == (3, 15)
    assert step_budget(TrainConfig(epochs=3, max_steps=7), 5) == (2, 7)  # replaces epochs, either way
    assert step_budget(TrainConfig(epochs=1, max_steps=12), 5) == (3, 12)


def test_max_steps_stops_inside_an_epoch_and_records_the_short_one(digits) -> None:
    cfg = TrainConfig(epochs=1, max_steps=7, batch_size=32, lr=0.05, schedule="cosine")
    result = fit(_net(), digits, cfg, CELoss())
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert "steps" not in result.history[0] and result.history[1]["steps"] == 2
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # the cosine schedule ends at step 7
    same = fit(_net(), digits, TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="cosine"), CELoss())
    assert (
        same.history[0]["train_loss"] != result.history[0]["train_loss"]
    )  # another schedule, not a cut-off run


def test_a_run_stopped_inside_its_step_budget_resumes_to_the_same_weights(digits, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, max_steps=8, batch_size=32, lr=0.05, optimizer="adam", checkpoint_every=3)
    reference = fit(_net(), digits, cfg, CELoss())
    # States at steps 3, 5 (epoch end), 6, 8 (the end): crash after the third, inside the last epoch.
    with pytest.raises(Crash):
        fit(_net(), digits, cfg, CELoss(), checkpoint=_crash_after(TrainStateStore(tmp_path, every=3), 3))
    resumed = fit(_net(), digits, cfg, CELoss(), checkpoint=TrainStateStore(tmp_path, every=3))
    _assert_same_weights(reference.model, resumed.model)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in reference.history]


def test_a_temperature_schedule_spans_the_epochs_max_steps_runs(digits, monkeypatch) -> None:
    seen: list[float] = []
    original = ComposedLoss.set_epoch

    def spy(self: ComposedLoss, epoch: int) -> None:
        original(self, epoch)
        seen.append(self.current_temperature())

    monkeypatch.setattr(ComposedLoss, "set_epoch", spy)
    kd = KDConfig(temperature=4.0, temperature_final=1.0)
    cfg = StudentTrainConfig(epochs=10, max_steps=15, batch_size=32, teacher_cache={"mode": "off"})
    result = distill(_net(), _net(), digits, cfg, kd)
    assert len(result.history) == 3
    assert seen == [4.0, 2.5, 1.0]  # from T to temperature_final over the 3 epochs run, not over 10


def test_an_unfreeze_epoch_with_a_step_budget_is_refused() -> None:
    schedule = UnfreezeSchedule(modules=("features",), epoch=2)
    with pytest.raises(ConfigError, match="max_steps"):
        fit_in_phases(lambda *a: None, _net(), TrainConfig(max_steps=5), schedule, "distill")
