"""One directory per run: checkpoints, the resolved recipe, per-epoch metrics (JSONL), the report.

The directory is built under a hidden `.NAME.partial` name and renamed into place only when the run
succeeds, so a failed run never leaves something that looks like a finished one. One process writes
it: the partial directory is reserved by an atomic mkdir and locked while the run goes, so parallel
runs (a sweep) never share one, and a second writer is refused. Training states
(`state/<stage>/`, see `distil.train.state`) live in the partial directory while the run is going:
a run that is killed, interrupted or stopped by an error after saving one keeps its partial
directory, and `--resume runs/.NAME.partial` continues it. A finished run drops its states.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from distil.errors import ConfigError, DistilError
from distil.fileio import (
    LOCK_NAME,
    DirLock,
    append_jsonl,
    atomic_write_text,
    is_locked,
    lock_dir,
    lock_holder,
)

_MAX_SUFFIX = 1000
_CLAIM_GRACE_S = 2.0  # how long a fresh partial directory may go without its lock file (see _taken_message)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def _partial(root: Path, name: str) -> Path:
    return root / f".{name}.partial"


class RunDir:
    """A run directory used as a context manager, written by one process at a time.

    The partial directory is made with an atomic `mkdir` and locked (see `distil.fileio.lock_dir`) for
    as long as the block runs: runs started in the same second get distinct directories (`-2`, `-3`
    ...), and a second writer of one directory (the same `--name`, or `--resume` of a live run) is
    refused with a ConfigError naming the process that holds it.

    Example:
        >>> with RunDir("runs", "digits-demo") as run:
        ...     run.log({"epoch": 1})
        >>> run.path  # runs/digits-demo-20261127-183000, present only if the block succeeded
    """

    def __init__(
        self,
        root: str | Path,
        name: str,
        *,
        exact: bool = False,
        resume: str | Path | None = None,
        states: Path | None = None,
    ) -> None:
        self.resuming = resume is not None
        self.exact = exact
        # Another process's run reads the training states of the run it resumes (see rank_run_root).
        self._states = states
        self._logged: set[tuple[object, object]] = set()
        self._lock: DirLock | None = None
        if resume is not None:
            self.path = resolve_resume(resume)
            self.root = self.path.parent
            self.final = self.root / self.path.name[1 : -len(".partial")]
        else:
            self.root = Path(root)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            # A default name is only the first candidate: __enter__ picks a free one.
            self.final = self.root / (_slug(name) if exact else f"{_slug(name)}-{stamp}")
            self.path = _partial(self.root, self.final.name)
        if (exact or self.resuming) and self.final.exists():
            raise ConfigError(
                f"run directory {str(self.final)!r} already exists; choose another --name or --out"
            )

    def __enter__(self) -> RunDir:
        try:
            if self.resuming:
                self._claim()
                self._load_log()
            elif self.exact:
                self._create_exact()
            else:
                self._create_unique()
        except OSError as exc:
            raise ConfigError(
                f"cannot create the run directory in {str(self.root)!r}: {exc.strerror or exc}"
            ) from None
        return self

    def _create_exact(self) -> None:
        """Make the partial directory of the exact name; an existing one is refused, never replaced."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir()
        except FileExistsError:
            raise ConfigError(_taken_message(self.path)) from None
        if self.final.exists():  # finished by another run between __init__ and the mkdir
            self.path.rmdir()
            raise ConfigError(
                f"run directory {str(self.final)!r} already exists; choose another --name or --out"
            )
        self._claim()

    def _create_unique(self) -> None:
        """Reserve the first free name among NAME-STAMP, NAME-STAMP-2, ... with an atomic mkdir."""
        self.root.mkdir(parents=True, exist_ok=True)
        base = self.final.name
        for i in range(1, _MAX_SUFFIX + 1):
            name = base if i == 1 else f"{base}-{i}"
            partial = _partial(self.root, name)
            try:
                partial.mkdir()
            except FileExistsError:
                continue  # another run of this second holds it
            if (self.root / name).exists():  # a run of that name finished before our mkdir
                partial.rmdir()
                continue
            self.path, self.final = partial, self.root / name
            self._claim()
            return
        raise ConfigError(
            f"no free run directory name in {str(self.root)!r}: {base} to {base}-{_MAX_SUFFIX} are all "
            "taken; give another --name or --out"
        )

    def _claim(self) -> None:
        """Lock the partial directory for this process, or refuse when a live process holds it."""
        lock = lock_dir(self.path)
        if lock is None:
            raise ConfigError(_busy_message(self.path))
        self._lock = lock

    def _load_log(self) -> None:
        """Remember the epochs already logged, dropping a last line cut short by a kill."""
        log = self.file("metrics.jsonl")
        if not log.is_file():
            return
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
        good = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if not line.endswith("\n"):
                break
            good.append(line)
            self._logged.add((record.get("stage"), record.get("epoch")))
        if len(good) != len(lines):
            atomic_write_text(log, "".join(good))

    @property
    def state_root(self) -> Path:
        """Where the training states of all stages are kept: `state/`, or the one given as `states`."""
        return self._states if self._states is not None else self.path / "state"

    def state_dir(self, stage: str) -> Path:
        """Where the training states of one stage (e.g. "teacher") are kept."""
        return self.state_root / _slug(stage)

    def has_state(self) -> bool:
        """Whether a training state was saved: the partial run can then be resumed."""
        states = self.path / "state"
        return states.is_dir() and any(states.glob("*/e*-s*.json"))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._finish()
            elif isinstance(exc, DistilError | KeyboardInterrupt):
                self._keep_or_remove()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _finish(self) -> None:
        """Rename the partial directory into place (never over another directory)."""
        if self.final.exists():
            raise ConfigError(
                f"the run finished, but {str(self.final)!r} was created meanwhile by something else; "
                f"the results stay in {str(self.path)!r}: move them where you want them"
            )
        # The states only serve to resume; the finished run keeps its final checkpoints.
        shutil.rmtree(self.path / "state", ignore_errors=True)
        self.path.rename(self.final)
        self.path = self.final
        # Dropped after the rename: until then a --resume of the partial path finds it locked.
        (self.final / LOCK_NAME).unlink(missing_ok=True)

    def _keep_or_remove(self) -> None:
        """After a failure: keep the partial directory if it holds a training state, else remove it."""
        if self.has_state():
            # Hours of training: keep the last good state so the run can be continued or inspected.
            sys.stderr.write(
                f"kept the partial run {self.path} with its last good training state; once the cause "
                f"is fixed, continue it with the same command plus --resume {self.path}\n"
            )
        else:
            # Nothing worth keeping: leave no half-written run behind (the directory is ours: locked).
            shutil.rmtree(self.path, ignore_errors=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl (once per stage and epoch: a resumed run replays none)."""
        key = (record.get("stage"), record.get("epoch"))
        if key[1] is not None and key in self._logged:
            return
        if key[1] is not None:
            self._logged.add(key)
        append_jsonl(self.file("metrics.jsonl"), record)

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_text(self.file(name), text)
        return self.file(name)


def _busy_message(partial: Path) -> str:
    pid = lock_holder(partial)
    who = f"pid {pid}" if pid is not None else "another process"
    return (
        f"run directory {str(partial)!r} is being written by a running distil process ({who}); two runs "
        "cannot share one directory. Wait for it to end, stop it, or start this run under another --name "
        "(without --name every run gets a directory of its own)."
    )


def _taken_message(partial: Path) -> str:
    """Why an exact --name cannot start: its partial directory is a live run's, or an interrupted one."""
    # Its creator locks it right after its mkdir: a directory without a lock file yet may be a run
    # starting this instant, not an ended one, so give the lock a moment to appear.
    deadline = time.monotonic() + _CLAIM_GRACE_S
    while not (partial / LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_locked(partial):
        return _busy_message(partial)
    return (
        f"an unfinished run is already in {str(partial)!r} (its process has ended). Continue it with the "
        f"same command plus --resume {partial}, remove it (rm -r) to start over, or choose another --name."
    )


def resolve_resume(path: str | Path) -> Path:
    """Check that `path` is the partial directory of an unfinished run and return it.

    Raises:
        ConfigError: when it does not exist, is a finished run, or is not a run directory.
    """
    p = Path(path)
    if p.name.startswith(".") and p.name.endswith(".partial") and p.is_dir():
        return p
    partial = p.parent / f".{p.name}.partial"
    if partial.is_dir():
        return partial  # the run's final name was given
    if p.is_dir():
        raise ConfigError(
            f"{str(p)!r} is a finished run (or not a run directory); --resume takes the partial directory "
            "of an interrupted run (runs/.NAME.partial, printed when the run started)."
        )
    candidates = sorted(q.name for q in p.parent.glob(".*.partial")) if p.parent.is_dir() else []
    hint = f" Interrupted runs there: {', '.join(candidates)}." if candidates else ""
    raise ConfigError(f"cannot resume {str(p)!r}: no such directory.{hint}")
