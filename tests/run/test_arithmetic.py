"""`distil run lm-arithmetic` end to end on tiny llamas: exact match beside perplexity in every output."""

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


def test_a_run_on_arithmetic_reports_exact_match_next_to_perplexity(tmp_path: Path) -> None:
    quick = [
        "--set", "data.train_size=40", "--set", "data.test_size=6", "--set", "data.digits=2",
        "--set", f"teacher.kwargs={TINY}", "--set", f"student.kwargs={TINY}",
        "--set", "teacher_train.epochs=1", "--set", "student_train.epochs=1",
        "--set", "teacher_train.batch_size=16", "--set", "student_train.batch_size=16",
    ]  # fmt: skip
    result = CliRunner().invoke(
        app,
        ["run", "lm-arithmetic", "--out", str(tmp_path), "--name", "a", "--no-latency", "--quiet", *quick],
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "a"
    summary = json.loads((run / "summary.json").read_text())
    for m in summary["metrics"]:
        assert 0.0 <= m["extra"]["exact_match"] <= 1.0 and m["extra"]["answer_bits_per_byte"] > 0
        # The test split's bits per byte (every labelled token) is its own figure beside the answers'.
        assert m["extra"]["bits_per_byte"] > 0 and "perplexity" in m["extra"]
    assert summary["metrics"][0]["extra"]["answer_agreement"] is None  # the teacher is the reference
    assert summary["metrics"][1]["extra"]["answer_agreement"] is not None
    checked = summary["generation"]["checked"]
    assert set(checked) == {"teacher", "student_scratch", "student_kd"}
    problems = summary["generation"]["problems"]
    assert problems and set(problems[0]["answers"]) == set(checked)
    report = (run / "report.md").read_text()
    assert (
        "| perplexity | bits/byte | byte ppl | exact match | answer agreement | answer bits/byte |" in report
    )
    assert f"| {problems[0]['prompt']} | {problems[0]['gold']} |" in report and (
        "✓" in report or "✗" in report
    )
    assert "exact match" in (run / "report.html").read_text()


def test_eval_of_an_arithmetic_checkpoint_reads_the_problems_it_was_measured_on(tmp_path: Path) -> None:
    # A checkpoint records the options that decided its problems; `distil eval` must regenerate those,
    # not the defaults (another digit count would be another test set, silently).
    from distil.run.evaluate import trained_data_options

    quick = [
        "--set", "data.train_size=40", "--set", "data.test_size=6", "--set", "data.digits=2",
        "--set", "data.problem_seed=7", "--set", f"teacher.kwargs={TINY}", "--set", "teacher_train.epochs=1",
        "--set", "teacher_train.batch_size=16",
    ]  # fmt: skip
    result = CliRunner().invoke(
        app,
        ["train", "lm-arithmetic", "--out", str(tmp_path), "--name", "t", "--no-latency", "--quiet", *quick],
    )
    assert result.exit_code == 0, result.output
    options = trained_data_options(str(tmp_path / "t" / "teacher"), "arithmetic")
    assert options["digits"] == 2 and options["problem_seed"] == 7 and options["test_size"] == 6


def test_sample_problems_show_reversed_answers_with_the_number_they_read_as() -> None:
    from distil.data.arithmetic import ArithmeticData, check_answer
    from distil.data.verifiable import Problem
    from distil.run.lm_report import sample_problems

    task = ArithmeticData(digits=3, operations="+", train_size=10, test_size=2, answer_order="reversed")
    problems = [Problem("12+345=", "753\n")]
    shown = sample_problems(problems, {"m": ["753"], "n": ["9"]}, task.check, readable=task.readable)[0]
    assert shown["gold"] == "753 (reads 357)" and shown["answers"]["m"] == "753 (reads 357)"
    assert shown["answers"]["n"] == "9"  # a palindrome reads as it is written: shown once
    assert shown["correct"] == {"m": True, "n": False}
    # Natural answers (no `readable`) are shown as they are.
    plain = sample_problems([Problem("12+345=", "357\n")], {"m": ["357"]}, check_answer)[0]
    assert plain["gold"] == "357" and plain["answers"]["m"] == "357"


def test_the_bundled_recipe_writes_problems_a_small_model_learns_and_refuses_an_unknown_order() -> None:
    from distil.config import load_recipe
    from distil.errors import ConfigError
    from distil.recipes import resolve_recipe

    recipe = load_recipe(resolve_recipe("lm-arithmetic"))
    assert recipe.data.answer_order == "reversed" and recipe.data.pad_operands is True
    with pytest.raises(ConfigError, match="answer_order"):
        load_recipe(resolve_recipe("lm-arithmetic"), ["data.answer_order=backwards"])
