"""End-to-end runs of the `distil` command on tiny data, checking exit codes, files and numbers."""

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app

runner = CliRunner()
FAST = [
    "--quiet",
    "--no-latency",
    "--set",
    "data.limit=300",
    "--set",
    "teacher_train.epochs=2",
    "--set",
    "student_train.epochs=2",
]


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir()) if out.exists() else []


def test_demo_runs_the_whole_pipeline_and_writes_the_run_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    (run,) = _run_dirs(tmp_path)
    assert run.name.startswith("digits-demo-")
    for name in (
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "report.md",
        "teacher.safetensors",
        "teacher.json",
        "student_scratch.safetensors",
        "student_kd.json",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    names = [m["name"] for m in summary["metrics"]]
    assert names == ["teacher", "student_scratch", "student_kd"]
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in summary["metrics"])
    assert summary["ratios"]["student_kd"]["compression"] > 20
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records].count("student_kd") == 2
    assert "student_kd" in result.output and "compression" in result.output
    # Every output is readable as metrics.jsonl is (the umask's mode), not owner-only like mkstemp's files.
    mode = (run / "metrics.jsonl").stat().st_mode & 0o777
    for name in ("report.html", "recipe.yaml", "student_kd.safetensors", "student_kd.json", "summary.json"):
        assert (run / name).stat().st_mode & 0o777 == mode, name
    assert all(p.stat().st_mode & 0o777 == mode for p in (run / "plots").glob("*.png"))


def test_train_then_distill_then_eval(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    r = runner.invoke(app, ["train", "digits", "--out", str(out), "--name", "t", *FAST])
    assert r.exit_code == 0, r.output
    teacher = out / "t" / "teacher.safetensors"
    assert teacher.is_file()
    r = runner.invoke(
        app, ["distill", "digits", "--teacher", str(teacher), "--out", str(out), "--name", "s", *FAST]
    )
    assert r.exit_code == 0, r.output
    assert (out / "s" / "student_kd.json").is_file()
    r = runner.invoke(app, ["eval", str(teacher), str(out / "s" / "student_kd.json"), "--no-latency"])
    assert r.exit_code == 0, r.output
    assert "student_kd" in r.output and "teacher" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "teacher.model=largnet"], "Did you mean 'largenet'"),
        (["--set", "kd.temprature=2"], "Did you mean 'temperature'"),
        (["--set", "data.name=fashion-mnist", "--set", "data.root=/nonexistent/dir"], "does not exist"),
        (["--set", "teacher.checkpoint=/nonexistent/teacher.pt"], "does not exist"),
    ],
)
def test_bad_input_gives_a_short_message_and_no_run_directory(tmp_path: Path, args, message) -> None:
    out = tmp_path / "runs"
    result = runner.invoke(app, ["demo", "--out", str(out), *FAST, *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert _run_dirs(out) == []


def test_corrupt_idx_file_is_reported_with_its_name(tmp_path: Path) -> None:
    data = tmp_path / "fm"
    data.mkdir()
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (data / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 7)[:-5])
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        ["demo", "--out", str(out), *FAST, "--set", "data.name=fashion-mnist", "--set", f"data.root={data}"],
    )
    assert result.exit_code == 2
    assert "train-images-idx3-ubyte.gz" in result.output
    assert _run_dirs(out) == []


def test_distill_without_teacher_says_how_to_get_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["distill", "digits", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 2
    assert "--teacher" in result.output


def test_class_count_mismatch_between_teacher_checkpoint_and_data(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    r = runner.invoke(
        app,
        [
            "train",
            "digits",
            "--out",
            str(out),
            "--name",
            "t",
            *FAST,
            "--set",
            "data.name=tests.data.fake_dataset:tiny_arrays",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["distill", "digits", "--teacher", str(out / "t" / "teacher.json"), "--out", str(out), *FAST]
    )
    assert r.exit_code == 2
    assert "predicts 4 classes but dataset 'digits' has 10" in r.output


def test_recipe_commands() -> None:
    r = runner.invoke(app, ["recipe", "list"])
    assert r.exit_code == 0 and "fashion-mnist" in r.output
    r = runner.invoke(app, ["recipe", "show", "digits"])
    assert r.exit_code == 0 and "kd_weight" in r.output
    r = runner.invoke(app, ["recipe", "show", "digts"])
    assert r.exit_code == 2 and "Did you mean 'digits'" in r.output


def test_a_student_larger_than_its_teacher_is_warned_about_before_training(tmp_path: Path) -> None:
    from distil.models import build_from_spec, model_spec
    from distil.train.checkpoint import save_checkpoint

    spec = model_spec("smallnet", num_classes=10, in_channels=1, image_size=8)
    save_checkpoint(tmp_path / "t", build_from_spec(spec), spec, {"data": {"name": "digits"}})
    args = ["distill", "digits", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "o"), *FAST]
    r = runner.invoke(app, [*args, "--set", "student.model=largenet", "--set", "student_train.epochs=1"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert text.count("is not smaller than its teacher") == 1
    assert "parameters" in text and "--set student.model=NAME" in text
    assert text.index("not smaller") < text.index("run directory")
