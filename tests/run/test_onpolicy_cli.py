"""`distil run lm-arithmetic --set student_train.generation.lmbda=...` end to end on tiny llamas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app

pytest.importorskip("transformers")

TINY = (
    "{config: {model_type: llama, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, "
    "num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 32}}"
)
QUICK = [
    "--set", "data.train_size=40", "--set", "data.test_size=6", "--set", "data.digits=2",
    "--set", f"teacher.kwargs={TINY}", "--set", f"student.kwargs={TINY}",
    "--set", "teacher_train.epochs=1", "--set", "student_train.epochs=1",
    "--set", "teacher_train.batch_size=16", "--set", "student_train.batch_size=16",
]  # fmt: skip


def test_an_on_policy_run_records_its_generation_and_runs_the_teacher_live(tmp_path: Path) -> None:
    args = ["run", "lm-arithmetic", "--out", str(tmp_path), "--name", "a", "--no-latency", "--quiet", *QUICK]
    auto = ["--set", "student_train.teacher_cache.mode=auto"]  # the recipe sets off: auto must pick live
    result = CliRunner().invoke(app, [*args, *auto, "--set", "student_train.generation.lmbda=1"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r.get("stage") == "student_kd"]
    assert kd and kd[0]["on_policy_batches"] == 2  # 36 training problems, batches of 16: every one generated
    assert kd[0]["generated_tokens"] > 0 and kd[0]["teacher_source"] == "live"
    assert "on-policy" in kd[0]["teacher_source_reason"] and kd[0]["train_ce"] == 0.0
    # The scratch student trains on the data: no teacher, no generation.
    scratch = [r for r in records if r.get("stage") == "student_scratch"]
    assert scratch and "on_policy_batches" not in scratch[0]


def test_on_policy_with_a_forced_teacher_cache_stops_when_the_recipe_is_read(tmp_path: Path) -> None:
    args = ["run", "lm-arithmetic", "--out", str(tmp_path), "--name", "b", "--no-latency", "--quiet", *QUICK]
    result = CliRunner().invoke(
        app,
        [
            *args,
            "--set",
            "student_train.generation.lmbda=0.5",
            "--set",
            "student_train.teacher_cache.mode=on",
        ],
    )
    assert result.exit_code != 0
    assert "teacher_cache=on cannot be used with on-policy" in result.output
    assert not (tmp_path / ".b.partial").exists() and not (tmp_path / "b").exists()  # nothing trained


def test_on_policy_on_plain_text_stops_before_the_teacher_trains(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("plain text has no prompts to generate from. " * 30)
    args = ["run", "lm-demo", "--out", str(tmp_path / "runs"), "--name", "c", "--no-latency", "--quiet"]
    args += ["--set", f"teacher.kwargs={TINY}", "--set", f"student.kwargs={TINY}"]
    args += [
        "--set",
        "data.name=text",
        "--set",
        f"data.root={tmp_path / 'corpus'}",
        "--set",
        "data.block_size=16",
    ]
    result = CliRunner().invoke(app, [*args, "--set", "student_train.generation.lmbda=0.5"])
    assert result.exit_code != 0
    assert "one prompt/completion sample per row" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()  # no run directory: nothing was trained
