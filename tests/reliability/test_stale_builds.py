"""A cache build killed mid-way (SIGKILL: no cleanup runs) leaves its temporary `.KEY.*.partial`
folder; the next build of the same key removes it, and never the folder of a build still running."""

from __future__ import annotations

from pathlib import Path

from distil.data.text import build_stream, cache_key
from distil.data.tokenize import ByteTokenizer
from distil.fileio import atomic_dir
from tests.test_fileio import Owner


def _killed_build(folder: Path) -> Path:
    """What a SIGKILLed build leaves: its part-written files and a lock file nobody holds."""
    folder.mkdir(parents=True)
    (folder / "tokens.npy").write_bytes(b"half")
    (folder / ".lock").write_text("999999999\n")  # the dead owner's pid
    return folder


def test_a_token_cache_build_removes_killed_builds_of_its_key_not_live_ones(tmp_path: Path) -> None:
    corpus = tmp_path / "a.txt"
    corpus.write_text("some text " * 20)
    tok, cache = ByteTokenizer(), tmp_path / "cache"
    key = cache_key([corpus], tok)
    killed = _killed_build(cache / f".{key}.k1ll3d.partial")
    running = cache / f".{key}.runn1n.partial"
    running.mkdir()
    owner = Owner(running)
    try:
        stream = build_stream([corpus], tok, cache_dir=cache)
        assert stream.built and stream.directory == cache / key
        assert not killed.exists() and running.is_dir()
    finally:
        owner.end()
    assert sorted(p.name for p in cache.iterdir()) == sorted([key, running.name])


def test_a_teacher_cache_build_removes_killed_builds_of_its_key(tmp_path: Path) -> None:
    final = tmp_path / "teacher-cache" / "f1ng3rpr1nt"
    killed = _killed_build(final.parent / ".f1ng3rpr1nt.abc.partial")
    other_key = _killed_build(final.parent / ".0therkey.abc.partial")  # not this build's business
    with atomic_dir(final, complete=lambda p: (p / "meta.json").is_file()) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert not killed.exists() and other_key.is_dir()
    assert sorted(p.name for p in final.iterdir()) == ["meta.json"]
