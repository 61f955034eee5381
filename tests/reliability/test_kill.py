"""A real `distil train` process is SIGKILLed mid-run, resumed with --resume, and must end with the
same weights, bit for bit, as an uninterrupted run (CPU, same seed).

Slow (each process starts Python, torch and the report writer): run with `pytest -m slow`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# digits, 600 samples -> 540 train, batch 16: 33 steps per epoch, 99 steps in all; a state every 7 steps.
ARGS = [
    "train",
    "--quiet",
    "--no-latency",
    "--set",
    "data.limit=600",
    "--set",
    "teacher_train.epochs=3",
    "--set",
    "teacher_train.batch_size=16",
    "--set",
    "teacher_train.checkpoint_every=7",
    "--set",
    "teacher.model=largenet",
    "--set",
    "teacher.kwargs={dropout: 0.2}",  # dropout: the global torch RNG matters at every step
]
STEPS_PER_EPOCH, TOTAL_STEPS = 33, 99
_STATE = re.compile(r"^e(\d+)-s(\d+)\.json$")


def _env() -> dict[str, str]:
    # One thread: the same kernels (and float sums) in every run, and no fight for the 2 cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "distil.cli.app", *ARGS, "--out", str(out), *extra]


def _states(partial: Path) -> list[tuple[int, int]]:
    d = partial / "state" / "teacher"
    if not d.is_dir():
        return []
    found = [_STATE.match(p.name) for p in d.iterdir()]
    return sorted((int(m.group(1)), int(m.group(2))) for m in found if m)


def _kill_after(cmd: list[str], partial: Path, min_step: int, delay: float) -> tuple[int, int]:
    """Start `cmd`, wait for a state at `min_step` or later, wait `delay` s more, SIGKILL it."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while True:
            states = _states(partial)
            if states and max(s for _, s in states) >= min_step:
                break
            assert proc.poll() is None, f"the run ended before step {min_step}: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no training state appeared"
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return max(states)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "teacher.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(_cmd(out, "--name", "ref"), env=_env(), check=True, capture_output=True)
    return out / "ref"


# Kill points: (first state step to wait for, extra delay) per kill; two entries = killed twice.
@pytest.mark.parametrize(
    "kills",
    [
        [(7, 0.0)],  # right after the first state, in epoch 1
        [(40, 0.05)],  # mid-epoch 2, a little after a state (between steps or inside a write)
        [(14, 0.0), (70, 0.02)],  # killed, resumed, killed again in epoch 3, resumed again
        [(TOTAL_STEPS, 0.0)],  # after the last step: while measuring and writing the report
    ],
    ids=["epoch1-after-first-state", "epoch2-mid", "killed-twice", "after-training"],
)
def test_a_run_killed_at_any_point_resumes_to_the_same_weights(
    reference: Path, tmp_path: Path, kills: list[tuple[int, float]]
) -> None:
    out = tmp_path / "runs ünïcode"  # a path with spaces and non-ASCII characters
    partial = out / ".victim.partial"
    positions = []
    for i, (step, delay) in enumerate(kills):
        extra = ["--name", "victim"] + (["--resume", str(partial)] if i else [])
        positions.append(_kill_after(_cmd(out, *extra), partial, step, delay))
        assert partial.is_dir() and not (out / "victim").exists()
        assert _states(partial), "a killed run keeps its last good state"

    done = subprocess.run(
        _cmd(out, "--name", "victim", "--resume", str(partial)), env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    run = out / "victim"
    assert run.is_dir() and not partial.exists() and not (run / "state").exists()

    ref, got = _weights(reference), _weights(run)
    assert ref.keys() == got.keys()
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"killed at states {positions}: {different} differ"

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ref_records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3], "each epoch logged exactly once"
    assert [r["train_loss"] for r in records] == [r["train_loss"] for r in ref_records]
    print(f"killed at (epoch, step) {positions}: {len(got)} tensors identical")
