"""`distil layers MODEL`: a model's modules with output shapes, and teacher/student pairs by stage.

Also the `--method NAME` option that `distil distill` uses to pick a distillation method.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from distil.cli.common import console, user_errors
from distil.errors import ConfigError


def method_overrides(method: str | None) -> list[str]:
    """Recipe overrides that select a named method's terms (`kd.terms=...`), or none."""
    if not method:
        return []
    from distil.losses import method_terms

    return [f"kd.terms={json.dumps(method_terms(method))}"]


MethodOption = Annotated[
    str | None,
    typer.Option(
        "--method",
        help="Distillation method by name (kd, dkd, rkl, js, tvd, logit_mse, fitnet, at, sp, rkd, pkt, crd, scratch): "
        "sets kd.terms to its published weights; combine terms with --set kd.terms.NAME=WEIGHT.",
    ),
]


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
    model: Annotated[str, typer.Argument(help="Registered model name (see `distil models`).")],
    teacher: Annotated[
        str | None,
        typer.Option("--teacher", help="A teacher model name: also propose (student, teacher) pairs."),
    ] = None,
    input_shape: Annotated[
        str, typer.Option("--input-shape", help="C,H,W of one input, or F for a feature vector.")
    ] = "3,32,32",
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classes the models predict.")] = 10,
    all_modules: Annotated[
        bool, typer.Option("--all", help="Show nested modules too (default: top two levels).")
    ] = False,
) -> None:
    """List MODEL's modules with their output shapes; with --teacher, propose feature pairs by stage.

    Example: distil layers resnet8x4 --teacher resnet32x4 --num-classes 100
    """
    from distil.features import layer_shapes, propose_pairs, sample_input
    from distil.models import create_model

    shape = _shape(input_shape)
    # A feature vector of F values is sized as F channels of a 1x1 image, as for tabular datasets.
    c, h = (shape[0], 1) if len(shape) == 1 else (shape[0], shape[1])
    student = create_model(model, num_classes=num_classes, in_channels=c, image_size=h)
    x = sample_input(student, shape if len(shape) == 1 else (c, h, h))
    table = Table(title=f"{model}: modules and output shapes (batch dimension omitted)")
    for col in ("module path", "type", "output shape", "params"):
        table.add_column(col)
    for r in layer_shapes(student, x):
        if all_modules or r.depth <= 1:
            table.add_row(r.path, r.kind, "x".join(map(str, r.shape)), f"{r.params:,}")
    console.print(table)
    if teacher:
        t = create_model(teacher, num_classes=num_classes, in_channels=c, image_size=h)
        pairs = propose_pairs(t, student, x)
        if not pairs:
            console.print("no pairs found: the two models share no feature resolution")
            return
        console.print(f"proposed feature pairs (student -> teacher) for {model} <- {teacher}:")
        console.print("kd:\n  feature_pairs:", highlight=False)
        for s_path, t_path in pairs:
            console.print(f"    - [{s_path}, {t_path}]", highlight=False, markup=False)
