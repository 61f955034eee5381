"""`distil demo`: the seed's whole pipeline on a dataset that needs no download."""

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
from distil.pipeline import run_pipeline


@user_errors
def demo(
    dataset: Annotated[
        str, typer.Option(help="digits (bundled with scikit-learn) or fashion-mnist (Debian package).")
    ] = "digits",
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    latency: LatencyOption = True,
) -> None:
    """Train a teacher, a student from scratch and a distilled student, then compare them.

    Example: distil demo            (digits, under a minute on 2 CPU cores)
             distil demo --dataset fashion-mnist --set teacher_train.epochs=2
    """
    recipe = recipe_from(dataset, overrides)
    run_pipeline(recipe, out, console=console, show_progress=not quiet, measure_latency=latency)
