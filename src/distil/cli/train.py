"""`distil train`: train a teacher (or any model) on labels from a recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import (
    LatencyOption,
    OutOption,
    QuietOption,
    SetOption,
    console,
    recipe_from,
    user_errors,
)
from distil.pipeline import train_teacher


@user_errors
def train(
    recipe: Annotated[
        str | None, typer.Argument(help="Recipe file or bundled name (default: built-in defaults).")
    ] = None,
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    latency: LatencyOption = True,
    name: Annotated[str | None, typer.Option(help="Run directory name.")] = None,
) -> None:
    """Train the recipe's teacher with its teacher_train recipe, then save and measure it.

    Example: distil train digits --set teacher_train.epochs=5
    """
    train_teacher(
        recipe_from(recipe, overrides),
        out,
        run_name=name,
        console=console,
        show_progress=not quiet,
        measure_latency=latency,
    )
