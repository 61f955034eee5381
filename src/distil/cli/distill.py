"""`distil distill`: distill the recipe's student from a trained teacher checkpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import (
    LatencyOption,
    LogFormatOption,
    OutOption,
    QuietOption,
    SetOption,
    print_result,
    recipe_from,
    run_console,
    user_errors,
)
from distil.pipeline import distill_student


@user_errors
def distill(
    recipe: Annotated[str | None, typer.Argument(help="Recipe file or bundled name.")] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Teacher checkpoint: a distil checkpoint (NAME.safetensors + NAME.json), or a "
            ".safetensors/.pt state_dict for the recipe's teacher.model."
        ),
    ] = None,
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    latency: LatencyOption = True,
    name: Annotated[str | None, typer.Option(help="Run directory name.")] = None,
) -> None:
    """Train the recipe's student to match a frozen teacher (Hinton KD: kd_weight, ce_weight, temperature).

    Example: distil distill digits --teacher runs/digits-demo-teacher/teacher.safetensors --set kd.temperature=2
    """
    extra = [f"teacher.checkpoint={teacher}"] if teacher else []
    cfg = recipe_from(recipe, [*(overrides or []), *extra])
    result = distill_student(
        cfg,
        out,
        run_name=name,
        console=run_console(log_format),
        show_progress=not quiet,
        log_format=log_format,
        measure_latency=latency,
    )
    print_result(result, log_format)
