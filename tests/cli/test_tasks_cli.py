"""Issue 26.1: output kinds as tasks, end to end through the CLI on npz data the tests write.

Per task: train a tiny teacher, distill a student, `distil eval` both (the task's own metrics in the
table) and export the student to ONNX. And the CREPE trap: a teacher that ends in a sigmoid, given as is
to multilabel data, stops with the fix instead of distilling probabilities as logits.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app

runner = CliRunner()


def _flat(text: str) -> str:
    return " ".join(text.split())


def _multilabel_npz(tmp_path: Path, labels: int = 6) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    w = rng.normal(size=(12, labels))
    y = (x @ w > 0.5).astype(np.float32)
    path = tmp_path / "tags.npz"
    np.savez(path, x=x[:200], y=y[:200], x_test=x[200:], y_test=y[200:])
    return path


def _data_sets(path: Path, *extra: str) -> list[str]:
    sets = ["data.name=npz", f"data.root={path}", "data.val_fraction=0.1", *extra]
    return [arg for s in sets for arg in ("--set", s)]


def _train_and_distill(tmp_path: Path, data: Path, *extra: str) -> Path:
    out = tmp_path / "runs"
    r = runner.invoke(
        app,
        [
            "train",
            "--out",
            str(out),
            "--name",
            "t",
            "-q",
            "--no-latency",
            *_data_sets(data, "teacher.model=mlp", "teacher_train.epochs=3", *extra),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "distill",
            "--teacher",
            str(out / "t" / "teacher.safetensors"),
            "--out",
            str(out),
            "--name",
            "s",
            "-q",
            "--no-latency",
            *_data_sets(
                data,
                "teacher.model=mlp",
                "student.model=mlp",
                "student.kwargs.hidden=[16]",
                "student_train.epochs=3",
                *extra,
            ),
        ],
    )
    assert r.exit_code == 0, r.output
    return out


def test_multilabel_train_distill_eval_export(tmp_path: Path) -> None:
    data = _multilabel_npz(tmp_path)
    out = _train_and_distill(tmp_path, data)
    records = [json.loads(line) for line in (out / "s" / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r["stage"] == "student_kd"]
    assert "train_ml_kd" in kd[-1] and "train_ml_bce" in kd[-1] and "val_mAP" in kd[-1]
    # Cached by default, every label's logit (never top-k: a tail fill approximates a softmax's tail).
    assert kd[-1]["teacher_source"] == "cache" and kd[-1]["teacher_cache"]["form"] == "full"
    assert kd[-1]["teacher_cache"]["topk"] is None
    summary = json.loads((out / "s" / "summary.json").read_text())
    student = next(m for m in summary["metrics"] if m["name"] == "student_kd")
    assert student["task"] == "multilabel" and 0 < student["accuracy"] <= 1
    assert {"mAP", "micro_f1", "macro_f1"} <= set(student["extra"])
    assert student["agreement"] is not None and 0 <= student["agreement"] <= 1

    r = runner.invoke(
        app,
        [
            "eval",
            str(out / "t" / "teacher.json"),
            str(out / "s" / "student_kd.json"),
            "--data-root",
            str(data),
            "--no-latency",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "mAP" in r.output and "macro_f1" in r.output and "Δ mAP" in r.output

    onnx = tmp_path / "student.onnx"
    r = runner.invoke(
        app, ["export", str(out / "s" / "student_kd.json"), "--out", str(onnx), "--data-root", str(data)]
    )
    assert r.exit_code == 0, r.output
    assert onnx.is_file()


SIGMOID_TEACHER = """
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):
        return torch.sigmoid(self.fc(x.flatten(1)))  # a published model with its probability head


def tagger(num_classes, in_channels, image_size):
    return Tagger(num_classes, in_channels, image_size)
