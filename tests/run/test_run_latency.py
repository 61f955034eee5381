"""A run's latencies come from one interleaved measurement of all its models, with spread and reliability
recorded in summary.json, the sidecars and the report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

import distil.measure as measure
import distil.measure.latency as latency
from distil.config import load_recipe
from distil.models import create_model
from distil.run.pipeline import load_data
from distil.run.runner import Runner


def test_a_run_times_all_its_models_together_and_records_the_spread(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[int, list[str]]] = []
    real = measure.measure_latencies

    def spy(models, input_shape, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((kwargs.get("batch_size", 1), [type(m).__name__ for m in models]))
        return real(models, input_shape, **{**kwargs, "min_run_time": 0.005})  # fast, not a benchmark

    monkeypatch.setattr(latency, "measure_latencies", spy)  # where time_models finds it
    recipe = load_recipe(None, ["name=timed", "data.limit=120"])
    data = load_data(recipe)
    torch.manual_seed(0)
    teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    twin = copy.deepcopy(student)  # the same architecture, as a scratch and a distilled student are

    def keep(r: Runner) -> None:
        r.keep("teacher", teacher, {"name": "largenet"}, None)
        r.keep("student_scratch", student, {"name": "smallnet"}, None)
        r.keep("student_kd", twin, {"name": "smallnet"}, None)

    result = Runner(recipe, data, console=Console(quiet=True), train=False).execute(
        tmp_path, "run", exact=True, train=keep
    )
    # One measurement per batch size, holding every model of the run (not one model after another).
    assert [(b, len(names)) for b, names in calls] == [(1, 3), (256, 3)]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    for row in summary["metrics"]:
        assert row["latency_b1_ms"] > 0 and row["latency_b1_spread"] >= 0
        assert isinstance(row["latency_reliable"], bool)
        sidecar = json.loads((result.run_dir / f"{row['name']}.json").read_text())
        assert sidecar["test_metrics"]["latency_b1_spread"] == row["latency_b1_spread"]
        assert len(sidecar["per_class_accuracy"]) == 10  # the task's breakdowns are still recorded
    assert " ±" in (result.run_dir / "report.md").read_text()


def test_measure_model_of_one_model_is_the_interleaved_timer_with_a_list_of_one(monkeypatch) -> None:
    calls: list[int] = []
    real = measure.measure_latencies

    def spy(models, input_shape, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(models))
        return real(models, input_shape, **{**kwargs, "min_run_time": 0.005})

    monkeypatch.setattr(latency, "measure_latencies", spy)  # where time_models finds it
    model = nn.Sequential(nn.Linear(4, 2))
    m = measure.measure_model(
        "m", model, torch.randn(8, 4), torch.zeros(8, dtype=torch.long), input_shape=(4,)
    )
    assert calls == [1, 1] and m.latency_b1_spread is not None
