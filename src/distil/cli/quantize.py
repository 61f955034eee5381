"""`distil quantize`: int8 with ONNX Runtime (post-training static, or QAT + KD), measured against fp32."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from distil.cli.common import command_progress, print_metrics_result, run_console, user_errors
from distil.cli.options import (
    ChannelsOption,
    DataOption,
    DataRootOption,
    ImageSizeOption,
    LimitOption,
    LogFormatOption,
    ModelOption,
    OnBadSampleOption,
    QuietOption,
    TrustCodeOption,
)
from distil.run.checkpoint_data import DataOptions
from distil.run.options import help_of
from distil.run.quantize import QuantizeOptions, QuantizeOutcome, quantize_checkpoint

H = QuantizeOptions


@user_errors
def quantize(
    checkpoint: Annotated[str, typer.Argument(help=help_of(H, "checkpoint"))],
    out: Annotated[str, typer.Option(help=help_of(H, "out"))] = "quantized",
    mode: Annotated[Literal["static", "qat"], typer.Option(help=help_of(H, "mode"))] = "static",
    calibration_size: Annotated[int, typer.Option(help=help_of(H, "calibration_size"))] = 512,
    fmt: Annotated[
        Literal["auto", "qoperator", "qdq"], typer.Option("--format", help=help_of(H, "format"))
    ] = "auto",
    per_channel: Annotated[
        bool | None, typer.Option("--per-channel/--per-tensor", help=help_of(H, "per_channel"))
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help=help_of(H, "exclude"))] = None,
    teacher: Annotated[str | None, typer.Option(help=help_of(H, "teacher"))] = None,
    epochs: Annotated[int, typer.Option(help=help_of(H, "epochs"))] = 2,
    lr: Annotated[float, typer.Option(help=help_of(H, "lr"))] = 0.005,
    threads: Annotated[int, typer.Option(help=help_of(H, "threads"))] = 1,
    data: DataOption = None,
    data_root: DataRootOption = None,
    limit: LimitOption = None,
    model_name: ModelOption = None,
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    trust_code: TrustCodeOption = False,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    on_bad_sample: OnBadSampleOption = None,
) -> None:
    """Quantize to int8 with ONNX Runtime and report fp32 vs int8 on the same runtime.

    Example: distil quantize runs/fm/student_kd.json --out runs/fm/int8
    """
    from distil.report import metrics_table

    options = QuantizeOptions(
        checkpoint=checkpoint,
        out=out,
        mode=mode,
        calibration_size=calibration_size,
        format=fmt,
        per_channel=per_channel,
        exclude=tuple(exclude or ()),
        teacher=teacher,
        epochs=epochs,
        lr=lr,
        threads=threads,
        data=DataOptions(data, data_root, limit, image_size, channels, on_bad_sample),
        model_name=model_name,
        trust_code=trust_code,
    )
    console = run_console(log_format)
    with command_progress(log_format, quiet) as progress:  # QAT trains
        result = quantize_checkpoint(options, progress=progress)
    rows = result.metrics
    console.print(
        metrics_table(rows, rows[0], title=f"{result.data_name} test set, ONNX Runtime, {threads} thread(s)")
    )
    console.print(choice_line(result))
    if result.details["float_nodes"]:
        console.print(f"left in fp32 by the quantizer: {', '.join(result.details['float_nodes'])}")
    console.print(f"wrote {result.int8_path}")
    print_metrics_result(log_format, rows, out_dir=out)


def choice_line(result: QuantizeOutcome) -> str:
    """The line saying which int8 format was kept, with each candidate's batch-1 latency."""
    q = result.details
    candidates = ", ".join(
        f"{c['format']}/{'pc' if c['per_channel'] else 'pt'} {c['latency_b1_ms']:.3f}"
        for c in q["candidates"]
    )
    return f"kept format {q['format']}, per_channel={q['per_channel']} (batch-1 ms of each candidate: {candidates})"