"""


def test_a_sigmoid_teacher_given_as_is_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CREPE trap: 360 sigmoid bins taken as logits gave a KD loss of ~0.01 and no warning.
    module = f"sigmoidtagger_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(SIGMOID_TEACHER)
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "tagger.pt"
    torch.save({"fc.weight": torch.randn(6, 12), "fc.bias": torch.zeros(6)}, weights)
    data = _multilabel_npz(tmp_path)
    r = runner.invoke(
        app,
        [
            "distill",
            "--teacher",
            str(weights),
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "s",
            "-q",
            "--no-latency",
            *_data_sets(data, f"teacher.model={module}:tagger", "student.model=mlp"),
        ],
    )
    assert r.exit_code == 2, r.output
    flat = _flat(r.output)
    assert (
        "look like probabilities" in flat and "Remove the final sigmoid" in flat and "torch.logit(p)" in flat
    )
    assert not (tmp_path / "runs" / "s").exists()


def test_class_labels_given_to_a_multilabel_teacher_are_refused(tmp_path: Path) -> None:
    data = _multilabel_npz(tmp_path)
    out = tmp_path / "runs"
    r = runner.invoke(
        app,
        [
            "train",
            "--out",
            str(out),
            "--name",
            "t",
            "-q",
            "--no-latency",
            *_data_sets(data, "teacher.model=mlp", "teacher_train.epochs=1"),
        ],
    )
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(1)
    classes = tmp_path / "classes.npz"
    x = rng.normal(size=(100, 12)).astype(np.float32)
    np.savez(classes, x=x, y=np.arange(100) % 6, x_test=x[:20], y_test=np.arange(20) % 6)
    r = runner.invoke(
        app,
        [
            "distill",
            "--teacher",
            str(out / "t" / "teacher.safetensors"),
            "--out",
            str(out),
            "--name",
            "s",
            "-q",
            "--no-latency",
            *_data_sets(classes, "teacher.model=mlp", "student.model=mlp"),
        ],
    )
    assert r.exit_code != 0, r.output
    flat = _flat(r.output)
    assert "was trained for multilabel" in flat and "classification data" in flat, r.output


def test_multilabel_recipe_on_class_labels_names_the_conversion(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "classes.npz"
    x = rng.normal(size=(60, 4)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(60) % 3)
    r = runner.invoke(
        app,
        [
            "train",
            "--out",
            str(tmp_path / "runs"),
            "-q",
            "--no-latency",
            *_data_sets(path, "data.task=multilabel", "teacher.model=mlp"),
        ],
    )
    assert r.exit_code != 0
    assert "np.eye(L, dtype=np.float32).take(y, axis=0)" in _flat(r.output), r.output


def _regression_npz(tmp_path: Path, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 10)).astype(np.float32)
    # Targets in [0, 1]: a regression teacher's outputs may lie there, and must not be taken for probabilities.
    y = (1 / (1 + np.exp(-(x @ rng.normal(size=(10, 2)))))).astype(np.float32) * scale
    path = tmp_path / "values.npz"
    np.savez(path, x=x[:200], y=y[:200], x_test=x[200:], y_test=y[200:])
    return path


def test_regression_train_distill_eval_export(tmp_path: Path) -> None:
    data = _regression_npz(tmp_path)
    out = _train_and_distill(tmp_path, data)
    records = [json.loads(line) for line in (out / "s" / "metrics.jsonl").read_text().splitlines()]
    assert {"train_reg_kd", "train_reg_label", "val_r2", "val_mae"} <= set(records[-1])
    summary = json.loads((out / "s" / "summary.json").read_text())
    student = next(m for m in summary["metrics"] if m["name"] == "student_kd")
    assert student["task"] == "regression" and {"r2", "mae", "rmse"} <= set(student["extra"])
    r = runner.invoke(
        app,
        [
            "eval",
            str(out / "t" / "teacher.json"),
            str(out / "s" / "student_kd.json"),
            "--data-root",
            str(data),
            "--no-latency",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "r2" in r.output and "rmse" in r.output and "Δ r2" in r.output
    onnx = tmp_path / "student.onnx"
    r = runner.invoke(
        app, ["export", str(out / "s" / "student_kd.json"), "--out", str(onnx), "--data-root", str(data)]
    )
    assert r.exit_code == 0, r.output


def test_multilabel_refuses_a_topk_teacher_cache(tmp_path: Path) -> None:
    # Top-k with a tail fill approximates a softmax; multilabel sigmoids need every label's logit.
    data = _multilabel_npz(tmp_path)
    out = tmp_path / "runs"
    r = runner.invoke(
        app,
        [
            "train", "--out", str(out), "--name", "t", "-q", "--no-latency",
            *_data_sets(data, "teacher.model=mlp", "teacher_train.epochs=1"),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "distill", "--teacher", str(out / "t" / "teacher.safetensors"), "--out", str(out), "--name", "s",
            "-q", "--no-latency",
            *_data_sets(
                data, "teacher.model=mlp", "student.model=mlp", "student_train.teacher_cache.form=topk",
                "student_train.teacher_cache.k=2",
            ),
        ],
    )  # fmt: skip
    assert r.exit_code != 0
    assert "serves only the kd term, but terms ml_kd" in _flat(r.output), r.output


def test_a_single_label_sigmoid_is_caught_on_multilabel_data() -> None:
    from distil.teachers.outputs import MIN_VALUES, probability_kind

    p = torch.sigmoid(torch.randn(MIN_VALUES, 1))
    assert probability_kind(p) is None  # one output per sample: not judged for classification
    assert probability_kind(p, single_output=True) == "sigmoid"
    assert probability_kind(torch.randn(MIN_VALUES, 1), single_output=True) is None


def test_eval_refuses_a_multilabel_checkpoint_on_class_data(tmp_path: Path) -> None:
    data = _multilabel_npz(tmp_path, labels=10)  # as many outputs as digits has classes
    out = tmp_path / "runs"
    r = runner.invoke(
        app,
        [
            "train", "--out", str(out), "--name", "t", "-q", "--no-latency",
            *_data_sets(data, "teacher.model=mlp", "teacher_train.epochs=1"),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(2)
    classes = tmp_path / "classes.npz"
    x = rng.normal(size=(60, 12)).astype(np.float32)
    np.savez(classes, x=x, y=np.arange(60) % 10, x_test=x[:20], y_test=np.arange(20) % 10)
    r = runner.invoke(
        app, ["eval", str(out / "t" / "teacher.json"), "--data-root", str(classes), "--no-latency"]
    )
    assert r.exit_code != 0
    assert "was trained for multilabel" in _flat(r.output), r.output


def _embedding_npz(tmp_path: Path, dim: int = 8) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(12, dim))).astype(np.float32)  # target vectors a teacher can fit
    path = tmp_path / "emb.npz"
    np.savez(path, x=x[:200], y=y[:200], x_test=x[200:], y_test=y[200:])
    return path


def test_embedding_train_distill_eval_export(tmp_path: Path) -> None:
    data = _embedding_npz(tmp_path)
    out = _train_and_distill(tmp_path, data, "data.task=embedding")
    records = [json.loads(line) for line in (out / "s" / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r["stage"] == "student_kd"]
    assert "train_emb_kd" in kd[-1] and "train_emb_label" in kd[-1]
    assert kd[-1]["teacher_source"] == "cache" and kd[-1]["teacher_cache"]["form"] == "full"
    summary = json.loads((out / "s" / "summary.json").read_text())
    student = next(m for m in summary["metrics"] if m["name"] == "student_kd")
    assert student["task"] == "embedding" and 0 < student["accuracy"] <= 1
    assert {"recall@1", "teacher_recall@5", "cos_teacher"} <= set(student["extra"])
    assert student["agreement"] is not None and 0 < student["agreement"] <= 1

    r = runner.invoke(
        app,
        [
            "eval",
            str(out / "t" / "teacher.json"),
            str(out / "s" / "student_kd.json"),
            "--data-root",
            str(data),
            "--no-latency",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "recall@10" in r.output and "cos_teacher" in r.output

    # A narrower student (4 of the teacher's 8 dimensions): the term's projection bridges the widths, is
    # not exported, and the sample-wise cosine to the teacher is undefined (None) rather than a crash.
    narrow = _data_sets(
        data,
        "data.task=embedding",
        "teacher.model=mlp",
        "student.model=mlp",
        "student.kwargs.hidden=[16]",
        "student.embedding_dim=4",
        "student_train.epochs=2",
        "kd.terms={emb_kd: 1.0}",
    )
    teacher = str(out / "t" / "teacher.safetensors")
    args = ["distill", "--teacher", teacher, "--out", str(out), "--name", "n", "-q", "--no-latency", *narrow]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "n" / "summary.json").read_text())
    student = next(m for m in summary["metrics"] if m["name"] == "student_kd")
    assert student["extra"]["cos_teacher"] is None and 0 <= student["agreement"] <= 1
    spec = json.loads((out / "n" / "student_kd.json").read_text())["spec"]
    assert spec["num_classes"] == 4  # the projection stayed in the loss
    r = runner.invoke(
        app, ["eval", str(out / "n" / "student_kd.json"), "--data-root", str(data), "--no-latency"]
    )
    assert r.exit_code == 0, r.output
    # The label term cannot compare 4 dimensions with 8: refused with the fix.
    refused = [*args[:-1], "kd.terms={emb_kd: 0.5, emb_label: 0.5}"]
    r = runner.invoke(app, [a if a != "n" else "n2" for a in refused])
    assert r.exit_code != 0 and "kd.terms={emb_kd: 1.0}" in _flat(r.output)

    onnx = tmp_path / "student.onnx"
    r = runner.invoke(
        app, ["export", str(out / "s" / "student_kd.json"), "--out", str(onnx), "--data-root", str(data)]
    )
    assert r.exit_code == 0, r.output
    assert onnx.is_file()


def _dense_npz(tmp_path: Path, n: int = 96, side: int = 8) -> Path:
    """Images whose pixels are class 0/1/2 by the sign pattern of two channels; a border of 255 (no label)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2, side, side)).astype(np.float32)
    y = np.where(x[:, 0] > 0.5, 1, np.where(x[:, 1] > 0.5, 2, 0)).astype(np.int64)
    y[:, 0, :] = 255  # unlabelled row: ignored by the loss and the metrics
    path = tmp_path / "seg.npz"
    split = n * 3 // 4
    np.savez(path, x=x[:split], y=y[:split], x_test=x[split:], y_test=y[split:])
    return path


