"""`distil run lm-arithmetic --set student_train.generation.seq_kd=true` end to end on tiny llamas."""

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
    "--set", "data.train_size=40", "--set", "data.test_size=6",
    "--set", f"teacher.kwargs={TINY}", "--set", f"student.kwargs={TINY}",
    "--set", "teacher_train.epochs=1", "--set", "student_train.epochs=1",
    "--set", "teacher_train.batch_size=16", "--set", "student_train.batch_size=16",
    "--set", "student_train.generation.seq_kd=true", "--set", "student_train.generation.temperature=0",
]  # fmt: skip


def _kd_records(run: Path) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("stage") == "student_kd"]


def test_seq_kd_on_the_arithmetic_recipe_trains_on_the_teachers_cached_completions_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (A second run reusing the files is tests/teachers/test_generations.py's; one CLI run keeps this short.)
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        app,
        ["run", "lm-arithmetic", "--out", str(tmp_path), "--name", "a", "--no-latency", "--quiet", *QUICK],
    )
    assert result.exit_code == 0, result.output
    records = _kd_records(tmp_path / "a")
    assert records and all(str(r["completions"]).startswith("teacher (seq-KD, built, key ") for r in records)
    assert records[-1]["completions_build"]["generated_tokens"] > 0  # type: ignore[index]
    (cached,) = (tmp_path / "cache" / "generations").iterdir()
    meta = json.loads((cached / "meta.json").read_text())
    assert meta["rows"] == 36 and meta["settings"]["temperature"] == 0  # 40 problems less 10% val
