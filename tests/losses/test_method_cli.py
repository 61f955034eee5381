"""`distil distill --method NAME` end to end, and its errors (no traceback, exit 2, closest name)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.data import load_dataset
from distil.models import create_model
from distil.train.checkpoint import save_checkpoint

runner = CliRunner()
FAST = ["--quiet", "--no-latency", "--set", "data.limit=200", "--set", "student_train.epochs=1"]


def _teacher(tmp_path: Path) -> Path:
    data = load_dataset("digits", limit=200)
    torch.manual_seed(0)
    model = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    spec = {"name": "largenet", "num_classes": 10, "in_channels": 1, "image_size": 8, "kwargs": {}}
    return save_checkpoint(tmp_path / "teacher", model, spec, {"data": data.describe()})


@pytest.mark.slow  # a whole run directory with report and plots: about 15 s on 2 busy cores
def test_method_selects_the_terms_and_logs_each(tmp_path: Path) -> None:
    teacher = _teacher(tmp_path)
    out = tmp_path / "runs"
    r = runner.invoke(
        app,
        [
            "distill",
            "digits",
            "--teacher",
            str(teacher),
            "--method",
            "at",
            "--out",
            str(out),
            "--name",
            "s",
            *FAST,
        ],
    )
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "s" / "metrics.jsonl").read_text().splitlines()]
    kd_records = [rec for rec in records if rec.get("stage") == "student_kd"]
    assert kd_records and {"train_ce", "train_at", "train_loss"} <= set(kd_records[-1])


def test_unknown_method_names_the_closest(tmp_path: Path) -> None:
    r = runner.invoke(app, ["distill", "digits", "--teacher", "x.safetensors", "--method", "fitnets", *FAST])
    assert r.exit_code == 2
    assert "unknown method 'fitnets'" in r.output and "Did you mean 'fitnet'" in r.output
