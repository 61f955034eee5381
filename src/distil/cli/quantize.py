"""`distil quantize`: int8 with ONNX Runtime (post-training static, or QAT + KD), measured against fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from distil.cli.common import (
    LogFormatOption,
    ModelOption,
    QuietOption,
    TrustCodeOption,
    check_out,
    command_progress,
    print_metrics_result,
    run_console,
    user_errors,
)
from distil.cli.export import (
    ChannelsOption,
    DataOption,
    DataRootOption,
    ImageSizeOption,
    LimitOption,
    OnBadSampleOption,
    checkpoint_and_data,
    image_options,
)


@user_errors
def quantize(
    checkpoint: Annotated[str, typer.Argument(help="The distil checkpoint to quantize.")],
    out: Annotated[str, typer.Option(help="Directory for fp32.onnx and int8.onnx.")] = "quantized",
    mode: Annotated[
        Literal["static", "qat"], typer.Option(help="static: calibrate and quantize; qat: QAT + KD first.")
    ] = "static",
    calibration_size: Annotated[int, typer.Option(help="Training samples used for calibration.")] = 512,
    fmt: Annotated[
        Literal["auto", "qoperator", "qdq"],
        typer.Option("--format", help="ONNX int8 graph format; auto = measure both, keep the faster."),
    ] = "auto",
    per_channel: Annotated[
        bool | None, typer.Option("--per-channel/--per-tensor", help="Weight scales (default: measure both).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Module path kept in fp32 (repeatable).")] = None,
    teacher: Annotated[
        str | None, typer.Option(help="QAT: the fp32 teacher (default: the model's own fp32 copy).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="QAT + KD epochs.")] = 2,
    lr: Annotated[float, typer.Option(help="QAT learning rate.")] = 0.005,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for every latency measurement.")] = 1,
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
    import copy

    from distil.compress import compress_model
    from distil.config import CompressConfig, QuantizeConfig, TrainConfig, checked_config
    from distil.report import metrics_table
    from distil.train.checkpoint import load_checkpoint

    check_out(out)
    quantize_cfg = checked_config(
        QuantizeConfig,
        "distil quantize options",
        mode=mode,
        calibration_size=calibration_size,
        format=fmt,
        per_channel=per_channel,
        exclude=exclude or [],
    )
    console = run_console(log_format)
    model, meta, bundle = checkpoint_and_data(
        checkpoint,
        data,
        data_root,
        limit,
        model_name,
        trust_code=trust_code,
        options=image_options(image_size, channels, on_bad_sample),
    )
    reference = load_checkpoint(teacher, trust_code=trust_code)[0].eval() if teacher else copy.deepcopy(model)
    cfg = CompressConfig(
        prune=None,
        finetune=TrainConfig(epochs=epochs, lr=lr),
        quantize=quantize_cfg,
        latency_threads=threads,
    )
    with command_progress(log_format, quiet) as progress:  # QAT trains
        result = compress_model(
            reference,
            model,
            meta["spec"],
            bundle,
            cfg,
            out,
            include_teacher=teacher is not None,
            progress=progress,
        )
    q = result.details["quantize"]
    rows = result.metrics
    console.print(
        metrics_table(rows, rows[0], title=f"{bundle.name} test set, ONNX Runtime, {threads} thread(s)")
    )
    console.print(
        f"kept format {q['format']}, per_channel={q['per_channel']} (batch-1 ms of each candidate: "
        + ", ".join(
            f"{c['format']}/{'pc' if c['per_channel'] else 'pt'} {c['latency_b1_ms']:.3f}"
            for c in q["candidates"]
        )
        + ")"
    )
    if q["float_nodes"]:
        console.print(f"left in fp32 by the quantizer: {', '.join(q['float_nodes'])}")
    console.print(f"wrote {Path(out) / 'int8.onnx'}")
    print_metrics_result(log_format, rows, out_dir=out)
