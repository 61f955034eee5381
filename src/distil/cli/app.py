"""The `distil` command: one module per subcommand, each a thin wrapper over the Python API."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

import typer

from distil.cli import (
    compare,
    compress,
    data,
    demo,
    distill,
    evaluate,
    export,
    federate,
    import_,
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


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a Python warning as distil's own one-line notice, without the source file and line."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    text = " ".join(str(message).split())  # one line, whatever the warning's own layout
    typer.echo(f"distil: warning: {text}{kind}", err=True)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """While a command runs, show warnings as one-line notices; the previous hook comes back after."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


@app.callback()
def _each_command(ctx: typer.Context) -> None:
    # Runs before every subcommand; the context closes (restoring the warning hook) when it ends.
    ctx.with_resource(one_line_warnings())


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
app.command("import")(import_.import_)
app.command("compress")(compress.compress)
app.command("shrink")(shrink.shrink)
app.command("federate")(federate.federate)
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


def close_process_group() -> None:
    """End a launcher's process group after a successful command (see distil.train.distributed)."""
    if "torch.distributed" in sys.modules:  # nothing to close when torch was never imported
        from distil.train.distributed import close_process_group as close

        close()


def main() -> None:
    # Like `python -m`, let `pkg.module:factory` names find modules in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app()
    except SystemExit as done:
        if done.code in (0, None):
            close_process_group()
        raise
    close_process_group()


if __name__ == "__main__":
    main()
