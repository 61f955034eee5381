"""One directory per run: checkpoints, the resolved recipe, per-epoch metrics (JSONL), the report.

The directory is built under a hidden `.NAME.partial` name and renamed into place only when the run
succeeds, so a failed run never leaves something that looks like a finished one. Training states
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
from distil.fileio import append_jsonl, atomic_write_text


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


class RunDir:
    """A run directory used as a context manager.

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
        # Another process's run reads the training states of the run it resumes (see rank_run_root).
        self._states = states
        self._logged: set[tuple[object, object]] = set()
        if resume is not None:
            self.path = resolve_resume(resume)
            self.root = self.path.parent
            self.final = self.root / self.path.name[1 : -len(".partial")]
        else:
            self.root = Path(root)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.final = self.root / (_slug(name) if exact else f"{_slug(name)}-{stamp}")
            self.path = self.root / f".{self.final.name}.partial"
        if self.final.exists():
            raise ConfigError(f"run directory {str(self.final)!r} already exists; choose another --out")

    def __enter__(self) -> RunDir:
        try:
            if self.resuming:
                self._load_log()
            else:
                if self.path.exists():
                    shutil.rmtree(self.path)
                self.path.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the run directory in {str(self.root)!r}: {exc.strerror}"
            ) from None
        return self

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
        if exc_type is None:
            # The states only serve to resume; the finished run keeps its final checkpoints.
            shutil.rmtree(self.path / "state", ignore_errors=True)
            self.path.rename(self.final)
            self.path = self.final
        elif isinstance(exc, DistilError | KeyboardInterrupt):
            if self.has_state():
                # Hours of training: keep the last good state so the run can be continued or inspected.
                sys.stderr.write(
                    f"kept the partial run {self.path} with its last good training state; once the cause "
                    f"is fixed, continue it with the same command plus --resume {self.path}\n"
                )
            else:
                # Nothing worth keeping: leave no half-written run behind.
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
