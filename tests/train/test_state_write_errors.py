"""A training state that cannot be written says why: 'free disk space' only when the disk is full."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from distil.errors import TrainingError
from distil.train.state import TrainState, TrainStateStore


def _state() -> TrainState:
    return TrainState(epoch=1, batch=0, step=3, tensors={"w": torch.ones(2)}, meta={})


def test_a_state_write_that_fails_for_another_reason_does_not_blame_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def clash(*args: object, **kwargs: object) -> None:
        # What two runs sharing one directory met (issue 21), wrongly reported as a full disk.
        raise OSError(errno.ENOTEMPTY, "Directory not empty")

    monkeypatch.setattr("distil.train.state.atomic_write_bytes", clash)
    with pytest.raises(TrainingError, match="Directory not empty") as info:
        TrainStateStore(tmp_path / "state").save(_state())
    assert "disk space" not in str(info.value)
    assert "still exists and is writable" in str(info.value)


def test_a_full_disk_says_to_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("distil.train.state.atomic_write_bytes", full)
    with pytest.raises(TrainingError, match=r"No space left on device.*free disk space or choose another"):
        TrainStateStore(tmp_path / "state").save(_state())
