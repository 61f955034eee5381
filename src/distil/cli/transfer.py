"""`distil transfer`: initialise a student from a trained teacher (parameters, structure, recipe)."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import check_out, print_result, recipe_from, run_console, user_errors
from distil.cli.options import (
    LatencyOption,
    LayerMapOption,
    LogFormatOption,
    OutOption,
    QuietOption,
    SelectionOption,
    SetOption,
    TrustCodeOption,
    transfer_overrides,
)
from distil.run import transfer_student


@user_errors
def transfer(
    recipe: Annotated[str | None, typer.Argument(help="Recipe file or bundled name.")] = None,
    teacher: Annotated[
        str | None, typer.Option(help="Teacher checkpoint (NAME.safetensors + NAME.json).")
    ] = None,
    selection: SelectionOption = None,
    layer_map: LayerMapOption = None,
    reuse: Annotated[
        str | None,
        typer.Option(help="Teacher modules the student reuses as they are, e.g. conv1,conv2."),
    ] = None,
    share: Annotated[
        bool, typer.Option("--share", help="Share reused modules with the teacher instead of copying.")
    ] = False,
    trainable: Annotated[
        bool, typer.Option("--trainable", help="Reused modules stay trainable (default: frozen).")
    ] = False,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial", help="Leave tensors that cannot be transferred at random init (default: error)."
        ),
    ] = False,
    overrides: SetOption = None,
    out: OutOption = "runs",
    latency: LatencyOption = False,
    name: Annotated[str | None, typer.Option(help="Run directory name.")] = None,
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    trust_code: TrustCodeOption = False,
) -> None:
    """Initialise the recipe's student from a teacher checkpoint and save it, with a transfer report.

    Exact copies for tensors of the same name and shape, channel selection for a thinner student,
    depth mapping for a shallower one. The report lists where each student tensor came from.

    Example: distil transfer digits --teacher runs/t/teacher --set student.model=largenet
    --set student.kwargs.width=0.5 --selection l1
    """
    check_out(out)
    extra = [f"teacher.checkpoint={teacher}"] if teacher else []
    extra += transfer_overrides(selection, layer_map, reuse, share, trainable, None, partial)
    cfg = recipe_from(recipe, [*(overrides or []), *extra], trust_code=trust_code)
    result = transfer_student(
        cfg, out, run_name=name, console=run_console(log_format), measure_latency=latency
    )
    print_result(result, log_format)
