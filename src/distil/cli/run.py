"""`distil run RECIPE`: the pipeline described by a recipe file."""

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
from distil.run import run_pipeline


@user_errors
def run(
    recipe: Annotated[
        str, typer.Argument(help="A recipe file, or a bundled recipe name (distil recipe list).")
    ],
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    latency: LatencyOption = True,
    resume: ResumeOption = None,
    name: Annotated[
        str | None, typer.Option(help="Run directory name (default: recipe name + time).")
    ] = None,
    trust_code: TrustCodeOption = False,
) -> None:
    """Run a recipe: teacher (trained or loaded), scratch student, distilled student, side-by-side report.

    Example: distil run recipes/fashion-mnist.yaml --set kd.temperature=2
    """
    if resume is None:  # a resumed run writes where it started
        check_out(out)
    result = run_pipeline(
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
