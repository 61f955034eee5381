"""A BERT-style text classifier distilled end to end: `distil train` a teacher on labelled JSONL (or the
Python docs' topics), `distil distill` a shallower student derived from its config, and the student's
NAME-hf/ folder read back by transformers with distil's logits."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import ModelConfig
from distil.data import load_dataset
from distil.data.text import PYTHON_DOCS_ROOT
from distil.errors import ModelError
from distil.models import create_model
from distil.models.hf import SeqClassifier
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint

pytest.importorskip("transformers")

BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0,  # a tiny BERT trained from scratch on little data learns faster without
    "attention_probs_dropout_prob": 0.0,
}
WORDS = {
    "sport": ["goal", "match", "team", "score", "league", "coach"],
    "food": ["bread", "soup", "salt", "oven", "spice", "cheese"],
    "tech": ["code", "chip", "cloud", "data", "robot", "server"],
}


def _jsonl(path: Path, per_class: int = 40) -> Path:
    rng = random.Random(0)
    filler = ["the", "a", "of", "and", "today", "with"]
    lines = []
    for i in range(per_class):
        for label, words in WORDS.items():
            text = " ".join(rng.choice(words + filler) for _ in range(rng.randint(4, 14)))
            lines.append(json.dumps({"text": f"{text} #{i}", "topic": label}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_padding_is_masked_so_a_padded_row_scores_like_the_unpadded_one() -> None:
    llama = {k: v for k, v in BERT.items() if "dropout" not in k}
    for config in (BERT, {**llama, "model_type": "llama", "num_key_value_heads": 2}):
        torch.manual_seed(0)
        clf = create_model("hf-seq-classifier", num_classes=3, config=config).eval()
        assert isinstance(clf, SeqClassifier) and clf.config.pad_token_id == 258
        ids = torch.tensor([[256, 10, 20, 30]])
        padded = torch.cat([ids, torch.full((1, 5), 258)], dim=1)
        with torch.no_grad():
            torch.testing.assert_close(clf(padded), clf(ids), rtol=1e-5, atol=1e-5)


def test_the_build_checks_vocabulary_and_pad_id_and_names_the_labels(tmp_path: Path) -> None:
    data = load_dataset("text-classification", _jsonl(tmp_path / "d.jsonl"), options={"label_field": "topic"})
    model, _ = build_model(ModelConfig(model="hf-seq-classifier", kwargs={"config": BERT}), data)
    assert model.config.id2label == {0: "food", 1: "sport", 2: "tech"}
    wrong_pad = {"config": {**BERT, "pad_token_id": 0}}
    with pytest.raises(ModelError, match=r"pad_token_id is 0 .* pads with id 258"):
        build_model(ModelConfig(model="hf-seq-classifier", kwargs=wrong_pad), data)
    with pytest.raises(ModelError, match=r"vocabulary is 300 .* 259"):
        build_model(
            ModelConfig(model="hf-seq-classifier", kwargs={"config": {**BERT, "vocab_size": 300}}), data
        )


def _recipe(tmp_path: Path, data: dict, epochs: int) -> Path:
    train = {"optimizer": "adamw", "lr": 0.003, "epochs": epochs, "batch_size": 16, "seed": 0}
    recipe = {
        "name": "textcls-tiny",
        "data": {"val_fraction": 0.1, **data},
        "teacher": {"model": "hf-seq-classifier", "kwargs": {"config": BERT}},
        "student": {"model": "hf-seq-classifier", "kwargs": {"from_teacher": {"num_hidden_layers": 1}}},
        "teacher_train": train,
        "student_train": train,
        "kd": {"temperature": 2.0, "kd_weight": 0.7, "ce_weight": 0.3},
        "device": "cpu",
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def _train_then_distill(tmp_path: Path, recipe: Path) -> Path:
    runs, quiet = tmp_path / "runs", ["--no-latency", "--quiet"]
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(runs), "--name", "t", *quiet])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app,
        [
            "distill",
            str(recipe),
            "--teacher",
            str(runs / "t" / "teacher"),
            "--out",
            str(runs),
            "--name",
            "s",
            *quiet,
        ],
    )
    assert result.exit_code == 0, result.output
    return runs


def _check_student(runs: Path, data_options: dict, name: str, root: Path | None) -> dict:
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(runs / "t" / "teacher-hf")
    hf = AutoModelForSequenceClassification.from_pretrained(runs / "s" / "student_kd-hf").eval()
    assert hf.config.num_hidden_layers == teacher.config.num_hidden_layers - 1 == 1
    assert hf.config.hidden_size == teacher.config.hidden_size
    student, meta = load_checkpoint(runs / "s" / "student_kd")
    data = load_dataset(name, root, val_fraction=0.1, options=data_options)
    assert (
        hf.config.id2label
        == dict(enumerate(data.class_names))
        == dict(enumerate(meta["data"]["class_names"]))
    )
    ids = data.test.head(len(data.test))
    with torch.no_grad():
        ours = student.eval()(ids)
        theirs = hf(input_ids=ids, attention_mask=(ids != hf.config.pad_token_id).long()).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    summary = json.loads((runs / "s" / "summary.json").read_text())
    assert all(m.get("task", "classification") == "classification" for m in summary["metrics"])
    return {m["name"]: m for m in summary["metrics"]}


def test_a_bert_teacher_distils_into_a_shallower_student_that_transformers_loads(tmp_path: Path) -> None:
    root = _jsonl(tmp_path / "topics.jsonl")
    options = {"label_field": "topic", "block_size": 48}
    recipe = _recipe(tmp_path, {"name": "text-classification", "root": str(root), **options}, epochs=2)
    runs = _train_then_distill(tmp_path, recipe)
    metrics = _check_student(runs, options, "text-classification", root)
    assert metrics["student_kd"]["macs"] > 0 and 0.0 <= metrics["student_kd"]["accuracy"] <= 1.0
    assert metrics["student_kd"]["params"] < metrics["teacher"]["params"]
    # `distil eval` reads the same samples: the sidecar recorded the fields and the block size.
    result = CliRunner().invoke(
        app, ["eval", str(runs / "s" / "student_kd"), "--data-root", str(root), "--no-latency", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert f"{metrics['student_kd']['accuracy']:.2%}" in result.output


def test_a_bert_wordpiece_tokenizer_without_eos_trains_and_distils_a_text_classifier(tmp_path: Path) -> None:
    from tests.data.test_hf_tokenizer import bert_vocab, save_bert_tokenizer

    filler = ["the", "a", "of", "and", "today", "with"]
    vocab = bert_vocab([w for words in WORDS.values() for w in words] + filler)
    tokenizer = save_bert_tokenizer(tmp_path / "bert", vocab)  # [CLS]/[SEP]/[PAD]=0, no eos_token
    root = _jsonl(tmp_path / "topics.jsonl", per_class=12)
    options = {"label_field": "topic", "block_size": 24, "tokenizer": f"hf:{tokenizer}"}
    model = {**BERT, "vocab_size": len(vocab), "pad_token_id": vocab.index("[PAD]")}
    recipe = json.loads(
        _recipe(tmp_path, {"name": "text-classification", "root": str(root), **options}, 1).read_text()
    )
    recipe["teacher"]["kwargs"]["config"] = model
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    runs = _train_then_distill(tmp_path, tmp_path / "recipe.json")
    metrics = _check_student(runs, options, "text-classification", root)
    assert 0.0 <= metrics["student_kd"]["accuracy"] <= 1.0
    data = load_dataset("text-classification", root, val_fraction=0.1, options=options)
    first = data.test.head(1)[0]
    assert first[0] == vocab.index("[CLS]") and vocab.index("[SEP]") in first.tolist()  # what the models read


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON_DOCS_ROOT.is_dir(), reason="python3.11-doc is not installed")
def test_python_docs_topics_teacher_learns_and_its_student_reloads_with_transformers(tmp_path: Path) -> None:
    options = {"block_size": 64}
    recipe = _recipe(tmp_path, {"name": "python-docs-topics", **options}, epochs=3)
    runs = _train_then_distill(tmp_path, recipe)
    metrics = _check_student(runs, options, "python-docs-topics", None)
    records = [json.loads(line) for line in (runs / "t" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the teacher learns (3 epochs: not to a good model)
    data = load_dataset("python-docs-topics", options=options)
    majority = float(torch.bincount(data.test.labels).max()) / len(data.test)
    assert 0.5 * majority < metrics["teacher"]["accuracy"] <= 1.0
