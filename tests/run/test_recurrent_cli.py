"""Recurrent students end to end through the CLI: a BiLSTM distilled from a BERT text classifier (and
exported to ONNX), a GRU language model distilled token by token from a llama (chunked KD terms), and
the clear refusal of on-policy generation for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import ModelConfig
from distil.data import load_dataset
from distil.data.text import PYTHON_DOCS_ROOT
from distil.errors import ModelError
from distil.models.recurrent import LSTMClassifier
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint
from tests.run.test_textcls import BERT, _jsonl

pytest.importorskip("transformers")

BILSTM = {"embed_dim": 16, "hidden_size": 16, "bidirectional": True}
QUIET = ["--no-latency", "--quiet"]


def _text_recipe(tmp_path: Path, data: dict) -> Path:
    train = {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "batch_size": 16, "seed": 0}
    recipe = {
        "name": "bilstm-tiny",
        "data": {"val_fraction": 0.1, **data},
        "teacher": {"model": "hf-seq-classifier", "kwargs": {"config": {**BERT, "num_hidden_layers": 1}}},
        "student": {"model": "lstm-classifier", "kwargs": BILSTM},
        "teacher_train": train,
        "student_train": train,
        "kd": {"temperature": 2.0, "kd_weight": 0.7, "ce_weight": 0.3},
        "device": "cpu",
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def test_a_bert_teacher_distils_into_a_bilstm_that_reloads_and_exports_to_onnx(tmp_path: Path) -> None:
    root = _jsonl(tmp_path / "topics.jsonl", per_class=12)
    options = {"label_field": "topic", "block_size": 24}
    recipe = _text_recipe(tmp_path, {"name": "text-classification", "root": str(root), **options})
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(runs), "--name", "t", *QUIET])
    assert result.exit_code == 0, result.output
    teacher = str(runs / "t" / "teacher")
    result = CliRunner().invoke(
        app, ["distill", str(recipe), "--teacher", teacher, "--out", str(runs), "--name", "s", *QUIET]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((runs / "s" / "summary.json").read_text())
    metrics = {m["name"]: m for m in summary["metrics"]}
    assert 0.0 <= metrics["student_kd"]["accuracy"] <= 1.0 and metrics["student_kd"]["macs"] > 0
    student, meta = load_checkpoint(runs / "s" / "student_kd")
    assert isinstance(student, LSTMClassifier) and meta["spec"]["name"] == "lstm-classifier"
    data = load_dataset("text-classification", root, val_fraction=0.1, options=options)
    ids = data.test.head(len(data.test))
    with torch.no_grad():
        logits = student.eval()(ids)
    assert f"{float((logits.argmax(1) == data.test.labels).float().mean()):.4f}" == (
        f"{metrics['student_kd']['accuracy']:.4f}"
    )
    onnx = tmp_path / "student.onnx"
    result = CliRunner().invoke(
        app, ["export", str(runs / "s" / "student_kd"), "--out", str(onnx), "--data-root", str(root)]
    )
    assert result.exit_code == 0, result.output
    assert onnx.is_file() and "100.00%" in result.output  # ONNX Runtime agrees with PyTorch on every row


def test_the_build_checks_an_lstm_classifiers_vocabulary_and_pad_id(tmp_path: Path) -> None:
    data = load_dataset(
        "text-classification", _jsonl(tmp_path / "d.jsonl", per_class=4), options={"label_field": "topic"}
    )
    build_model(ModelConfig(model="lstm-classifier", kwargs=BILSTM), data)
    wrong_pad = {**BILSTM, "pad_id": 0}
    with pytest.raises(ModelError, match=r"pad_id is 0 .* pads with id 258.*kwargs.pad_id: 258"):
        build_model(ModelConfig(model="lstm-classifier", kwargs=wrong_pad), data)
    with pytest.raises(ModelError, match=r"vocabulary is 300 .* 259 ids"):
        build_model(
            ModelConfig(model="lstm-classifier", kwargs={**BILSTM, "vocab_size": 300, "pad_id": 0}), data
        )


@pytest.mark.skipif(not PYTHON_DOCS_ROOT.is_dir(), reason="python3.11-doc is not installed")
def test_distil_run_on_python_docs_topics_with_a_bilstm_student(tmp_path: Path) -> None:
    recipe = _text_recipe(tmp_path, {"name": "python-docs-topics", "block_size": 32, "limit": 120})
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path), "--name", "r", *QUIET])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    names = [m["name"] for m in summary["metrics"]]
    assert names == ["teacher", "student_scratch", "student_kd"]
    kd = summary["metrics"][2]
    assert kd["params"] < summary["metrics"][0]["params"] and 0.0 <= kd["agreement"] <= 1.0


TINY_LLAMA = (
    "{config: {model_type: llama, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, "
    "num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 32}}"
)
ARITHMETIC = [
    "run", "lm-arithmetic", "--no-latency", "--quiet",
    "--set", "data.train_size=40", "--set", "data.test_size=6",
    "--set", f"teacher.kwargs={TINY_LLAMA}", "--set", "student.model=gru-lm",
    "--set", "student.kwargs={embed_dim: 16, hidden_size: 24, num_layers: 2}",
    "--set", "teacher_train.epochs=1", "--set", "student_train.epochs=1",
    "--set", "teacher_train.batch_size=16", "--set", "student_train.batch_size=16",
]  # fmt: skip


def test_a_gru_lm_distils_from_a_llama_through_the_chunked_token_losses(tmp_path: Path) -> None:
    chunked = [
        "--set",
        "kd.terms={kd: 0.7, ce: 0.3}",
        "--set",
        "kd.options={kd: {chunk_size: 5}, ce: {chunk_size: 5}}",
    ]
    result = CliRunner().invoke(app, [*ARITHMETIC, "--out", str(tmp_path), "--name", "a", *chunked])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    metrics = {m["name"]: m for m in summary["metrics"]}
    for name in ("student_scratch", "student_kd"):
        assert 1.0 < metrics[name]["extra"]["perplexity"] < 259.0
    assert 0.0 <= metrics["student_kd"]["agreement"] <= 1.0
    # The one decoder answers the checked problems with the GRU too (its state is its cache).
    assert set(summary["generation"]["checked"]) == {"teacher", "student_scratch", "student_kd"}
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r.get("stage") == "student_kd"]
    assert kd and kd[0]["train_kd"] > 0.0
    student, meta = load_checkpoint(tmp_path / "a" / "student_kd")
    assert meta["spec"]["name"] == "gru-lm"
    with torch.no_grad():
        assert student(torch.zeros(2, 7, dtype=torch.long)).shape == (2, 7, 259)


def test_on_policy_distillation_refuses_a_recurrent_student_before_training(tmp_path: Path) -> None:
    on_policy = ["--set", "student_train.generation.lmbda=0.5"]
    result = CliRunner().invoke(app, [*ARITHMETIC, "--out", str(tmp_path), "--name", "p", *on_policy])
    assert result.exit_code != 0
    assert "RecurrentLM cannot generate" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p" / "teacher.safetensors").exists()
