"""What every command shares: error handling, the console, recipe loading with --set overrides."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from distil.config import Recipe, load_recipe
from distil.errors import DistilError
from distil.recipes import resolve_recipe

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value, e.g. --set student_train.lr=0.1 (repeatable)."),
]
OutOption = Annotated[str, typer.Option("--out", help="Directory that receives the run directory.")]
LatencyOption = Annotated[
    bool,
    typer.Option("--latency/--no-latency", help="Measure latency and throughput (a few seconds per model)."),
]
ResumeOption = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="Continue an interrupted run from its last training state: give its partial directory "
        "(runs/.NAME.partial, printed when the run started) and the same recipe and --set options.",
    ),
]
TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Let checkpoint sidecars name Python code to import (a pkg.module:factory model or dataset "
        "function you did not name yourself). Only for checkpoints whose author you trust: importing "
        "runs their code. Without it, name your own factory instead (--model, teacher.model, --data).",
    ),
]


QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress output at all (the final table is still printed).")
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="Progress output: rich (live bars with ETA, loss terms, accuracy), plain (one line per epoch, "
        "for logs), jsonl (one JSON object per epoch on stdout, tables on stderr, for scripts), quiet, or "
        "auto (rich on a terminal, plain otherwise).",
    ),
]


def run_console(log_format: str) -> Console:
    """Where human-readable output goes: stdout, or stderr when stdout carries JSON lines."""
    return err_console if log_format == "jsonl" else console


def print_result(result: Any, log_format: str) -> None:
    """In jsonl mode, end stdout with one "result" line: the run directory, metrics and ratios."""
    if log_format != "jsonl":
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


def recipe_from(name_or_path: str | None, overrides: list[str] | None, *, trust_code: bool = False) -> Recipe:
    """Load a bundled or on-disk recipe (or the defaults) and apply --set overrides (and --trust-code)."""
    path = resolve_recipe(name_or_path) if name_or_path else None
    recipe = load_recipe(path, overrides or [])
    if trust_code:
        recipe.trust_code = True
    return recipe
