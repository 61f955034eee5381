"""The worked examples of the docs, run as a user would: examples/own_teacher (bring your own teacher)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from examples.own_teacher.my_models import make_teacher
from examples.own_teacher.train_teacher import train
from typer.testing import CliRunner

from distil.cli.app import app
from distil.data import load_dataset

runner = CliRunner()
FACTORY = "examples.own_teacher.my_models:make_teacher"


def _teacher(tmp_path: Path, epochs: int) -> tuple[Path, float]:
    """Run the example's plain-PyTorch training; return the weights and their independently computed accuracy."""
    weights = train(tmp_path / "teacher.pt", epochs=epochs)
    # Independent reference: the user's own model, loaded with plain PyTorch, on distil's test split.
    data = load_dataset("digits", val_fraction=0.0)
    model = make_teacher(num_classes=10, in_channels=1)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    with torch.no_grad():
        expected = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
    return weights, expected


def test_own_teacher_is_evaluated_as_is(tmp_path: Path) -> None:
    weights, expected = _teacher(tmp_path, epochs=1)
    r = runner.invoke(app, ["eval", str(weights), "--model", FACTORY, "--data", "digits", "--no-latency"])
    assert r.exit_code == 0, r.output
    shown = re.search(r"accuracy\s+│\s+([\d.]+)%", r.output)
    assert shown is not None and float(shown.group(1)) == round(100 * expected, 2)

    r = runner.invoke(app, ["eval", str(weights), "--data", "digits", "--no-latency"])
    assert r.exit_code == 2 and "--model" in r.output  # a plain state_dict needs its architecture named


@pytest.mark.slow
def test_own_teacher_is_distilled_without_retraining(tmp_path: Path) -> None:
    weights, expected = _teacher(tmp_path, epochs=2)
    out = tmp_path / "runs"
    r = runner.invoke(
        app,
        [
            "distill",
            "digits",
            "--teacher",
            str(weights),
            "--set",
            f"teacher.model={FACTORY}",
            "--set",
            "student_train.epochs=1",
            "--set",
            "data.val_fraction=0",
            "--out",
            str(out),
            "--name",
            "kd",
            "--no-latency",
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "kd" / "summary.json").read_text())
    teacher = summary["metrics"][0]
    assert teacher["name"] == "teacher" and teacher["accuracy"] == expected  # loaded as is, not retrained
    assert (out / "kd" / "student_kd.safetensors").is_file() and (out / "kd" / "report.html").is_file()
    records = [json.loads(line) for line in (out / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert {rec["stage"] for rec in records} == {"student_kd"}  # no teacher training happened
