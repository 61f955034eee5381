"""The `distil` command: one module per subcommand, each a thin wrapper over the Python API."""

from __future__ import annotations

import os
import sys

import typer

from distil.cli import (
    compare,
    compress,
    data,
    demo,
    distill,
    evaluate,
    export,
    layers,
    prune,
    quantize,
    recipe,
    report,
    run,
    shrink,
    train,
    transfer,
)
from distil.cli.common import console

app = typer.Typer(
    name="distil",
    help="Make neural networks smaller and faster: distillation, knowledge transfer, measurement.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("demo")(demo.demo)
app.command("run")(run.run)
app.command("train")(train.train)
app.command("distill")(distill.distill)
app.command("eval")(evaluate.evaluate)
app.command("layers")(layers.layers)
app.command("transfer")(transfer.transfer)
app.command("report")(report.report)
app.command("compare")(compare.compare)
app.command("prune")(prune.prune)
app.command("quantize")(quantize.quantize)
app.command("export")(export.export)
app.command("compress")(compress.compress)
app.command("shrink")(shrink.shrink)
app.add_typer(recipe.app, name="recipe")
app.add_typer(data.app, name="data")


@app.command("models")
def models() -> None:
    """List the registered model names (any `pkg.module:factory` works too).

    Example: distil models
    """
    from distil.models import list_models

    for name in list_models():
        console.print(name)


def main() -> None:
    # Like `python -m`, let `pkg.module:factory` names find modules in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    app()


if __name__ == "__main__":
    main()
