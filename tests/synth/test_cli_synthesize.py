"""`distil synthesize` end to end on a user's own `pkg.module:factory` teacher, then `distil distill` on it."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from distil.cli.app import app
from tests.synth.bn_factory import make

runner = CliRunner()
FACTORY = "tests.synth.bn_factory:make"


def _weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    teacher = make(num_classes=10, in_channels=1, image_size=8)
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    return path


def test_synthesize_on_a_user_factory_teacher_then_distill_on_the_set(tmp_path: Path) -> None:
    weights = _weights(tmp_path)
    teacher_opts = ["--teacher", str(weights), "--set", f"teacher.model={FACTORY}"]
    data_opts = ["--set", "data.name=digits", "--set", "data.limit=60", "--set", "data.val_fraction=0"]
    result = runner.invoke(
        app,
        [
            "synthesize",
            *teacher_opts,
            *data_opts,
            "--count",
            "8",
            "--iterations",
            "3",
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "synth"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    npz = tmp_path / "synth" / "transfer.npz"
    assert npz.is_file() and (tmp_path / "synth" / "report.html").is_file()
    result = runner.invoke(
        app,
        [
            "distill",
            *teacher_opts,
            "--set",
            "data.name=npz",
            "--set",
            f"data.root={npz}",
            "--set",
            "data.val_fraction=0",
            "--set",
            "student.model=tiny-cnn",
            "--set",
            "student_train.epochs=1",
            "--set",
            "kd.ce_weight=0",
            "--no-latency",
            "--quiet",
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 0, result.output
    # The distill run's report shows what the students trained on: the set's grid per class.
    (report,) = (tmp_path / "runs").glob("*/report.md")
    assert "## Synthetic transfer set" in report.read_text()
    grids = len(list((tmp_path / "synth" / "grids").glob("*.png")))
    assert grids > 0 and len(list((report.parent / "plots" / "synthetic").glob("*.png"))) == grids


def test_deepinversion_on_a_teacher_without_batchnorm_exits_2_naming_the_adversarial_method(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    from distil.models.seed import TinyCNN

    path = tmp_path / "plain.safetensors"
    save_file(TinyCNN(10, 1).state_dict(), str(path))
    result = runner.invoke(
        app,
        [
            "synthesize",
            "--teacher",
            str(path),
            "--set",
            "teacher.model=tiny-cnn",
            "--set",
            "data.name=digits",
            "--set",
            "data.limit=60",
            "--count",
            "4",
            "--out",
            str(tmp_path / "s"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "adversarial" in result.output and not (tmp_path / "s").exists()
