"""Experiment trackers through Accelerate: validation of names, and what the training loop logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker

from distil.config import TrainConfig
from distil.errors import ConfigError
from distil.losses import CELoss
from distil.models import create_model
from distil.train.engine import fit
from distil.train.trackers import check_trackers, end_trackers, is_tracker_available, start_trackers
from tests.data.fake_dataset import tiny_bundle


class ListTracker(GeneralTracker):
    """Keeps what Accelerate hands to a tracker."""

    name = "list"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        self.logged: list[tuple[dict[str, Any], int | None]] = []
        self.finished = False

    @property
    def tracker(self) -> ListTracker:
        return self

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        self.config = dict(values)

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        self.logged.append((dict(values), step))

    def finish(self) -> None:
        self.finished = True


def test_unknown_and_missing_trackers_say_how_to_fix() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'tensorboard'"):
        check_trackers(["tensorbord"])
    missing = [name for name in ("mlflow", "wandb", "tensorboard") if not is_tracker_available(name)]
    if missing:
        with pytest.raises(ConfigError, match=f"pip install {missing[0]}"):
            check_trackers([missing[0]])
    assert check_trackers([]) == []


def test_fit_logs_every_epoch_record_under_its_stage(tmp_path: Path) -> None:
    tracker = ListTracker()
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    start_trackers(accelerator, tmp_path, "proj", {"kd": {"temperature": 4.0}, "trackers": ["list"]})
    assert tracker.config == {"kd.temperature": 4.0, "trackers": "['list']"}
    data = tiny_bundle()
    model = create_model("mlp", num_classes=data.num_classes, in_channels=1, image_size=data.input_shape[1])
    result = fit(
        model,
        data,
        TrainConfig(epochs=2, batch_size=16),
        CELoss(),
        accelerator=accelerator,
        description="teacher",
    )
    end_trackers(accelerator)
    assert [step for _, step in tracker.logged] == [1, 2]
    first, _ = tracker.logged[0]
    assert first["teacher/train_loss"] == pytest.approx(result.history[0]["train_loss"])
    assert "teacher/eval_accuracy" in first and "teacher/stage" not in first
    assert tracker.finished


@pytest.mark.skipif(not is_tracker_available("tensorboard"), reason="tensorboard is not installed")
def test_tensorboard_writes_event_files_into_the_run_directory(tmp_path: Path) -> None:
    from distil.train.engine import make_accelerator

    accelerator = make_accelerator("cpu", trackers=["tensorboard"])
    start_trackers(accelerator, tmp_path, "proj", {"name": "x"})
    accelerator.log({"teacher/train_loss": 1.0}, step=1)
    end_trackers(accelerator)
    assert list((tmp_path / "proj").glob("events.out.tfevents*"))
