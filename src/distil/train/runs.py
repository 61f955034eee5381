"""One directory per run: checkpoints, the resolved recipe, per-epoch metrics (JSONL), the report.

The directory is built under a hidden `.NAME.partial` name and renamed into place only when the run
succeeds, so a failed run never leaves something that looks like a finished one.
"""

from __future__ import annotations

import re
import shutil
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

    def __init__(self, root: str | Path, name: str, *, exact: bool = False) -> None:
        self.root = Path(root)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.final = self.root / (_slug(name) if exact else f"{_slug(name)}-{stamp}")
        if self.final.exists():
            raise ConfigError(f"run directory {str(self.final)!r} already exists; choose another --out")
        self.path = self.root / f".{self.final.name}.partial"

    def __enter__(self) -> RunDir:
        try:
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the run directory in {str(self.root)!r}: {exc.strerror}"
            ) from None
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.path.rename(self.final)
            self.path = self.final
        elif isinstance(exc, DistilError | KeyboardInterrupt):
            # A user-facing error: nothing worth keeping; leave no half-written run behind.
            shutil.rmtree(self.path, ignore_errors=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl."""
        append_jsonl(self.file("metrics.jsonl"), record)

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_text(self.file(name), text)
        return self.file(name)
