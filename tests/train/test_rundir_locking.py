"""One process writes a run directory: runs started together get their own, a second writer is refused.

Threads and forked processes open RunDirs at once (the lock is per open file, so threads collide as
processes do); `time.strftime` is pinned so that default names collide for certain.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distil.errors import ConfigError, TrainingError
from distil.fileio import LOCK_NAME
from distil.train.runs import RunDir

STAMP = "20260101-120000"


@pytest.fixture
def same_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("distil.train.runs.time.strftime", lambda fmt: STAMP)


def test_runs_started_in_the_same_second_get_a_directory_each(tmp_path: Path, same_second: None) -> None:
    n = 4
    inside = threading.Barrier(n)  # every run is open at once before any finishes
    paths: dict[int, Path] = {}
    errors: list[BaseException] = []

    def one_run(i: int) -> None:
        try:
            with RunDir(tmp_path, "sweep") as run:
                run.write_text("recipe.yaml", f"lr: {i}\n")
                run.log({"stage": "teacher", "epoch": 1, "lr": i})
                inside.wait(timeout=10)
            paths[i] = run.path
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=one_run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"sweep-{STAMP}", f"sweep-{STAMP}-2", f"sweep-{STAMP}-3", f"sweep-{STAMP}-4"]
    for i, path in paths.items():
        assert (path / "recipe.yaml").read_text() == f"lr: {i}\n"  # its own recipe, not another's
        assert (path / "metrics.jsonl").read_text().count("\n") == 1
        assert not (path / LOCK_NAME).exists()  # a finished run holds only its results


def test_a_default_name_skips_one_that_finished_in_the_same_second(tmp_path: Path, same_second: None) -> None:
    (tmp_path / f"r-{STAMP}").mkdir()
    with RunDir(tmp_path, "r") as run:
        pass
    assert run.path == tmp_path / f"r-{STAMP}-2"


def _hold(root: Path, ready: Any, release: Any) -> None:
    """A child's run `r`: save a state, wait to be released, then stop with an error (kept partial)."""
    try:
        with RunDir(root, "r", exact=True) as run:
            d = run.state_dir("teacher")
            d.mkdir(parents=True)
            (d / "e0001-s000000003.json").write_text("{}")
            ready.set()
            release.wait(timeout=30)
            raise TrainingError("stopped")
    except TrainingError:
        pass
    os._exit(0)


class LiveRun:
    """A run `r` held open by a live child process until `end()`."""

    def __init__(self, root: Path) -> None:
        ctx = mp.get_context("fork")
        self.partial = root / ".r.partial"
        self._ready, self._release = ctx.Event(), ctx.Event()
        self._child = ctx.Process(target=_hold, args=(root, self._ready, self._release))
        self._child.start()
        self.pid = self._child.pid
        assert self._ready.wait(timeout=30), "the child run did not start"

    def end(self) -> None:
        self._release.set()
        self._child.join(timeout=30)
        assert self._child.exitcode == 0


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[LiveRun]:
    run = LiveRun(tmp_path)
    try:
        yield run
    finally:
        run.end()


def test_a_second_writer_of_a_live_run_is_refused_naming_its_pid(live_run: LiveRun) -> None:
    partial, busy = live_run.partial, rf"being written by a running distil process \(pid {live_run.pid}\)"
    with pytest.raises(ConfigError, match=busy), RunDir(partial.parent, "ignored", resume=partial):
        pass
    with pytest.raises(ConfigError, match=busy), RunDir(partial.parent, "r", exact=True):
        pass
    assert (partial / "state" / "teacher" / "e0001-s000000003.json").is_file()  # untouched


def test_a_partial_run_whose_process_ended_is_kept_and_resumable(live_run: LiveRun) -> None:
    live_run.end()
    partial = live_run.partial
    # The same --name again does not wipe it: it says how to continue or remove it.
    taken = r"unfinished run is already in .*--resume .*remove it"
    with pytest.raises(ConfigError, match=taken), RunDir(partial.parent, "r", exact=True):
        pass
    assert (partial / "state" / "teacher" / "e0001-s000000003.json").is_file()
    with RunDir(partial.parent, "ignored", resume=partial) as run:
        run.log({"stage": "teacher", "epoch": 2})
    assert run.path == partial.parent / "r" and not partial.exists()


def test_two_resumes_of_one_partial_run_cannot_both_write(tmp_path: Path) -> None:
    (tmp_path / ".r.partial").mkdir()
    with RunDir(tmp_path, "x", resume=tmp_path / ".r.partial"):
        second = RunDir(tmp_path, "x", resume=tmp_path / ".r.partial")
        with pytest.raises(ConfigError, match=rf"\(pid {os.getpid()}\)"), second:
            pass
    assert (tmp_path / "r").is_dir()


def test_a_partial_directory_being_created_this_instant_is_not_called_ended(tmp_path) -> None:
    # Regression (review): between another process's mkdir and its lock there is no lock file; the
    # second --name must not be told "its process has ended ... remove it (rm -r)" about a live run.
    import threading

    from distil.fileio import lock_dir
    from distil.train.runs import _taken_message

    partial = tmp_path / ".same.partial"
    partial.mkdir()
    held = []
    timer = threading.Timer(0.3, lambda: held.append(lock_dir(partial)))  # the creator locks a bit later
    timer.start()
    try:
        message = _taken_message(partial)
    finally:
        timer.join()
    assert "is being written by a running distil process" in message and "rm -r" not in message
    held[0].release()
    assert "its process has ended" in _taken_message(partial)  # a lock file nobody holds: an ended run
