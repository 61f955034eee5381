"""A run measures each model in one streamed pass over the test set and writes each sidecar once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

import distil.fileio
import distil.train.checkpoint
from distil.config import load_recipe
from distil.data.bundle import Split
from distil.measure import accuracy, measure, measure_model, per_class_accuracy, predict
from distil.models import create_model
from distil.run.pipeline import load_data
from distil.run.runner import Runner


class _Counting(nn.Module):
    """A model that counts the test-set batches it sees (latency's dummy batches are of size 1 or 256)."""

    def __init__(self, inner: nn.Module, n_test: int) -> None:
        super().__init__()
        self.inner, self.n_test, self.passes = inner, n_test, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += int(x.shape[0] == self.n_test)
        return self.inner(x)


def test_a_run_reads_the_test_set_once_per_model_and_writes_each_sidecar_once(
    tmp_path: Path, monkeypatch
) -> None:
    recipe = load_recipe(None, ["name=once", "data.limit=120"])
    data = load_data(recipe)
    n = len(data.test)
    torch.manual_seed(0)
    teacher = _Counting(create_model("largenet", num_classes=10, in_channels=1, image_size=8), n)
    student = _Counting(create_model("smallnet", num_classes=10, in_channels=1, image_size=8), n)
    writes: list[str] = []
    real = distil.fileio.atomic_write_json

    def spy(path, obj, *args, **kwargs):  # type: ignore[no-untyped-def]
        writes.append(Path(path).name)
        return real(path, obj, *args, **kwargs)

    monkeypatch.setattr(distil.train.checkpoint, "atomic_write_json", spy)
    monkeypatch.setattr("distil.run.runner.atomic_write_json", spy)

    def keep(r: Runner) -> None:
        r.keep("teacher", teacher, {"name": "largenet"}, None)
        r.keep("student_kd", student, {"name": "smallnet"}, None)

    result = Runner(recipe, data, console=Console(quiet=True), train=False, measure_latency=False).execute(
        tmp_path, "run", exact=True, train=keep
    )
    assert (teacher.passes, student.passes) == (1, 1)  # no second forward pass for the reference
    assert writes.count("teacher.json") == 1 and writes.count("student_kd.json") == 1
    x, y = data.test.head(n), data.test.labels
    t_logits, s_logits = predict(teacher.inner, x), predict(student.inner, x)
    for name, logits in (("teacher", t_logits), ("student_kd", s_logits)):
        sidecar = json.loads((result.run_dir / f"{name}.json").read_text())
        expected = [None if v != v else v for v in per_class_accuracy(logits, y, 10)]
        assert sidecar["per_class_accuracy"] == pytest.approx(expected, nan_ok=True)
        assert sidecar["test_metrics"]["bytes"] == (result.run_dir / f"{name}.safetensors").stat().st_size
        assert sidecar["test_metrics"] == result.by_name(name).to_dict()
    agreement = float((s_logits.argmax(1) == t_logits.argmax(1)).float().mean())
    assert result.by_name("student_kd").agreement == pytest.approx(agreement)


def test_streamed_measure_gives_the_whole_logits_figures() -> None:
    torch.manual_seed(0)
    teacher, student = nn.Linear(5, 4), nn.Linear(5, 4)
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))  # class 3 has no sample: NaN
    t_logits = predict(teacher, x)
    m = measure(
        student,
        Split(x, y),
        name="s",
        reference=t_logits.argmax(1),
        latency=False,
        batch_size=7,
        num_classes=4,
    )
    whole = measure_model("s", student, x, y, input_shape=(5,), teacher_logits=t_logits, latency=False)
    assert m.metrics.to_dict() == whole.to_dict()
    assert m.metrics.accuracy == pytest.approx(accuracy(predict(student, x), y))
    expected = per_class_accuracy(predict(student, x), y, 4)
    assert m.details["per_class_accuracy"][:3] == pytest.approx(expected[:3])
    assert m.details["per_class_accuracy"][3] != m.details["per_class_accuracy"][3]  # NaN
    assert torch.equal(m.predictions, predict(student, x).argmax(1))
