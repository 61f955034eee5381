"""Issue 21.8: a Python warning raised while a command runs prints as distil's own one-line notice."""

from __future__ import annotations

import warnings

import pytest
from typer.testing import CliRunner

import distil.models
from distil.cli.app import app

runner = CliRunner()


def _warning_models() -> list[str]:
    warnings.warn("the cache is older than the data\n  (rebuild it)", UserWarning, stacklevel=1)
    warnings.warn("old spelling", FutureWarning, stacklevel=1)
    return ["seed-tiny"]


def test_a_warning_during_a_command_prints_one_line_without_the_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(distil.models, "list_models", _warning_models)
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "distil: warning: the cache is older than the data (rebuild it)" in lines, r.output
    assert "distil: warning: old spelling (FutureWarning)" in lines, r.output
    assert __file__ not in r.output and "warnings.warn" not in r.output  # no source path, no source line
    assert "seed-tiny" in lines


def test_the_previous_warning_hook_comes_back_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distil.models, "list_models", _warning_models)
    before = warnings.showwarning
    assert runner.invoke(app, ["models"]).exit_code == 0
    assert warnings.showwarning is before
