"""End-to-end: `distil transfer` and `distil distill --init teacher --inherit-recipe` on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from distil.cli.app import app

runner = CliRunner()
TINY = ["--set", "data.limit=200"]
HALF = ["--set", "student.model=largenet", "--set", "student.kwargs={width: 0.5}"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    args = ["train", "digits", "--out", str(out), "--name", "t", "--quiet", "--no-latency", *TINY]
    r = runner.invoke(app, [*args, "--set", "teacher_train.epochs=1", "--set", "teacher_train.batch_size=32"])
    assert r.exit_code == 0, r.output
    return out / "t" / "teacher"


def test_transfer_command_writes_student_and_report(teacher: Path, tmp_path: Path) -> None:
    args = ["transfer", "digits", "--teacher", str(teacher), "--out", str(tmp_path), "--name", "x"]
    r = runner.invoke(app, [*args, *TINY, *HALF, "--selection", "l1"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "x"
    report = json.loads((run / "transfer_report.json").read_text())
    assert report["settings"]["selection"] == "l1"
    assert report["counts"] == {"selected": 7, "exact": 1}
    assert (run / "student.safetensors").is_file() and (run / "student.json").is_file()
    assert "## Knowledge transfer" in (run / "report.md").read_text()
    # Every student conv1 filter is one of the teacher's, bit for bit (selection, not re-training).
    t, s = load_file(f"{teacher}.safetensors"), load_file(run / "student.safetensors")
    assert s["conv1.weight"].shape[0] == 32
    assert all(any(torch.equal(row, t_row) for t_row in t["conv1.weight"]) for row in s["conv1.weight"])
    assert "selected" in r.output


def test_distill_with_init_teacher_and_inherited_recipe(teacher: Path, tmp_path: Path) -> None:
    args = ["distill", "digits", "--teacher", str(teacher), "--out", str(tmp_path), "--name", "kd"]
    extra = ["--init", "teacher", "--inherit-recipe", "--quiet", "--no-latency"]
    overrides = ["--set", "student_train.epochs=1", "--set", "student_train.batch_size=16"]
    r = runner.invoke(app, [*args, *extra, *TINY, *HALF, *overrides])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "kd" / "transfer_report.json").read_text())
    recipe = {rec["field"]: rec for rec in report["recipe"]}
    assert recipe["epochs"]["source"] == "user" and recipe["epochs"]["value"] == 1
    assert recipe["optimizer"]["source"] == "teacher"
    assert recipe["lr"]["source"] == "scaled"
    assert recipe["lr"]["value"] == pytest.approx(recipe["lr"]["teacher_value"] * 16 / 32)
    assert report["counts"]["selected"] == 7
    student_meta = json.loads((tmp_path / "kd" / "student_kd.json").read_text())
    assert student_meta["recipe"]["batch_size"] == 16


def test_wider_student_fails_clearly_and_writes_nothing(teacher: Path, tmp_path: Path) -> None:
    wide = ["--set", "student.model=largenet", "--set", "student.kwargs={width: 2.0}"]
    args = ["transfer", "digits", "--teacher", str(teacher), "--out", str(tmp_path / "o"), *TINY, *wide]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert "wider than the teacher" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_distill_unknown_reuse_module_fails_before_writing(teacher: Path, tmp_path: Path) -> None:
    args = ["distill", "digits", "--teacher", str(teacher), "--out", str(tmp_path / "o"), "--quiet", *TINY]
    r = runner.invoke(app, [*args, "--set", "transfer.reuse=[conv9]"])
    assert r.exit_code == 2
    assert "no module 'conv9' (closest: conv2, conv1)" in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_distill_with_reused_modules_and_unfreeze_schedule(teacher: Path, tmp_path: Path) -> None:
    args = ["distill", "digits", "--teacher", str(teacher), "--out", str(tmp_path), "--name", "s"]
    sets = ["transfer.reuse=[conv1, conv2]", "transfer.unfreeze_epoch=2", "student_train.epochs=2"]
    sets += ["student.model=largenet", "student_train.batch_size=64"]
    r = runner.invoke(
        app, [*args, "--quiet", "--no-latency", *TINY, *[a for s in sets for a in ("--set", s)]]
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "s" / "transfer_report.json").read_text())
    assert [(s["module"], s["frozen"], s["unfreeze_epoch"]) for s in report["structure"]] == [
        ("conv1", True, 2),
        ("conv2", True, 2),
    ]
    records = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    kd = [(rec["stage"], rec["epoch"]) for rec in records if rec.get("stage", "").startswith("student_kd")]
    assert kd == [("student_kd", 1), ("student_kd-unfrozen", 1)]
    last = json.loads((tmp_path / "s" / "student_kd.json").read_text())["metrics"]
    assert (last["stage"], last["epoch"], last["reused_trainable"]) == ("student_kd", 2, True)


def test_run_pipeline_transfers_into_the_kd_student_only(tmp_path: Path) -> None:
    sets = ["teacher_train.epochs=1", "student_train.epochs=1", "transfer.init=teacher"]
    sets += ["student.model=largenet", "student.kwargs={width: 0.25}", "transfer.selection=first"]
    args = ["run", "digits", "--out", str(tmp_path), "--name", "r", "--quiet", "--no-latency", *TINY]
    r = runner.invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
    assert r.exit_code == 0, r.output
    run = tmp_path / "r"
    report = json.loads((run / "transfer_report.json").read_text())
    assert report["counts"] == {"selected": 7, "exact": 1}
    assert "## Knowledge transfer" in (run / "report.md").read_text()


def test_plain_state_dict_teacher_records_an_unknown_recipe_that_cannot_be_inherited(
    teacher: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(load_file(f"{teacher}.safetensors"), plain)
    args = ["distill", "digits", "--teacher", str(plain), "--out", str(tmp_path), "--name", "kd"]
    r = runner.invoke(app, [*args, "--quiet", "--no-latency", *TINY, "--set", "student_train.epochs=1"])
    assert r.exit_code == 0, r.output
    # The run's teacher_train settings never trained this teacher: the re-saved sidecar must not claim so.
    assert json.loads((tmp_path / "kd" / "teacher.json").read_text())["recipe"] == "unknown"
    # The distilled student records the KD settings it was trained with.
    kd = json.loads((tmp_path / "kd" / "student_kd.json").read_text())["kd"]
    assert isinstance(kd, dict) and "temperature" in kd
    resaved = tmp_path / "kd" / "teacher"
    args = ["distill", "digits", "--teacher", str(resaved), "--out", str(tmp_path / "o"), "--inherit-recipe"]
    r = runner.invoke(app, [*args, "--quiet", *TINY])
    assert r.exit_code == 2
    assert "unknown" in r.output and "--inherit-recipe" in r.output and "Traceback" not in r.output
