"""`distil demo`: the seed's whole pipeline on a dataset that needs no download."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import (
    LatencyOption,
    LogFormatOption,
    OutOption,
    QuietOption,
    ResumeOption,
    SetOption,
    check_out,
    print_result,
    recipe_from,
    run_console,
    user_errors,
)
from distil.run import run_pipeline


@user_errors
def demo(
    dataset: Annotated[
        str, typer.Option(help="digits (bundled with scikit-learn) or fashion-mnist (Debian package).")
    ] = "digits",
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    latency: LatencyOption = True,
    resume: ResumeOption = None,
) -> None:
    """Train a teacher, a student from scratch and a distilled student, then compare them.

    Example: distil demo            (digits, under a minute on 2 CPU cores)
             distil demo --dataset fashion-mnist --set teacher_train.epochs=2
    """
    if resume is None:  # a resumed run writes where it started
        check_out(out)
    recipe = recipe_from(dataset, overrides)
    result = run_pipeline(
        recipe,
        out,
        console=run_console(log_format),
        show_progress=not quiet,
        log_format=log_format,
        measure_latency=latency,
        resume=resume,
    )
    print_result(result, log_format)
