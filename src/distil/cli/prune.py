"""`distil prune`: structured (or unstructured) pruning of a checkpoint, then KD fine-tuning."""

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
from distil.run.prune import PruneOptions, prune_checkpoint

H = PruneOptions


@user_errors
def prune(
    checkpoint: Annotated[str, typer.Argument(help=help_of(H, "checkpoint"))],
    out: Annotated[str, typer.Option(help=help_of(H, "out"))] = "pruned",
    method: Annotated[
        Literal["structured", "unstructured"], typer.Option(help=help_of(H, "method"))
    ] = "structured",
    ratio: Annotated[float | None, typer.Option(help=help_of(H, "ratio"))] = None,
    macs_reduction: Annotated[float | None, typer.Option(help=help_of(H, "macs_reduction"))] = None,
    criterion: Annotated[
        Literal["magnitude", "taylor", "bn-scale"], typer.Option(help=help_of(H, "criterion"))
    ] = "magnitude",
    global_pruning: Annotated[
        bool, typer.Option("--global/--uniform", help=help_of(H, "global_pruning"))
    ] = False,
    ignore: Annotated[list[str] | None, typer.Option(help=help_of(H, "ignore"))] = None,
    teacher: Annotated[str | None, typer.Option(help=help_of(H, "teacher"))] = None,
    epochs: Annotated[int, typer.Option(help=help_of(H, "epochs"))] = 3,
    lr: Annotated[float, typer.Option(help=help_of(H, "lr"))] = 0.01,
    data: DataOption = None,
    data_root: DataRootOption = None,
    limit: LimitOption = None,
    model_name: ModelOption = None,
    latency: Annotated[bool, typer.Option(help=help_of(H, "latency"))] = True,
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    trust_code: TrustCodeOption = False,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    on_bad_sample: OnBadSampleOption = None,
) -> None:
    """Prune whole channels by a ratio or a MACs target, then recover accuracy by distillation.

    The result loads with `distil eval` / `load_checkpoint`, without torch-pruning.

    Example: distil prune runs/fm/student_kd.json --macs-reduction 2 --out runs/fm/student_pruned
    """
    from distil.report import metrics_table

    options = PruneOptions(
        checkpoint=checkpoint,
        out=out,
        method=method,
        ratio=ratio,
        macs_reduction=macs_reduction,
        criterion=criterion,
        global_pruning=global_pruning,
        ignore=tuple(ignore or ()),
        teacher=teacher,
        epochs=epochs,
        lr=lr,
        data=DataOptions(data, data_root, limit, image_size, channels, on_bad_sample),
        model_name=model_name,
        latency=latency,
        trust_code=trust_code,
    )
    console = run_console(log_format)
    with command_progress(log_format, quiet) as progress:
        result = prune_checkpoint(options, log=console.print, progress=progress)
    rows = result.metrics
    console.print(metrics_table(rows, rows[0], title=f"{result.data_name} test set"))
    console.print(f"wrote {result.weights} and {result.weights.with_suffix('.json')}")
    print_metrics_result(log_format, rows, checkpoint=result.weights)
