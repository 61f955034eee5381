"""Issue 21.8: the CIFAR folder messages suggest what works on each command (train has no --data-root)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from distil.cli.app import app

runner = CliRunner()


def test_train_on_the_parent_of_the_cifar_folder_suggests_data_root_by_set(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    args = [
        "train",
        "--set",
        "data.name=cifar10",
        "--set",
        f"data.root={tmp_path}",
        "--out",
        str(tmp_path / "runs"),
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    flat = "".join(r.output.split())  # the message wraps anywhere, paths included
    fixed = tmp_path / "cifar-10-batches-py"
    assert f"--setdata.root={fixed}(train,distill,run,transfer)" in flat, r.output
    assert f"--data-root{fixed}(eval,export,prune,quantize,compress,shrink)" in flat, r.output


def test_train_without_a_root_says_how_to_give_one(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "--set", "data.name=cifar100", "--out", str(tmp_path / "runs")])
    assert r.exit_code == 2, r.output
    assert "--setdata.root=DIR(train,distill,run,transfer)" in "".join(r.output.split()), r.output
