"""`distil eval`: measure checkpoints side by side (accuracy, agreement, size, MACs, latency)."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import print_metrics_result, run_console, user_errors
from distil.cli.options import (
    ChannelsOption,
    DataRootOption,
    ImageSizeOption,
    LogFormatOption,
    OnBadSampleOption,
    QuietOption,
    TrustCodeOption,
)
from distil.report import metrics_table
from distil.run.checkpoint_data import DataOptions, EvalOptions, evaluate_checkpoint_files
from distil.run.options import help_of

ModelsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="The architecture of plain state_dict files (weights saved elsewhere, no distil sidecar): a "
        "registered name (distil models) or pkg.module:factory (then needs --data). One --model applies to "
        "every checkpoint; repeat it to give one per checkpoint, in order (a distil checkpoint ignores its "
        "own, its sidecar names the architecture). Naming your pkg.module:factory also lets distil "
        "checkpoints whose sidecar names it load.",
    ),
]


def checkpoint_models(models: list[str] | None, checkpoints: list[str]) -> list[str | None]:
    """The --model of each checkpoint: none, one for all, or one each in order (a BadParameter else)."""
    from distil.run.evaluate import per_path_models

    if models and len(models) not in (1, len(checkpoints)):
        raise typer.BadParameter(
            f"given {len(models)} times for {len(checkpoints)} checkpoints: give one --model for all of them, "
            "or one per checkpoint in the same order (for a distil checkpoint, whose sidecar names its "
            "architecture, any name works in its place).",
            param_hint="--model",
        )
    return per_path_models(models or None, checkpoints)


@user_errors
def evaluate(
    checkpoints: Annotated[list[str], typer.Argument(help=help_of(EvalOptions, "checkpoints"))],
    data: Annotated[
        str | None, typer.Option(help="Dataset name (default: the one the first checkpoint was trained on).")
    ] = None,
    data_root: DataRootOption = None,
    latency: Annotated[bool, typer.Option(help=help_of(EvalOptions, "latency"))] = True,
    model: ModelsOption = None,
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    trust_code: TrustCodeOption = False,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    on_bad_sample: OnBadSampleOption = None,
    outputs: Annotated[str, typer.Option(help=help_of(EvalOptions, "outputs"))] = "check",
) -> None:
    """Measure checkpoints on a test set, the first as the reference for agreement and ratios.

    Example: distil eval runs/digits-demo-*/teacher.json runs/digits-demo-*/student_kd.json

    A teacher trained elsewhere (a plain state_dict and your model code):
    distil eval teacher.pt --model my_models:make_teacher --data digits

    Two plain state_dicts of different architectures, one --model each, in order:
    distil eval teacher.pt student.pt --model my_models:big --model my_models:small --data digits
    """
    options = EvalOptions(
        checkpoints=tuple(checkpoints),
        data=DataOptions(data, data_root, None, image_size, channels, on_bad_sample),
        latency=latency,
        model_name=tuple(checkpoint_models(model, checkpoints)),
        trust_code=trust_code,
        outputs=outputs,
    )
    result = evaluate_checkpoint_files(options)
    metrics = result.metrics
    title = f"{result.data_name} test set ({result.test_samples} samples)"
    run_console(log_format).print(metrics_table(metrics, metrics[0], title=title))
    print_metrics_result(log_format, metrics)
