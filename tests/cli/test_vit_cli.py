"""End to end on tiny data: a ViT student with a distillation token, distilled with `--method deit`,
evaluated and exported to ONNX (ONNX Runtime gives the checkpoint's logits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app

runner = CliRunner()
FAST = ["--quiet", "--no-latency", "--set", "data.limit=300"]
VIT = ["--set", "student.model=vit-tiny", "--set", "student_train.epochs=1"]
TOKEN = "student.kwargs={patch_size: 2, dim: 16, depth: 1, heads: 2, distill_token: true}"
PLAIN = "student.kwargs={patch_size: 2, dim: 16, depth: 1, heads: 2}"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    args = ["train", "digits", "--out", str(out), "--name", "t", *FAST]
    r = runner.invoke(app, [*args, "--set", "teacher.model=tiny-cnn", "--set", "teacher_train.epochs=1"])
    assert r.exit_code == 0, r.output
    return out / "t" / "teacher.safetensors"


def test_deit_distill_then_eval_then_onnx_export(teacher: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from distil.compress.export import onnx_predict
    from distil.measure import predict
    from distil.models import VisionTransformer
    from distil.train.checkpoint import load_checkpoint

    args = ["distill", "digits", "--teacher", str(teacher), "--out", str(tmp_path), "--name", "s", *FAST]
    r = runner.invoke(app, [*args, *VIT, "--set", TOKEN, "--method", "deit"])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    student_records = [rec for rec in records if "train_deit" in rec]
    assert student_records and all(rec["train_loss"] == rec["train_deit"] for rec in student_records)
    checkpoint = tmp_path / "s" / "student_kd.json"
    r = runner.invoke(app, ["eval", str(teacher), str(checkpoint), "--no-latency"])
    assert r.exit_code == 0, r.output
    onnx_path = tmp_path / "student.onnx"
    r = runner.invoke(app, ["export", str(checkpoint), "--out", str(onnx_path)])
    assert r.exit_code == 0, r.output
    assert "top-1" in r.output and onnx_path.is_file()
    model, _ = load_checkpoint(checkpoint)
    assert isinstance(model, VisionTransformer) and model.distill_token
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(onnx_predict(onnx_path, x), predict(model.eval(), x), atol=1e-5, rtol=1e-4)


def test_deit_on_a_student_without_the_token_fails_with_the_fix_and_leaves_no_run(
    teacher: Path, tmp_path: Path
) -> None:
    args = ["distill", "digits", "--teacher", str(teacher), "--out", str(tmp_path), "--name", "bad", *FAST]
    r = runner.invoke(app, [*args, *VIT, "--set", PLAIN, "--method", "deit"])
    assert r.exit_code != 0
    assert "student has none" in r.output and "distill_token: true" in r.output
    assert not any(tmp_path.iterdir())
