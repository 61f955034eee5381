"""`distil prune`: structured (or unstructured) pruning of a checkpoint, then KD fine-tuning."""

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
from distil.train.stages import Stage


@user_errors
def prune(
    checkpoint: Annotated[str, typer.Argument(help="The distil checkpoint to prune.")],
    out: Annotated[
        str, typer.Option(help="Checkpoint name to write (NAME.safetensors + NAME.json).")
    ] = "pruned",
    method: Annotated[
        Literal["structured", "unstructured"],
        typer.Option(help="structured: remove channels (smaller, faster); unstructured: zero weights."),
    ] = "structured",
    ratio: Annotated[float | None, typer.Option(help="Fraction of channels (or weights) removed.")] = None,
    macs_reduction: Annotated[
        float | None, typer.Option(help="Structured: prune until MACs fall this many times (e.g. 2).")
    ] = None,
    criterion: Annotated[
        Literal["magnitude", "taylor", "bn-scale"], typer.Option(help="Channel importance.")
    ] = "magnitude",
    global_pruning: Annotated[
        bool, typer.Option("--global/--uniform", help="Rank channels across layers, or prune each alike.")
    ] = False,
    ignore: Annotated[
        list[str] | None, typer.Option(help="Module path kept unpruned (repeatable; default: classifier).")
    ] = None,
    teacher: Annotated[
        str | None, typer.Option(help="Teacher for KD fine-tuning (default: the unpruned model itself).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="KD fine-tuning epochs (0 = none).")] = 3,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = 0.01,
    data: DataOption = None,
    data_root: DataRootOption = None,
    limit: LimitOption = None,
    model_name: ModelOption = None,
    latency: Annotated[bool, typer.Option(help="Measure latency and throughput.")] = True,
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
    import copy

    import torch

    from distil.api import distill
    from distil.compress import finish_pruning_, prune
    from distil.compress.sparsity import NO_SPEEDUP_NOTE
    from distil.config import PruneConfig, TrainConfig, checked_config
    from distil.errors import ConfigError
    from distil.measure import measure_model, predict
    from distil.report import metrics_table
    from distil.train.checkpoint import load_checkpoint, save_checkpoint

    check_out(out, is_file=True)  # before fine-tuning, not after it
    if method == "structured" and ratio is None and macs_reduction is None:
        raise ConfigError("give --ratio (e.g. 0.3) or --macs-reduction (e.g. 2) for structured pruning.")
    if method == "unstructured" and ratio is None:
        raise ConfigError("unstructured pruning needs --ratio (the fraction of weights zeroed).")
    cfg = checked_config(
        PruneConfig,
        "distil prune options",
        method=method,
        ratio=ratio,
        macs_reduction=macs_reduction if ratio is None else None,
        criterion=criterion,
        global_pruning=global_pruning,
        ignore=ignore,
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
    shape = tuple(bundle.input_shape)
    calibration = (bundle.train.head(256), bundle.train.labels[:256]) if criterion == "taylor" else None
    result = prune(
        model, cfg, spec=meta["spec"], example_inputs=torch.zeros((1, *shape)), calibration=calibration
    )
    pruned, spec = result.model, result.spec
    if result.sparsity is None:
        console.print(
            f"pruned {result.pruning_ratio:.1%} of channels: MACs {result.base_macs:,} -> {result.macs:,} "
            f"({result.macs_reduction:.2f}x fewer), params {result.base_params:,} -> {result.params:,}"
        )
    else:
        console.print(f"zeroed {result.sparsity.sparsity:.1%} of prunable weights. Note: {NO_SPEEDUP_NOTE}.")
    if epochs > 0:
        finetune = TrainConfig(epochs=epochs, lr=lr)
        with command_progress(log_format, quiet) as progress:
            pruned = distill(
                reference, pruned, bundle, finetune, progress=progress, description=Stage.PRUNE_FINETUNE
            ).model
    finish_pruning_(pruned, result)
    weights = save_checkpoint(
        out, pruned.cpu().eval(), spec, {"role": Stage.PRUNED, "data": bundle.describe()}
    )
    x, y = bundle.test.head(len(bundle.test)), bundle.test.labels
    rows = [
        measure_model(
            "before", model, x, y, input_shape=shape, teacher_logits=predict(reference, x), latency=latency
        ),
        measure_model(
            "pruned",
            pruned,
            x,
            y,
            input_shape=shape,
            teacher_logits=predict(reference, x),
            weights_path=weights,
            latency=latency,
        ),
    ]
    console.print(metrics_table(rows, rows[0], title=f"{bundle.name} test set"))
    console.print(f"wrote {weights} and {Path(weights).with_suffix('.json')}")
    print_metrics_result(log_format, rows, checkpoint=weights)
