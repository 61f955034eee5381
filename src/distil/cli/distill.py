"""`distil distill`: distill the recipe's student from a trained teacher checkpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import check_out, print_result, recipe_from, run_console, user_errors
from distil.cli.options import (
    LatencyOption,
    LayerMapOption,
    LogFormatOption,
    MethodOption,
    OutOption,
    QuietOption,
    ResumeOption,
    SelectionOption,
    SetOption,
    TrustCodeOption,
    method_overrides,
    transfer_overrides,
)
from distil.run import distill_student


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
    method: MethodOption = None,
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    latency: LatencyOption = True,
    resume: ResumeOption = None,
    name: Annotated[str | None, typer.Option(help="Run directory name.")] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init", help="Student initialisation: random (default) or teacher (parameter transfer)."
        ),
    ] = None,
    inherit_recipe: Annotated[
        bool,
        typer.Option(
            "--inherit-recipe",
            help="Train with the teacher's saved recipe; --set student_train.X values still win "
            "(the lr follows a changed batch size linearly).",
        ),
    ] = False,
    selection: SelectionOption = None,
    layer_map: LayerMapOption = None,
    trust_code: TrustCodeOption = False,
) -> None:
    """Train the recipe's student to match a frozen teacher (Hinton KD: kd_weight, ce_weight, temperature).

    Example: distil distill digits --teacher runs/digits-demo-teacher/teacher.safetensors --set kd.temperature=2

    Other methods: distil distill digits --teacher T --method dkd (or --set kd.terms='{ce: 1, fitnet: 100}')

    With transfer: distil distill digits --teacher T --init teacher --inherit-recipe --set student_train.epochs=3
    """
    if resume is None:  # a resumed run writes where it started
        check_out(out)
    extra = [f"teacher.checkpoint={teacher}"] if teacher else []
    extra += method_overrides(method)
    if init:
        extra.append(f"transfer.init={init}")
    if inherit_recipe:
        extra.append("transfer.inherit_recipe=true")
    extra += transfer_overrides(selection, layer_map)
    cfg = recipe_from(recipe, [*(overrides or []), *extra], trust_code=trust_code)
    if inherit_recipe:
        # What the user set on the command line overrides the inherited recipe, as do the recipe's own
        # transfer.override fields.
        given = [
            o.partition("=")[0].strip().removeprefix("student_train.")
            for o in overrides or []
            if o.strip().startswith("student_train.")
        ]
        cfg.transfer.override = sorted({*cfg.transfer.override, *given})
    result = distill_student(
        cfg,
        out,
        run_name=name,
        console=run_console(log_format),
        show_progress=not quiet,
        log_format=log_format,
        measure_latency=latency,
        resume=resume,
    )
    print_result(result, log_format)
