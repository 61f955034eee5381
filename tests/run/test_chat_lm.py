"""Chat data through the whole CLI: `distil run` on conversations with the byte tokenizer, a tiny llama
teacher and student, KD + reverse KL + CE on the assistant's tokens, the long-conversation notice."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distil.cli.app import app

pytest.importorskip("transformers")

LLAMA = {"model_type": "llama", "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2,
         "max_position_embeddings": 64}  # fmt: skip


def chat_file(path: Path, count: int = 40) -> Path:
    rng = random.Random(0)
    words = ["the", "cat", "dog", "sat", "ran", "on", "mat", "log"]
    lines = []
    for i in range(count):
        question = " ".join(rng.choice(words) for _ in range(3))
        answer = question.upper() * (6 if i == 0 else 1)  # one conversation longer than a row
        messages = [{"role": "system", "content": "shout"}, {"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]  # fmt: skip
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_distil_run_trains_on_chat_data_end_to_end(tmp_path: Path) -> None:
    train = {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "batch_size": 8, "teacher_cache": "off"}
    recipe = {
        "name": "chat-tiny",
        "data": {
            "name": "chat",
            "root": str(chat_file(tmp_path / "chat.jsonl")),
            "block_size": 64,
            "val_fraction": 0.2,
        },
        "teacher": {
            "model": "hf-causal-lm",
            "kwargs": {"config": {**LLAMA, "hidden_size": 32, "num_hidden_layers": 2}},
        },
        "student": {
            "model": "hf-causal-lm",
            "kwargs": {"config": {**LLAMA, "hidden_size": 16, "num_hidden_layers": 1}},
        },
        "teacher_train": train,
        "student_train": train,
        "kd": {"temperature": 1.0, "terms": {"kd": 0.5, "rkl": 0.2, "ce": 0.3}},
        "device": "cpu",
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    args = ["run", str(path), "--out", str(tmp_path / "runs"), "--name", "chat", "--no-latency"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "data.on_long: truncate" in refused.output
    result = CliRunner().invoke(app, [*args, "--set", "data.on_long=truncate"])
    assert result.exit_code == 0, result.output
    assert "cut to the row" in result.output  # the one-line notice of the truncated conversation
    run = tmp_path / "runs" / "chat"
    summary = json.loads((run / "summary.json").read_text())
    assert [m["name"] for m in summary["metrics"]] == ["teacher", "student_scratch", "student_kd"]
    assert all(m["task"] == "language-modeling" for m in summary["metrics"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r["stage"] == "student_kd"]
    assert kd and all(r["train_kd"] >= 0 and r["train_rkl"] >= 0 and r["train_ce"] > 0 for r in kd)
    sidecar = json.loads((run / "student_kd.json").read_text())
    assert sidecar["data"]["extra"]["chat_template"] == "builtin"
    assert sidecar["data"]["options"]["on_long"] == "truncate"
