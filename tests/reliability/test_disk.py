"""`distil train` on data that stays on disk (npy-dir, read by DataLoader workers) ends with the same
weights and records, bit for bit, as the same samples in memory (npz, TensorLoader), and a SIGKILLed
on-disk run resumes to those weights too (CPU, same seed).

Slow (each process starts Python and torch): run with `pytest -m slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import export_npy_dir
from tests.reliability.test_kill import ARGS, _env, _kill_after, _states, _weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The digits samples twice: an npy-dir folder, and an .npz file with the same arrays."""
    base = tmp_path_factory.mktemp("data")
    folder = export_npy_dir("digits", base / "digits-npy")
    arrays = {k: np.load(folder / f"{k}.npy") for k in ("x_train", "y_train", "x_test", "y_test")}
    names = np.array(json.loads((folder / "class_names.json").read_text()))
    npz = base / "digits.npz"
    np.savez(
        npz,
        x=arrays["x_train"],
        y=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        class_names=names,
    )
    return folder, npz


def _cmd(out: Path, name: str, data: str, root: Path, *extra: str) -> list[str]:
    sets = ["--set", f"data.name={data}", "--set", f"data.root={root}"]
    return [sys.executable, "-m", "distil.cli.app", *ARGS, *sets, "--out", str(out), "--name", name, *extra]


def _records(run: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Wall-clock fields differ between any two runs; everything else must match.
    return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]


def _same_weights(a: Path, b: Path) -> list[str]:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return [k for k in wa if not torch.equal(wa[k], wb[k])]


@pytest.fixture(scope="module")
def in_memory(sources: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memory")
    subprocess.run(_cmd(out, "ref", "npz", sources[1]), env=_env(), check=True, capture_output=True)
    return out / "ref"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_training_on_disk_equals_training_in_memory(
    sources: tuple[Path, Path], in_memory: Path, tmp_path: Path, num_workers: int
) -> None:
    workers = ["--set", f"teacher_train.num_workers={num_workers}"]
    if num_workers:
        workers += [
            "--set",
            "teacher_train.persistent_workers=true",
            "--set",
            "teacher_train.prefetch_factor=2",
        ]
    done = subprocess.run(
        _cmd(tmp_path, "disk", "npy-dir", sources[0], *workers), env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    run = tmp_path / "disk"
    assert not _same_weights(in_memory, run)
    assert _records(run) == _records(in_memory)
    sidecar = json.loads((run / "teacher.json").read_text())
    assert "npy-dir" in json.dumps(sidecar)


@pytest.mark.parametrize(
    ("num_workers", "kills"),
    [(0, [(40, 0.05)]), (2, [(14, 0.0), (70, 0.02)])],
    ids=["main-process-epoch2-mid", "workers-killed-twice"],
)
def test_an_on_disk_run_killed_mid_training_resumes_to_the_same_weights(
    sources: tuple[Path, Path],
    in_memory: Path,
    tmp_path: Path,
    num_workers: int,
    kills: list[tuple[int, float]],
) -> None:
    out = tmp_path / "runs"
    partial = out / ".victim.partial"
    extra = ["--set", f"teacher_train.num_workers={num_workers}"]
    for i, (step, delay) in enumerate(kills):
        resume = ["--resume", str(partial)] if i else []
        _kill_after(_cmd(out, "victim", "npy-dir", sources[0], *extra, *resume), partial, step, delay)
        assert _states(partial), "a killed run keeps its last good state"
    done = subprocess.run(
        _cmd(out, "victim", "npy-dir", sources[0], *extra, "--resume", str(partial)),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    run = out / "victim"
    assert not _same_weights(in_memory, run)
    assert [r["epoch"] for r in _records(run)] == [1, 2, 3]
    assert [r["train_loss"] for r in _records(run)] == [r["train_loss"] for r in _records(in_memory)]
