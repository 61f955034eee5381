from typing import Any

import pytest
import torch
from rich.progress import Progress, TaskID

from distil.api import distill, train_model
from distil.config import KDConfig, TrainConfig
from distil.data import load_dataset
from distil.errors import DataError, TrainingError
from distil.models import create_model
from distil.train.engine import EpochReporter


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=400)


def _net(name: str = "smallnet", classes: int = 10):
    return create_model(name, num_classes=classes, in_channels=1, image_size=8)


def test_training_learns_and_records_each_epoch(digits) -> None:
    torch.manual_seed(0)
    result = train_model(_net(), digits, TrainConfig(epochs=4, batch_size=32, lr=0.1))
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert {"train_loss", "train_ce", "val_accuracy", "lr", "seconds"} <= set(result.history[0])
    # 10 classes: chance is 10%; a few epochs on digits get far above it.
    assert result.final_accuracy is not None and result.final_accuracy > 0.6
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_distillation_moves_the_student_towards_the_teacher(digits) -> None:
    teacher = train_model(_net("largenet"), digits, TrainConfig(epochs=4, batch_size=32)).model
    before = [p.detach().clone() for p in teacher.parameters()]
    result = distill(teacher, _net(), digits, TrainConfig(epochs=3, batch_size=32), KDConfig(temperature=2))
    assert {"train_kd", "train_ce", "train_loss"} <= set(result.history[-1])
    assert result.history[-1]["train_kd"] < result.history[0]["train_kd"]
    # The teacher is frozen: not trained, no gradients, eval mode.
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_divergence_stops_with_a_message_naming_the_cause(digits) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e12, grad_clip=None, optimizer={"momentum": 0.0})
    with pytest.raises(TrainingError, match=r"NaN/Inf between steps \d+ and \d+.*lr=1e\+12"):
        train_model(_net(), digits, cfg)


def test_class_count_mismatch_is_a_clear_error(digits) -> None:
    teacher = _net("largenet", classes=5)
    with pytest.raises(DataError, match="teacher predicts 5 classes but dataset 'digits' has 10"):
        distill(teacher, _net(), digits, TrainConfig(epochs=1))


def test_same_seed_same_weights(digits) -> None:
    cfg = TrainConfig(epochs=1, batch_size=64, seed=3)
    torch.manual_seed(1)
    a = train_model(_net(), digits, cfg).model
    torch.manual_seed(1)
    b = train_model(_net(), digits, cfg).model
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_every_rank_gets_a_batch_when_its_share_is_smaller_than_one() -> None:
    # 100 samples, 2 ranks, batch 64: each rank's 50 samples are one (short) batch, not zero.
    from types import SimpleNamespace

    from distil.data import load_dataset
    from distil.train.engine import train_loader

    data = load_dataset("digits", limit=100, val_fraction=0.0)
    cfg = TrainConfig(batch_size=64, augment="none")
    for rank in range(2):
        loader = train_loader(data, cfg, SimpleNamespace(num_processes=2, process_index=rank))  # type: ignore[arg-type]
        assert len(loader) == 1 and len(next(iter(loader))["index"]) == 50


class _EpochLog(Progress):
    """A Rich progress display that is not distil's, but reports epochs (an `EpochReporter`)."""

    def __init__(self) -> None:
        super().__init__(disable=True)
        self.reported: list[tuple[int, int]] = []

    def epoch_end(self, task_id: TaskID, record: dict[str, Any], epochs: int) -> None:
        self.reported.append((record["epoch"], epochs))


def test_the_loop_reports_epochs_to_any_display_that_takes_them() -> None:
    small = load_dataset("digits", limit=120)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.1)
    display = _EpochLog()
    with display:
        result = train_model(_net(), small, cfg, progress=display)
    assert display.reported == [(1, 2), (2, 2)]
    assert [r["epoch"] for r in result.history] == [1, 2] and display.tasks[0].finished  # the bar is full
    assert isinstance(display, EpochReporter) and not isinstance(Progress(), EpochReporter)
    with Progress(disable=True) as bars_only:  # a plain Rich display only gets its bar
        train_model(_net(), small, cfg, progress=bars_only)
    assert bars_only.tasks[0].finished
