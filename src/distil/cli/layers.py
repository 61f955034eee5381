"""`distil layers MODEL`: a model's modules with output shapes, and teacher/student pairs by stage."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from distil.cli.common import console, user_errors
from distil.errors import ConfigError
from distil.run.layers import LayersOptions, model_layers
from distil.run.options import help_of

H = LayersOptions


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        dims = ()
    if len(dims) not in (1, 3) or min(dims) < 1:
        raise ConfigError(
            f"--input-shape must be C,H,W (e.g. 3,32,32) or F for feature vectors (e.g. 13), got {text!r}"
        )
    return dims


@user_errors
def layers(
    model: Annotated[str, typer.Argument(help=help_of(H, "model"))],
    teacher: Annotated[str | None, typer.Option("--teacher", help=help_of(H, "teacher"))] = None,
    input_shape: Annotated[str, typer.Option("--input-shape", help=help_of(H, "input_shape"))] = "3,32,32",
    num_classes: Annotated[int, typer.Option("--num-classes", help=help_of(H, "num_classes"))] = 10,
    all_modules: Annotated[
        bool, typer.Option("--all", help="Show nested modules too (default: top two levels).")
    ] = False,
) -> None:
    """List MODEL's modules with their output shapes; with --teacher, propose feature pairs by stage.

    Example: distil layers resnet8x4 --teacher resnet32x4 --num-classes 100
    """
    options = LayersOptions(model, teacher, _shape(input_shape), num_classes)
    result = model_layers(options)
    table = Table(title=f"{model}: modules and output shapes (batch dimension omitted)")
    for col in ("module path", "type", "output shape", "params"):
        table.add_column(col)
    for r in result.layers:
        if all_modules or r.depth <= 1:
            table.add_row(r.path, r.kind, "x".join(map(str, r.shape)), f"{r.params:,}")
    console.print(table)
    if not teacher:
        return
    if not result.pairs:
        console.print("no pairs found: the two models share no feature resolution")
        return
    console.print(f"proposed feature pairs (student -> teacher) for {model} <- {teacher}:")
    console.print("kd:\n  feature_pairs:", highlight=False)
    for s_path, t_path in result.pairs:
        console.print(f"    - [{s_path}, {t_path}]", highlight=False, markup=False)