def _dense_sets(data: Path, *extra: str) -> list[str]:
    return _data_sets(data, "teacher.model=tiny-segnet", "student.model=tiny-segnet", *extra)


def test_dense_train_distill_eval_export(tmp_path: Path) -> None:
    data = _dense_npz(tmp_path)
    out = tmp_path / "runs"
    base = ["-q", "--no-latency", "--out", str(out)]
    fast = ["batch_size=8", "optimizer=adam", "lr=0.02"]  # 72 images: enough steps in a few epochs
    teach = _dense_sets(data, "teacher_train.epochs=4", *(f"teacher_train.{s}" for s in fast))
    r = runner.invoke(app, ["train", "--name", "t", *base, *teach])
    assert r.exit_code == 0, r.output
    teacher = str(out / "t" / "teacher.safetensors")
    sets = _dense_sets(
        data, "student.kwargs.width=4", "student_train.epochs=2", *(f"student_train.{s}" for s in fast)
    )
    r = runner.invoke(app, ["distill", "--teacher", teacher, "--name", "s", *base, *sets])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "s" / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r["stage"] == "student_kd"]
    assert "train_dense_kd" in kd[-1] and "train_dense_ce" in kd[-1] and "val_mIoU" in kd[-1]
    assert kd[-1]["teacher_source"] == "cache" and kd[-1]["teacher_cache"]["form"] == "full"
    summary = json.loads((out / "s" / "summary.json").read_text())
    rows = {m["name"]: m for m in summary["metrics"]}
    assert rows["teacher"]["task"] == "dense" and rows["teacher"]["accuracy"] > 0.5  # mIoU
    assert {"mIoU", "pixel_accuracy"} <= set(rows["student_kd"]["extra"])
    assert 0 < rows["student_kd"]["agreement"] <= 1

    r = runner.invoke(
        app,
        [
            "eval",
            str(out / "t" / "teacher.json"),
            str(out / "s" / "student_kd.json"),
            "--data-root",
            str(data),
            "--no-latency",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "mIoU" in r.output and "pixel_accuracy" in r.output

    onnx = tmp_path / "student.onnx"
    r = runner.invoke(
        app, ["export", str(out / "s" / "student_kd.json"), "--out", str(onnx), "--data-root", str(data)]
    )
    assert r.exit_code == 0, r.output
    assert onnx.is_file()


def test_dense_refuses_a_class_label_model_and_moving_augmentations(tmp_path: Path) -> None:
    data = _dense_npz(tmp_path, n=16)
    base = ["train", "-q", "--no-latency", "--out", str(tmp_path / "runs")]
    sets = _data_sets(data, "teacher.model=mlp", "teacher_train.epochs=1")
    r = runner.invoke(app, [*base, "--name", "a", *sets])
    assert r.exit_code != 0 and "a class-label model" in _flat(r.output) and "tiny-segnet" in r.output
    sets = _dense_sets(data, "teacher_train.epochs=1", "teacher_train.augment.ops=crop_flip")
    r = runner.invoke(app, [*base, "--name", "b", *sets])
    assert r.exit_code != 0 and "moves or mixes pixels" in _flat(r.output)
