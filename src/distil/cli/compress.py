"""`distil compress`: the compression chain on a trained teacher and distilled student."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import command_progress, print_metrics_result, recipe_from, run_console, user_errors
from distil.cli.options import (
    DataRootOption,
    LimitOption,
    LogFormatOption,
    ModelOption,
    QuietOption,
    SetOption,
    TrustCodeOption,
)
from distil.run.compress import CompressOptions, compress_checkpoints
from distil.run.options import help_of

H = CompressOptions


@user_errors
def compress(
    teacher: Annotated[str, typer.Argument(help=help_of(H, "teacher"))],
    student: Annotated[str, typer.Argument(help=help_of(H, "student"))],
    recipe: Annotated[
        str | None, typer.Option(help="Recipe file or bundled name whose `compress` and `kd` sections apply.")
    ] = None,
    overrides: SetOption = None,
    out: Annotated[str, typer.Option(help=help_of(H, "out"))] = "compressed",
    latency: Annotated[bool, typer.Option(help=help_of(H, "latency"))] = True,
    data: Annotated[str | None, typer.Option(help=help_of(H, "data"))] = None,
    data_root: DataRootOption = None,
    limit: LimitOption = None,
    model_name: ModelOption = None,
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    trust_code: TrustCodeOption = False,
) -> None:
    """Prune -> KD fine-tune -> int8 -> ONNX on existing checkpoints; one row per stage, all in ONNX Runtime.

    Example: distil compress runs/fm/teacher.json runs/fm/student_kd.json --set compress.prune.macs_reduction=2
    """
    from distil.report import metrics_table

    options = CompressOptions(
        teacher=teacher,
        student=student,
        recipe=recipe_from(recipe, overrides, trust_code=trust_code),
        out=out,
        latency=latency,
        data=data,
        data_root=data_root,
        limit=limit,
        model_name=model_name,
    )
    console = run_console(log_format)
    with command_progress(log_format, quiet) as progress:
        outcome = compress_checkpoints(options, log=console.print, progress=progress)
    rows = outcome.result.metrics
    title = f"{outcome.data_name} test set, ONNX Runtime, {outcome.latency_threads} thread(s)"
    console.print(metrics_table(rows, rows[0], title=title))
    console.print(f"artefacts and compress.json in {out}")
    print_metrics_result(log_format, rows, out_dir=out)
