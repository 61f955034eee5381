"""What every command shares: error handling, the console, recipe loading with --set overrides."""

from __future__ import annotations

import functools
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
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (for scripts and CI).")]


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


def recipe_from(name_or_path: str | None, overrides: list[str] | None) -> Recipe:
    """Load a bundled or on-disk recipe (or the defaults) and apply --set overrides."""
    path = resolve_recipe(name_or_path) if name_or_path else None
    return load_recipe(path, overrides or [])
