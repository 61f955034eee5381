"""`distil data export` / `distil data shards`: write data in the on-disk formats that train from disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from distil.cli.common import console, user_errors

app = typer.Typer(
    help="Datasets: write one as an npy-dir folder, or images as WebDataset shards (samples read from disk).",
    no_args_is_help=True,
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


@app.command("shards")
@user_errors
def shards(
    source: Annotated[
        Path, typer.Argument(help="An image folder (DIR/<class>/...) or a manifest .csv/.jsonl.")
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write the tar shards and shards.json into.")],
    shard_size: Annotated[int, typer.Option(help="Images per shard.")] = 1000,
    on_bad_sample: Annotated[
        Literal["error", "skip"],
        typer.Option(
            help="skip: leave files that are not readable images out (counted by reason) instead of stopping."
        ),
    ] = "error",
) -> None:
    """Write images as WebDataset tar shards with an index (data.name: shards, data.root: OUT).

    Every image is decoded once first, so a bad file stops the command before anything is written;
    shards are written under temporary names and renamed, the index last.

    Example: distil data shards photos/ data/photos-shards --shard-size 5000
    """
    from distil.data.shards import write_shards

    index = write_shards(source, out, shard_size=shard_size, on_bad_sample=on_bad_sample)
    written = len(list(out.glob("*.tar")))
    # What the decode check found: files left out by reason, EXIF-rotated, 16-bit, animated images.
    for key, line in json.loads(index.read_text(encoding="utf-8")).get("extra", {}).items():
        console.print(f"{key}: {line}", highlight=False, soft_wrap=True, markup=False)
    console.print(
        f"wrote {written} shard(s) and {index} (train with --set data.name=shards --set data.root={out})"
    )
