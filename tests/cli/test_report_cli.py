"""`distil report`, `distil compare`, `distil recipe new`, --log-format, and --help of every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import load_recipe
from distil.recipes import resolve_recipe
from tests.report.fake_run import make_run

runner = CliRunner()
TINY = [
    "--no-latency",
    "--set",
    "data.limit=100",
    "--set",
    "teacher_train.epochs=1",
    "--set",
    "student_train.epochs=2",
]


def test_report_writes_markdown_html_and_figures(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    assert "student_kd" in r.output and "report.html" in r.output
    assert (run / "report.md").is_file() and (run / "report.html").is_file()
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "accuracy_vs_latency.png",
        "accuracy_vs_size.png",
        "per_class_accuracy.png",
        "training_curves.png",
    ]


def test_report_on_a_wrong_directory_is_a_short_error(tmp_path: Path) -> None:
    make_run(tmp_path, "my-run")
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2
    assert "not a finished run directory" in r.output and "my-run" in r.output
    assert "Traceback" not in r.output


def test_compare_two_runs(tmp_path: Path) -> None:
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", accuracy_shift=-0.05)
    r = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert "2 runs side by side" in r.output
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert html.count("<tr>") == 7  # header + 3 models x 2 runs


def test_recipe_new_writes_a_commented_recipe_that_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    r = runner.invoke(
        app, ["recipe", "new", str(path), "--from", "fashion-mnist", "--set", "kd.temperature=2"]
    )
    assert r.exit_code == 0, r.output
    text = path.read_text()
    assert "# max gradient norm" in text  # field descriptions become comments
    expected = load_recipe(resolve_recipe("fashion-mnist"), ["kd.temperature=2"])
    assert load_recipe(path) == expected
    r = runner.invoke(app, ["recipe", "new", str(path)])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["recipe", "new", str(tmp_path / "x.yaml"), "--from", "fashion-mnst"])
    assert r.exit_code == 2 and "Did you mean 'fashion-mnist'" in r.output


def _all_commands() -> list[list[str]]:
    commands = [[c.name] for c in app.registered_commands if c.name]
    for group in app.registered_groups:
        assert group.typer_instance is not None and group.name
        commands += [[group.name, c.name] for c in group.typer_instance.registered_commands if c.name]
    return commands


@pytest.mark.parametrize("command", _all_commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    r = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "Example" in r.output, r.output


def test_a_run_logs_plain_lines_and_writes_its_report(tmp_path: Path) -> None:
    # CliRunner's stdout is not a terminal: auto -> one plain line per epoch, no live display.
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), *TINY])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if " epoch " in line]
    assert [line.split()[0] for line in lines] == [
        "teacher",
        "student_scratch",
        "student_scratch",
        "student_kd",
        "student_kd",
    ]
    assert "kd " in lines[-1] and "val acc" in lines[-1] and "eta" in lines[-1]
    (run,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # curves, size Pareto, per-class (no latency)
    sidecar = json.loads((run / "student_kd.json").read_text())
    assert len(sidecar["per_class_accuracy"]) == 10


def test_jsonl_stdout_is_only_json(tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), "--log-format", "jsonl", *TINY])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["epoch"] * 5 + ["result"]
    assert events[-1]["metrics"][2]["name"] == "student_kd"
    assert Path(events[-1]["run_dir"]).is_dir()


@pytest.mark.parametrize("command", ["report", "compare", "recipe new"])
def test_an_unwritable_output_fails_at_once_with_a_message(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a directory cannot be made below a file, even by root
    if command == "recipe new":
        args = ["recipe", "new", str(blocker / "d" / "my.yaml")]
    else:
        args = [command, str(make_run(tmp_path)), "--out", str(blocker / "out")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "is not writable" in text and "a-file" in text and "fix its permissions" in text
    assert r.exception is None or isinstance(r.exception, SystemExit)


LONG_RUNNING = ["train", "distill", "run", "demo", "transfer", "prune", "quantize", "compress", "eval"]


@pytest.mark.parametrize("command", LONG_RUNNING)
def test_every_long_running_command_takes_the_same_progress_options(command: str) -> None:
    r = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "--log-format" in r.output and "--quiet" in r.output
