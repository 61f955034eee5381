"""Issue 21.8: `distil eval A B --model M --model N` gives each plain state_dict its own architecture."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.models import create_model

runner = CliRunner()


def _state_dict(tmp_path: Path, name: str) -> Path:
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    torch.save(create_model(name, num_classes=10, in_channels=1, image_size=8).state_dict(), path)
    return path


def _eval(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, ["eval", *args, "--data", "digits", "--no-latency"])
    return r.exit_code, r.output


def test_one_model_per_checkpoint_matched_by_position(tmp_path: Path) -> None:
    big, small = _state_dict(tmp_path, "largenet"), _state_dict(tmp_path, "smallnet")
    code, out = _eval(str(big), str(small), "--model", "largenet", "--model", "smallnet")
    assert code == 0, out
    params = re.search(r"params\s+│\s+(\S+)\s+│\s+(\S+)", out)
    assert params is not None and params.group(1) != params.group(2), out  # each built as its own model


def test_one_model_still_applies_to_every_checkpoint(tmp_path: Path) -> None:
    a, b = _state_dict(tmp_path, "smallnet"), _state_dict(tmp_path, "smallnet")
    code, out = _eval(str(a), str(b), "--model", "smallnet")
    assert code == 0, out


def test_a_model_count_that_matches_neither_is_a_bad_parameter(tmp_path: Path) -> None:
    a = _state_dict(tmp_path, "smallnet")
    code, out = _eval(str(a), str(a), str(a), "--model", "smallnet", "--model", "smallnet")
    assert code == 2, out
    flat = " ".join(out.split())
    assert "--model" in flat and "given 2 times for 3 checkpoints" in flat, out
