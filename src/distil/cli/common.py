"""What commands share besides their options (options.py): errors, console, output checks, recipes."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from distil.config import Recipe, load_recipe
from distil.errors import DistilError
from distil.recipes import resolve_recipe

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)


def run_console(log_format: str) -> Console:
    """Where human-readable output goes: stdout, or stderr when stdout carries JSON lines.

    Under torchrun or accelerate launch only rank 0 speaks: the other ranks get a silent console.
    """
    from distil.train.distributed import rank_zero_console

    return rank_zero_console(err_console if log_format == "jsonl" else console)


def command_progress(log_format: str, quiet: bool) -> Any:
    """The progress display of a command's training (a context manager), per --log-format and --quiet."""
    from distil.report.progress import make_progress

    return make_progress(run_console(log_format), enabled=not quiet, log_format=log_format)


def print_metrics_result(log_format: str, metrics: Sequence[Any], **fields: Any) -> None:
    """In jsonl mode, end stdout with one "result" line: `fields`, the metrics, ratios vs the first row.

    Only the main process prints it (see `run_console`).
    """
    from distil.measure import compare
    from distil.train.distributed import is_main_process

    if log_format != "jsonl" or not is_main_process():
        return
    reference = metrics[0] if metrics else None
    line = {
        "event": "result",
        **{k: str(v) if isinstance(v, Path) else v for k, v in fields.items()},
        "metrics": [m.to_dict() for m in metrics],
        "ratios": {m.name: compare(reference, m) for m in metrics[1:]} if reference else {},
    }
    print(json.dumps(line), flush=True)


def print_result(result: Any, log_format: str) -> None:
    """In jsonl mode, end stdout with one "result" line: the run directory, metrics and ratios."""
    from distil.train.distributed import is_main_process

    if log_format != "jsonl" or not is_main_process():
        return
    line = {
        "event": "result",
        "run_dir": str(result.run_dir),
        "metrics": [m.to_dict() for m in result.metrics],
        "ratios": result.ratios,
    }
    print(json.dumps(line), flush=True)


def user_errors(func: F) -> F:
    """Print DistilErrors as one short message (no traceback) and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DistilError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def check_out(path: str | Path, *, is_file: bool = False, option: str = "--out") -> Path:
    """Before any work, prove that a command's output can be written there (a ConfigError otherwise).

    Every command that writes calls this first, so an unwritable --out fails at once with exit status 2
    and a message naming the directory and the fix, not with a traceback after training.

    Args:
        path: the output directory, or the output file when `is_file` (its directory is checked).
        is_file: `path` names a file (or a checkpoint NAME) rather than a directory.
        option: the option or argument that chose the path, named in the message.

    Returns:
        `path`, as a Path.
    """
    from distil.resources import check_writable

    target = Path(path)
    check_writable(target.parent if is_file else target, option)
    return target


def recipe_from(name_or_path: str | None, overrides: list[str] | None, *, trust_code: bool = False) -> Recipe:
    """Load a bundled or on-disk recipe (or the defaults) and apply --set overrides (and --trust-code)."""
    path = resolve_recipe(name_or_path) if name_or_path else None
    recipe = load_recipe(path, overrides or [])
    if trust_code:
        recipe.trust_code = True
    return recipe
