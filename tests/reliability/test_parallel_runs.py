"""Two real `distil train` processes started together into one --out (a parallel sweep).

Each must finish in a directory of its own holding its own recipe and each epoch once; two with the
same --name: one runs, the other is refused with a clear message (no traceback, nothing wiped).
Both children pin `time.strftime`, so their default names collide for certain (the same second).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# The CLI with the run stamp pinned: both processes want the same default directory.
PINNED = (
    "import sys, time; time.strftime = lambda fmt, *a: '20260101-120000'; "
    "from distil.cli.app import main; sys.argv[0] = 'distil'; main()"
)
TINY = ["train", "digits", "--quiet", "--no-latency", "--set", "data.limit=200"]
TINY += ["--set", "teacher_train.epochs=2", "--set", "teacher.model=smallnet"]


def _start(out: Path, lr: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", PINNED, *TINY, "--out", str(out), "--set", f"teacher_train.lr={lr}", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    return [(p.wait(timeout=300), (p.communicate()[1] or "")) for p in procs]


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_runs_started_together_each_finish_in_their_own_directory(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    done = _finish([_start(out, "0.011"), _start(out, "0.022")])
    assert [rc for rc, _ in done] == [0, 0], [err for _, err in done]
    runs = sorted(out.iterdir())
    stamp = "digits-demo-teacher-20260101-120000"
    assert [r.name for r in runs] == [stamp, f"{stamp}-2"]  # no partial directory left behind
    lrs = sorted(yaml.safe_load((r / "recipe.yaml").read_text())["teacher_train"]["lr"] for r in runs)
    assert lrs == [0.011, 0.022]  # each directory holds its own run's recipe
    for run in runs:
        assert _epochs(run) == [1, 2], "each epoch logged once, by its own run"
        assert (run / "teacher.safetensors").is_file()


@pytest.mark.slow
def test_a_second_run_with_the_same_name_is_refused_and_the_first_is_intact(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    done = _finish([_start(out, "0.011", "--name", "same"), _start(out, "0.022", "--name", "same")])
    assert sorted(rc for rc, _ in done) == [0, 2], [err for _, err in done]
    (refusal,) = [err for rc, err in done if rc == 2]
    # Refused while the other runs, or after it finished: either way a message, not a traceback.
    assert "being written by a running distil process (pid" in refusal or "already exists" in refusal
    assert "Traceback" not in refusal
    assert sorted(p.name for p in out.iterdir()) == ["same"]
    assert _epochs(out / "same") == [1, 2]
