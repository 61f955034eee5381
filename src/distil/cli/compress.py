"""`distil compress`: the compression chain on a trained teacher and distilled student."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import (
    LogFormatOption,
    ModelOption,
    QuietOption,
    SetOption,
    TrustCodeOption,
    check_out,
    command_progress,
    print_metrics_result,
    recipe_from,
    run_console,
    user_errors,
)
from distil.cli.export import DataRootOption, LimitOption, recipe_image_options


@user_errors
def compress(
    teacher: Annotated[str, typer.Argument(help="The fp32 teacher checkpoint (teaches every fine-tune).")],
    student: Annotated[str, typer.Argument(help="The distilled student checkpoint to compress.")],
    recipe: Annotated[
        str | None, typer.Option(help="Recipe file or bundled name whose `compress` and `kd` sections apply.")
    ] = None,
    overrides: SetOption = None,
    out: Annotated[str, typer.Option(help="Directory for the artefacts and compress.json.")] = "compressed",
    latency: Annotated[bool, typer.Option(help="Measure latency at batch 1 and 256.")] = True,
    data: Annotated[str | None, typer.Option(help="Dataset (default: the student's).")] = None,
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
    from distil.cli.export import checkpoint_and_data
    from distil.compress import compress_model
    from distil.config import CompressConfig
    from distil.report import metrics_table
    from distil.train.checkpoint import load_checkpoint

    cfg = recipe_from(recipe, overrides, trust_code=trust_code)
    check_out(out)  # before fine-tuning, not after it
    console = run_console(log_format)
    student_model, meta, bundle = checkpoint_and_data(
        student,
        data,
        data_root,
        limit,
        model_name,
        trust_code=cfg.trust_code,
        options=recipe_image_options(cfg),
    )
    teacher_model, _ = load_checkpoint(teacher, trust_code=cfg.trust_code)
    settings = cfg.compress or CompressConfig()
    with command_progress(log_format, quiet) as progress:
        result = compress_model(
            teacher_model.eval(),
            student_model,
            meta["spec"],
            bundle,
            settings,
            out,
            kd=cfg.kd,
            measure_latency=latency,
            log=console.print,
            progress=progress,
        )
    console.print(
        metrics_table(
            result.metrics,
            result.metrics[0],
            title=f"{bundle.name} test set, ONNX Runtime, {settings.latency_threads} thread(s)",
        )
    )
    console.print(f"artefacts and compress.json in {out}")
    print_metrics_result(log_format, result.metrics, out_dir=out)
