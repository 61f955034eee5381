"""`distil recipe list|show`: the bundled recipes to start from."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import console, user_errors
from distil.recipes import bundled_recipes, resolve_recipe

app = typer.Typer(help="Bundled recipes: list them, or print one to copy and edit.", no_args_is_help=True)


@app.command("list")
def list_recipes() -> None:
    """List the bundled recipes."""
    for name in bundled_recipes():
        console.print(name)


@app.command("show")
@user_errors
def show(name: Annotated[str, typer.Argument(help="Bundled recipe name.")]) -> None:
    """Print a bundled recipe (e.g. `distil recipe show digits > my.yaml`)."""
    print(resolve_recipe(name).read_text(encoding="utf-8"), end="")
