"""`distil train`: train a teacher (or any model) on labels from a recipe."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import check_out, print_result, recipe_from, run_console, user_errors
from distil.cli.options import (
    LatencyOption,
    LogFormatOption,
    OutOption,
    QuietOption,
    ResumeOption,
    SetOption,
    TrustCodeOption,
)
from distil.run import train_teacher


@user_errors
def train(
    recipe: Annotated[
        str | None, typer.Argument(help="Recipe file or bundled name (default: built-in defaults).")
    ] = None,
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    latency: LatencyOption = True,
    resume: ResumeOption = None,
    name: Annotated[str | None, typer.Option(help="Run directory name.")] = None,
    trust_code: TrustCodeOption = False,
) -> None:
    """Train the recipe's teacher with its teacher_train recipe, then save and measure it.

    Example: distil train digits --set teacher_train.epochs=5
    """
    if resume is None:  # a resumed run writes where it started
        check_out(out)
    result = train_teacher(
        recipe_from(recipe, overrides, trust_code=trust_code),
        out,
        run_name=name,
        console=run_console(log_format),
        show_progress=not quiet,
        log_format=log_format,
        measure_latency=latency,
        resume=resume,
    )
    print_result(result, log_format)
