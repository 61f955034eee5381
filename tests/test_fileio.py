"""Atomic writes create files with the umask's permissions, like open() does (not mkstemp's 0600);
directory locks end with their process, and builds left by killed processes are cleaned up."""

import errno
import multiprocessing as mp
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distil.fileio import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    current_umask,
    is_locked,
    is_out_of_space,
    lock_dir,
    lock_holder,
    remove_stale_partials,
)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask: None) -> None:
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_atomic_writes_follow_the_umask(umask: None, tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "w.bin", b"x")
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(tmp_path / "w.bin") == _mode(plain) == 0o640
    assert _mode(tmp_path / "m.json") == 0o640


def test_atomic_writes_are_readable_by_others_under_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "w.bin", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "w.bin") == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------- locks and temporary builds


def _claim_and_wait(directory: Path, ready: Any, release: Any) -> None:
    """A child that claims `directory`, says so, and holds it until released (or killed)."""
    lock = lock_dir(directory)
    assert lock is not None
    ready.set()
    release.wait(timeout=30)
    os._exit(0)


class Owner:
    """A live child process holding the lock of a directory."""

    def __init__(self, directory: Path) -> None:
        ctx = mp.get_context("fork")
        self._ready, self._release = ctx.Event(), ctx.Event()
        self.process = ctx.Process(target=_claim_and_wait, args=(directory, self._ready, self._release))
        self.process.start()
        assert self._ready.wait(timeout=30), "the child did not claim the directory"

    def kill(self) -> None:
        os.kill(self.process.pid or 0, signal.SIGKILL)  # as a killed build: no cleanup runs
        self.process.join(timeout=30)

    def end(self) -> None:
        self._release.set()
        self.process.join(timeout=30)


def test_a_lock_is_exclusive_records_its_pid_and_is_released(tmp_path: Path) -> None:
    lock = lock_dir(tmp_path)
    assert lock is not None and is_locked(tmp_path)
    assert lock_dir(tmp_path) is None  # a second claim, even in this process
    assert lock_holder(tmp_path) == os.getpid()
    lock.release()
    assert not is_locked(tmp_path)
    again = lock_dir(tmp_path)
    assert again is not None
    again.release()


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path: Path) -> None:
    lock = lock_dir(tmp_path)
    assert lock is not None
    (tmp_path / "elsewhere").mkdir()
    child = Owner(tmp_path / "elsewhere")  # forked while this process holds the lock
    try:
        lock.release()  # the forked child (a DataLoader worker) still lives: the lock ends anyway
        assert not is_locked(tmp_path)
    finally:
        child.end()


def test_builds_left_by_dead_processes_are_removed_those_of_live_ones_kept(tmp_path: Path) -> None:
    final = tmp_path / "abc123"
    dead, live = tmp_path / ".abc123.dead.partial", tmp_path / ".abc123.live.partial"
    other_key = tmp_path / ".zzz.dead.partial"
    for d in (dead, live, other_key):
        d.mkdir()
        (d / "part.npy").write_bytes(b"x")
    killed, owner = Owner(dead), Owner(live)
    Owner(other_key).kill()
    killed.kill()
    try:
        assert remove_stale_partials(final) == [dead]
        assert not dead.exists() and live.is_dir() and other_key.is_dir()
        # A build being set up (no lock yet) is kept; one without a lock for a day is stale.
        young = tmp_path / ".abc123.young.partial"
        young.mkdir()
        assert remove_stale_partials(final) == [] and young.is_dir()
        assert remove_stale_partials(final, unlocked_after_s=-1) == [young]
    finally:
        owner.end()
    assert remove_stale_partials(final) == [live]  # its owner ended without finishing


def test_without_locks_claims_still_work_and_nothing_is_taken_for_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")  # some network and FUSE filesystems

    monkeypatch.setattr("distil.fileio.fcntl.flock", no_locks)
    build = tmp_path / ".key.x.partial"
    build.mkdir()
    lock = lock_dir(build)
    assert lock is not None and not lock.enforced
    lock.release()
    assert remove_stale_partials(tmp_path / "key") == [] and build.is_dir()


def test_atomic_dir_cleans_stale_builds_and_leaves_only_the_files(tmp_path: Path) -> None:
    final = tmp_path / "cache" / "key"
    final.parent.mkdir()
    stale = final.parent / ".key.old.partial"
    stale.mkdir()
    Owner(stale).kill()
    with atomic_dir(final, complete=lambda p: (p / "meta.json").is_file()) as tmp:
        assert is_locked(tmp)
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in final.parent.iterdir()) == ["key"]
    assert sorted(p.name for p in final.iterdir()) == ["meta.json"]


def test_only_a_full_disk_or_quota_is_out_of_space() -> None:
    assert is_out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_out_of_space(OSError(errno.ENOTEMPTY, "Directory not empty"))
    assert not is_out_of_space(OSError(errno.ENOENT, "No such file or directory"))


def test_a_new_lock_file_is_locked_before_it_appears(tmp_path, monkeypatch) -> None:
    # Regression (two torchrun ranks building one token cache): a `.lock` that existed unlocked for an
    # instant let the other rank take it for a dead owner's and remove the build in progress.
    from distil import fileio

    seen: list[bool] = []
    real = fileio._try_flock

    def spy(fd: int):
        seen.append((tmp_path / fileio.LOCK_NAME).exists())
        return real(fd)

    monkeypatch.setattr(fileio, "_try_flock", spy)
    claim = fileio.lock_dir(tmp_path)
    assert claim is not None and seen == [False]  # locked while still under its private name
    assert fileio.is_locked(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == [fileio.LOCK_NAME]
    claim.release()
    assert not fileio.is_locked(tmp_path)
