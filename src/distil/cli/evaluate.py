"""`distil eval`: measure checkpoints side by side (accuracy, agreement, size, MACs, latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distil.cli.common import TrustCodeOption, console, user_errors
from distil.data import load_dataset
from distil.report import metrics_table
from distil.train.checkpoint import _paths, read_sidecar, trained_dataset


@user_errors
def evaluate(
    checkpoints: Annotated[
        list[str], typer.Argument(help="distil checkpoints; the first is the reference (teacher).")
    ],
    data: Annotated[
        str | None, typer.Option(help="Dataset name (default: the one the first checkpoint was trained on).")
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="Dataset directory or file.")] = None,
    latency: Annotated[bool, typer.Option(help="Measure latency and throughput.")] = True,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The architecture of plain state_dict files (weights saved elsewhere, no distil sidecar): "
            "a registered name (distil models) or pkg.module:factory (then needs --data). Naming your "
            "pkg.module:factory also lets distil checkpoints whose sidecar names it load.",
        ),
    ] = None,
    trust_code: TrustCodeOption = False,
) -> None:
    """Measure checkpoints on a test set, the first as the reference for agreement and ratios.

    Example: distil eval runs/digits-demo-*/teacher.json runs/digits-demo-*/student_kd.json

    A teacher trained elsewhere (a plain state_dict and your model code):
    distil eval teacher.pt --model my_models:make_teacher --data digits
    """
    from distil.errors import ConfigError
    from distil.pipeline import evaluate_checkpoints

    first_has_sidecar = _paths(checkpoints[0])[1].is_file() or Path(checkpoints[0]).is_dir()
    if data is None and model is not None and not first_has_sidecar:
        raise ConfigError(
            "--model evaluates plain state_dict files, which do not record their dataset: add --data NAME"
        )
    name = data or trained_dataset(read_sidecar(checkpoints[0]), trust_code=trust_code)
    bundle = load_dataset(name, data_root, val_fraction=0.0)
    metrics = evaluate_checkpoints(
        checkpoints, bundle, measure_latency=latency, model_name=model, trust_code=trust_code
    )
    console.print(
        metrics_table(metrics, metrics[0], title=f"{bundle.name} test set ({len(bundle.test)} samples)")
    )
