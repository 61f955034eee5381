"""`distil data export`: write any dataset as an npy-dir folder, which trains with its samples on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distil.cli.common import console, user_errors

app = typer.Typer(
    help="Datasets: write one as an npy-dir folder (samples read from disk).", no_args_is_help=True
)


@app.command("export")
@user_errors
def export(
    name: Annotated[str, typer.Argument(help="Registered dataset name, e.g. fashion-mnist.")],
    directory: Annotated[Path, typer.Argument(help="Folder to write x_train.npy, y_train.npy, ...")],
    data_root: Annotated[str | None, typer.Option(help="The dataset's own data root.")] = None,
) -> None:
    """Write a dataset's raw train/test arrays as .npy files (data.name: npy-dir, data.root: DIR).

    Example: distil data export digits data/digits-npy
    """
    from distil.data import export_npy_dir

    out = export_npy_dir(name, directory, data_root)
    console.print(f"wrote {out} (train with --set data.name=npy-dir --set data.root={out})")
