"""Atomic writes create files with the umask's permissions, like open() does (not mkstemp's 0600)."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from distil.fileio import atomic_write_bytes, atomic_write_json, current_umask


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
