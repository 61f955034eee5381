"""Issue 21.6: a teacher whose outputs are probabilities (a final softmax or sigmoid) is refused.

Distilling probabilities as if they were logits gave a KD loss of ~0.01 and a student that learned
nothing, silently. `distil distill` with a user teacher (`pkg.module:factory`, written here) that ends in a
softmax or a sigmoid now stops with exit 2 and the fix, on the cache path and the live path; the same
teacher without its final activation distills.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.errors import ConfigError, NotLogitsError
from distil.teachers.outputs import MIN_VALUES, check_logits, probability_kind

runner = CliRunner()

TEACHER_SOURCE = """
import torch
from torch import nn


class Teacher(nn.Module):
    def __init__(self, num_classes, in_channels, image_size, activation):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
        self.activation = activation

    def forward(self, x):
        z = self.net(x)
        if self.activation == "softmax":
            return z.softmax(-1)
        if self.activation == "sigmoid":
            return torch.sigmoid(z)
        return z


def softmax_teacher(num_classes, in_channels, image_size):
    return Teacher(num_classes, in_channels, image_size, "softmax")


def sigmoid_teacher(num_classes, in_channels, image_size):
    return Teacher(num_classes, in_channels, image_size, "sigmoid")


def logit_teacher(num_classes, in_channels, image_size):
    return Teacher(num_classes, in_channels, image_size, "none")
"""


@pytest.fixture
def user_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A user module on sys.path with three teachers of one architecture, and trained-looking weights."""
    module = f"probteacher_{uuid.uuid4().hex[:8]}"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{module}.py").write_text(TEACHER_SOURCE)
    monkeypatch.syspath_prepend(str(code))
    torch.manual_seed(0)
    weights = {"net.1.weight": torch.randn(10, 64) * 0.5, "net.1.bias": torch.zeros(10)}
    path = tmp_path / "teacher.pt"
    torch.save(weights, path)
    return module, path


def _distill(tmp_path: Path, factory: str, weights: Path, *sets: str) -> tuple[int, str]:
    args = ["distill", "digits", "--teacher", str(weights), "--set", f"teacher.model={factory}"]
    for s in ("student_train.epochs=1", "data.val_fraction=0", *sets):
        args += ["--set", s]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "runs"), "--name", "kd", "-q", "--no-latency"])
    return r.exit_code, r.output


@pytest.mark.parametrize("cache", ["auto", "off"])
@pytest.mark.parametrize(
    ("factory", "kind"), [("softmax_teacher", "softmax"), ("sigmoid_teacher", "sigmoid")]
)
def test_distill_refuses_a_teacher_that_outputs_probabilities(
    tmp_path: Path, user_teacher: tuple[str, Path], factory: str, kind: str, cache: str
) -> None:
    module, weights = user_teacher
    code, out = _distill(tmp_path, f"{module}:{factory}", weights, f"student_train.teacher_cache={cache}")
    assert code == 2, out
    flat = " ".join(out.split())
    assert "the teacher's outputs look like probabilities" in flat, out
    assert "distil expects pre-activation logits" in flat and f"Remove the final {kind}" in flat, out
    assert not (tmp_path / "runs" / "kd").exists()  # stopped before anything was trained or written


def test_the_same_teacher_without_the_activation_distills(
    tmp_path: Path, user_teacher: tuple[str, Path]
) -> None:
    module, weights = user_teacher
    code, out = _distill(tmp_path, f"{module}:logit_teacher", weights)
    assert code == 0, out
    summary = json.loads((tmp_path / "runs" / "kd" / "summary.json").read_text())
    assert [m["name"] for m in summary["metrics"]] == ["teacher", "student_kd"]


def test_a_user_who_knows_the_outputs_are_logits_can_say_so(
    tmp_path: Path, user_teacher: tuple[str, Path]
) -> None:
    # A head whose logits happen to lie in [0, 1] (non-negative, small) would be refused with no way
    # through; the message names the override, and the override lets it distil.
    module, weights = user_teacher
    code, out = _distill(tmp_path, f"{module}:sigmoid_teacher", weights)
    assert code == 2 and "kd.teacher_outputs=logits" in " ".join(out.split()), out
    code, out = _distill(tmp_path, f"{module}:sigmoid_teacher", weights, "kd.teacher_outputs=logits")
    assert code == 0, out


def test_probability_kind_tells_probabilities_from_logits() -> None:
    torch.manual_seed(0)
    z = torch.randn(32, 10)
    assert probability_kind(z.softmax(-1)) == "softmax"
    assert probability_kind(z.softmax(-1).to(torch.bfloat16)) is not None  # coarse rounding: still caught
    assert probability_kind(torch.sigmoid(z)) == "sigmoid"
    assert probability_kind(torch.randn(2, 5, 300).softmax(-1)) == "softmax"  # (B, T, V) rows
    assert probability_kind(z) is None
    assert probability_kind(z.log_softmax(-1)) is None  # log-probabilities are valid logits
    assert probability_kind(z * 1e-4) is None  # a tiny untrained head's logits: some are negative
    assert probability_kind(torch.zeros(32, 10)) is None  # a zero-initialised head
    assert probability_kind(torch.rand(2, 10)) is None  # too few values to call them sigmoid outputs
    assert probability_kind(torch.rand(MIN_VALUES // 2, 2)) == "sigmoid"
    assert probability_kind(torch.rand(64, 1)) is None  # one output per sample: no class rows


def test_check_logits_is_a_config_error_with_the_fix() -> None:
    with pytest.raises(NotLogitsError, match=r"torch.log\(p\)") as info:
        check_logits(torch.randn(8, 4).softmax(-1))
    assert isinstance(info.value, ConfigError)
    check_logits(torch.randn(8, 4))


class _SigmoidTagger(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.flatten(1)))


def _tags(tmp_path: Path) -> Any:
    import numpy as np

    from distil.data import load_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 12)).astype(np.float32)
    y = (x @ rng.normal(size=(12, 6)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "tags.npz", x=x[:64], y=y[:64], x_test=x[64:], y_test=y[64:])
    return load_dataset("npz", tmp_path / "tags.npz", val_fraction=0.0)


def test_train_refuses_a_sigmoid_model_unless_its_outputs_are_declared_logits(tmp_path: Path) -> None:
    # train_model (distil train, the scratch student) ran binary cross-entropy on the sigmoid's probabilities.
    from distil.api import train_model
    from distil.config import TrainConfig

    data = _tags(tmp_path)
    torch.manual_seed(0)
    with pytest.raises(NotLogitsError, match="model_outputs=logits"):
        train_model(_SigmoidTagger(), data, TrainConfig(epochs=1, batch_size=32))
    train_model(_SigmoidTagger(), data, TrainConfig(epochs=1, batch_size=32, model_outputs="logits"))
