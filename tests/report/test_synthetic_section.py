"""A run distilled on a `distil synthesize` set shows the set's grids, one per class, in its report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.report.writer import write_report
from distil.synth import SyntheticSet, write_synthetic
from tests.report.fake_run import make_run


@pytest.fixture(scope="module")
def synthetic_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic set for digits: 12 inputs, the teacher's classes 0, 1 and 2."""
    data = load_dataset("digits", limit=40, val_fraction=0.0)
    inputs = torch.randn(12, *data.input_shape, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 3
    synthetic = SyntheticSet(inputs, labels, labels, "deepinversion", 7, 0.0, {})
    return write_synthetic(tmp_path_factory.mktemp("synth") / "set", synthetic, data)


def _run_on(root: Path, npz: Path | None = None, unlabeled: Path | None = None) -> Path:
    """A fake finished run whose data was read from `npz`, or whose recipe adds `unlabeled` inputs."""
    run = make_run(root)
    summary = json.loads((run / "summary.json").read_text())
    if npz is not None:
        summary["data"]["source"] = str(npz)
    (run / "summary.json").write_text(json.dumps(summary))
    if unlabeled is not None:
        (run / "recipe.yaml").write_text(f"name: toy\ndata:\n  unlabeled:\n    root: {unlabeled}\n")
    return run


def test_report_of_a_run_on_a_synthetic_set_shows_a_grid_per_class(
    tmp_path: Path, synthetic_npz: Path
) -> None:
    files = write_report(_run_on(tmp_path, npz=synthetic_npz))
    md = files.markdown.read_text()
    assert "## Synthetic transfer set" in md and "12 inputs made by deepinversion (seed 7)" in md
    links = [line for line in md.splitlines() if "synthetic inputs" in line]
    assert links == [f"![{k}: synthetic inputs](plots/synthetic/{k:02d}-{k}.png)" for k in range(3)]
    for k in range(3):
        copied = files.markdown.parent / "plots" / "synthetic" / f"{k:02d}-{k}.png"
        original = synthetic_npz.parent / "grids" / f"{k:02d}-{k}.png"
        assert copied.read_bytes() == original.read_bytes()
    html = files.html.read_text()
    assert "<h2>Synthetic transfer set</h2>" in html
    assert html.count('alt="0: synthetic inputs"') == 1 and html.count(': synthetic inputs" src=') == 3


def test_the_grids_stay_in_the_report_when_the_set_is_gone(tmp_path: Path, synthetic_npz: Path) -> None:
    moved = tmp_path / "set"
    shutil.copytree(synthetic_npz.parent, moved)
    run = _run_on(tmp_path / "runs", npz=moved / "transfer.npz")
    write_report(run)
    shutil.rmtree(moved)
    md = write_report(run).markdown.read_text()  # `distil report` again, after the set was deleted
    assert md.count("](plots/synthetic/") == 3


def test_unlabelled_inputs_from_a_synthetic_set_show_its_grids(tmp_path: Path, synthetic_npz: Path) -> None:
    md = write_report(_run_on(tmp_path, unlabeled=synthetic_npz)).markdown.read_text()
    assert "## Synthetic transfer set" in md and md.count("](plots/synthetic/") == 3


def test_a_plain_npz_gets_no_synthetic_section(tmp_path: Path) -> None:
    plain = tmp_path / "plain" / "data.npz"
    plain.parent.mkdir()
    np.savez(plain, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    files = write_report(_run_on(tmp_path, npz=plain))
    assert "Synthetic transfer set" not in files.markdown.read_text() + files.html.read_text()
    assert not (files.markdown.parent / "plots" / "synthetic").exists()
