"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one intact.

Files are created with the permissions the umask gives (0644 under the usual 022), like `open()` would:
`tempfile.mkstemp` makes 0600 files, which a teammate or a web server could not read.

Directories being written (a run's `.NAME.partial`, a cache's temporary build) are claimed with
:func:`lock_dir`: an exclusive advisory lock on a `.lock` file inside, holding the writer's pid. The
kernel drops the lock when its process dies (even by SIGKILL), so "locked" means "a live process is
writing it": a second writer is refused, and a build left by a killed process is recognised as stale.
Where there are no locks (a filesystem without them, a non-POSIX system) claims succeed unenforced,
as before locks existed, and nothing is ever taken for stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: directories are not locked (the pid is still recorded)
    fcntl = None  # type: ignore[assignment]


def current_umask() -> int:
    """The process umask, read without changing it (`os.umask` sets it, racing with other threads).

    Linux reports it in /proc/self/status; elsewhere it is read once, at import, single-threaded.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def _read_umask_once() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _read_umask_once()


def umask_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or directory (0777) gets under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def apply_umask(path: str | Path, directory: bool = False) -> None:
    """Give a file made by `mkstemp`/`mkdtemp` (0600/0700) the permissions `open()`/`mkdir()` would."""
    os.chmod(path, umask_mode(directory))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, then rename over it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (a crash can lose at most the line being written, never earlier ones)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def is_out_of_space(exc: OSError) -> bool:
    """Whether a failed write failed for lack of room (disk full or quota), not another cause."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


# ------------------------------------------------------------------------------- directory locks

LOCK_NAME = ".lock"

# The lock descriptors this process holds. A forked child (a DataLoader worker) inherits them, and
# flock locks belong to the open file, not the process: the child closes its copies, so that the
# lock ends with the process that took it, not with the last of its workers.
_HELD: set[int] = set()
_HELD_GUARD = threading.Lock()


def _close_inherited_locks() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class DirLock:
    """This process's exclusive claim on a directory (see :func:`lock_dir`); `release` ends it."""

    def __init__(self, directory: Path, fd: int, enforced: bool = True) -> None:
        self.directory = directory
        # False where the filesystem (or OS) has no locks: the claim then excludes no one.
        self.enforced = enforced
        self._fd: int | None = fd
        self._pid = os.getpid()  # a forked child's copy of this object holds nothing (see above)

    def release(self) -> None:
        """Drop the lock (its `.lock` file stays: unlinking a lock others may have opened races)."""
        with _HELD_GUARD:
            fd, self._fd = self._fd, None
            if fd is None or os.getpid() != self._pid:
                return
            _HELD.discard(fd)
            os.close(fd)  # the only descriptor of the open file: the flock ends


def lock_dir(directory: str | Path, *, create: bool = True) -> DirLock | None:
    """Claim `directory` for this process: lock its `.lock` file and write our pid into it.

    Args:
        directory: An existing directory.
        create: Make the `.lock` file if it is missing (else a missing one raises FileNotFoundError).

    Returns:
        The held lock, or None when another live process (or another claim in this one) holds it.
    """
    fd, got = _open_locked(Path(directory) / LOCK_NAME, create)
    if got is False:
        os.close(fd)
        return None
    with _HELD_GUARD:
        _HELD.add(fd)
    lock = DirLock(Path(directory), fd, enforced=got is True)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        lock.release()
        raise
    return lock


def _open_locked(path: Path, create: bool) -> tuple[int, bool | None]:
    """Open the lock file `path` and try to lock it: (descriptor, what :func:`_try_flock` said).

    A new lock file is made under a private name, locked, and only then linked to `path`: a lock file
    that exists unlocked for an instant would let another process take it for a dead owner's and remove
    the directory being built (two ranks building one token cache did exactly that).
    """
    if create and not path.exists():
        staging = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, umask_mode())
        try:
            got = _try_flock(fd)
            os.link(staging, path)  # fails if another claimant's lock file appeared first
            return fd, got
        except OSError:  # theirs came first (or no hard links here): contend for the file at `path`
            os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(staging)
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), umask_mode())
    return fd, _try_flock(fd)


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another open file holds the lock; None: no locks here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        # A filesystem without locks (some network or FUSE mounts): work unlocked, as before locks.
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise
    return True


def is_locked(directory: str | Path) -> bool:
    """Whether a live process holds `directory`'s lock (a missing `.lock` file: no; no locks: yes)."""
    try:
        fd = os.open(Path(directory) / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return False
    # A lock this process holds counts too: flock belongs to the open file, so a second one conflicts
    # (and closing it leaves ours alone).
    got = _try_flock(fd)
    os.close(fd)
    return got is not True


def lock_holder(directory: str | Path) -> int | None:
    """The pid recorded in `directory`'s `.lock` (its last claimant, live or not), or None."""
    try:
        return int((Path(directory) / LOCK_NAME).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------ temporary build directories

STALE_UNLOCKED_S = 24 * 3600.0


def partial_dirs(final: Path) -> list[Path]:
    """The temporary build directories of `final` (`.{final.name}.*.partial`) next to it."""
    if not final.parent.is_dir():
        return []
    prefix = f".{final.name}."
    return [p for p in final.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".partial")]


def remove_stale_partials(final: Path, unlocked_after_s: float = STALE_UNLOCKED_S) -> list[Path]:
    """Remove the temporary builds of `final` whose owner process is gone; returns those removed.

    A build whose lock is held belongs to a live process and is kept. One without a `.lock` file is
    being set up (or was made by an older version, or killed in that instant): kept unless it is
    older than `unlocked_after_s`.
    """
    removed = []
    for tmp in partial_dirs(final):
        if not (tmp / LOCK_NAME).exists():
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > unlocked_after_s:
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed.append(tmp)
            continue
        try:
            # Not created: a lock that vanished means its owner is renaming the build into place.
            claim = lock_dir(tmp, create=False)
        except OSError:  # vanished meanwhile (its owner finished), or not ours to open
            continue
        if claim is not None and not claim.enforced:  # no locks here: cannot tell a live owner
            claim.release()
        elif claim is not None:  # its owner died: the lock was free; remove it while holding it
            shutil.rmtree(tmp, ignore_errors=True)
            claim.release()
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path, complete: Callable[[Path], bool]) -> Iterator[Path]:
    """A temporary directory next to `final`, renamed to it when the block ends without an error.

    The temporary directory is locked by this process while it is built; builds of `final` left by
    killed processes are removed first (never one of a live process). When another process finished
    `final` first, theirs is kept (`complete(final)` decides: the caller's check that a directory is
    whole); a failure removes the temporary directory.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    apply_umask(tmp, directory=True)  # mkdtemp's 0700 would hide the directory from other users
    claim = lock_dir(tmp)
    try:
        yield tmp
        (tmp / LOCK_NAME).unlink()  # before the rename: the finished directory holds only its files
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same directory first (rename over a non-empty one fails).
            if not complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if claim is not None:
            claim.release()
