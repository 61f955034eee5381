"""Progress formats: plain lines for logs, JSON lines for scripts, nothing when quiet."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from distil.errors import ConfigError
from distil.report.progress import epoch_summary, make_progress, resolve_log_format

RECORD = {
    "stage": "student_kd",
    "epoch": 2,
    "lr": 0.025,
    "seconds": 3.0,
    "samples_per_s": 100.0,
    "train_loss": 0.5,
    "train_kd": 0.25,
    "train_ce": 1.5,
    "val_accuracy": 0.9125,
    "eval_accuracy": 0.9125,
}


def test_epoch_summary_lists_every_loss_term_and_the_accuracy() -> None:
    line = epoch_summary(RECORD, 4)
    assert line == "epoch 2/4  loss 0.5  kd 0.25  ce 1.5  val acc 91.25%  lr 0.025  3.0s"


def _console(buffer: io.StringIO, terminal: bool) -> Console:
    return Console(file=buffer, force_terminal=terminal, width=200)


def test_auto_is_rich_on_a_terminal_and_plain_otherwise() -> None:
    assert resolve_log_format("auto", _console(io.StringIO(), True)) == "rich"
    assert resolve_log_format("auto", _console(io.StringIO(), False)) == "plain"
    with pytest.raises(ConfigError, match="Did you mean 'jsonl'"):
        resolve_log_format("json", _console(io.StringIO(), False))


def test_plain_prints_one_line_per_epoch_with_an_eta() -> None:
    out = io.StringIO()
    with make_progress(_console(out, False), log_format="plain") as progress:
        task = progress.add_task("student_kd", total=40, status="")
        progress.epoch_end(task, dict(RECORD, epoch=1, seconds=2.0), 4)
        progress.epoch_end(task, dict(RECORD, epoch=2, seconds=4.0), 4)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("student_kd       epoch 1/4  loss 0.5  kd 0.25")
    assert lines[0].endswith("eta 6s")  # 2 s per epoch so far, 3 epochs left
    assert lines[1].endswith("eta 6s")  # (2 + 4) / 2 = 3 s per epoch, 2 left


def test_jsonl_writes_parseable_records_and_nothing_else() -> None:
    console_out, stream = io.StringIO(), io.StringIO()
    progress = make_progress(_console(console_out, False), log_format="jsonl")
    progress._stream = stream  # where the CLI's stdout would be
    with progress:
        task = progress.add_task("student_kd", total=40, status="")
        progress.epoch_end(task, RECORD, 4)
    (line,) = stream.getvalue().splitlines()
    parsed = json.loads(line)
    assert parsed["event"] == "epoch" and parsed["train_kd"] == 0.25 and parsed["epochs"] == 4
    assert console_out.getvalue() == ""


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    with make_progress(_console(out, True), enabled=False) as progress:
        task = progress.add_task("x", total=1, status="")
        progress.epoch_end(task, RECORD, 4)
    assert out.getvalue() == ""


def test_training_prints_one_plain_line_per_epoch_through_the_loop() -> None:
    from distil.api import train_model
    from distil.config import TrainConfig
    from distil.data import load_dataset
    from distil.models import create_model

    out = io.StringIO()
    data = load_dataset("digits", limit=120)
    model = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    with make_progress(_console(out, False), log_format="plain") as progress:
        train_model(
            model, data, TrainConfig(epochs=2, batch_size=32), progress=progress, description="teacher"
        )
    lines = out.getvalue().splitlines()
    assert [line.split()[:3] for line in lines] == [["teacher", "epoch", "1/2"], ["teacher", "epoch", "2/2"]]
