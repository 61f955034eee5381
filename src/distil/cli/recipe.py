"""`distil recipe list|show|new`: the bundled recipes, and a commented template to start your own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel

from distil.cli.common import check_out, console, recipe_from, user_errors
from distil.cli.options import SetOption
from distil.errors import ConfigError
from distil.fileio import atomic_write_text
from distil.recipes import bundled_recipes, resolve_recipe

app = typer.Typer(
    help="Recipes: list the bundled ones, print one, or write a commented template to edit.",
    no_args_is_help=True,
)


@app.command("list")
def list_recipes() -> None:
    """List the bundled recipes.

    Example: distil recipe list
    """
    for name in bundled_recipes():
        console.print(name)


@app.command("show")
@user_errors
def show(name: Annotated[str, typer.Argument(help="Bundled recipe name (or a recipe file).")]) -> None:
    """Print a bundled recipe, comments included, to read or copy.

    Example: distil recipe show digits > my-recipe.yaml
    """
    print(resolve_recipe(name).read_text(encoding="utf-8"), end="")


def _scalar(value: Any) -> str:
    # Flow style keeps lists and dicts on the key's line, so the comment can follow.
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def commented_yaml(model: BaseModel, indent: int = 0) -> str:
    """A recipe as YAML with every key present and each documented key's description as a comment."""
    lines: list[str] = []
    pad = "  " * indent
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            doc = (type(value).__doc__ or "").strip().splitlines()
            comment = f"  # {doc[0]}" if doc else ""
            lines.append(f"{pad}{name}:{comment}")
            lines.append(commented_yaml(value, indent + 1))
            continue
        text = _scalar(value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
        comment = f"  # {info.description}" if info.description else ""
        lines.append(f"{pad}{name}: {text}{comment}")
    return "\n".join(lines)


_HEADER = """\
# A distil recipe: every key is shown with its value; delete the ones you do not change.
# Run it:       distil run {path}
# Override:     distil run {path} --set student_train.lr=0.1 --set kd.temperature=2
# Your model:   teacher.model / student.model take a registered name (distil models) or
#               pkg.module:factory, a function (num_classes, in_channels, image_size, **kwargs) -> nn.Module.
# Your weights: teacher.checkpoint takes a distil checkpoint, or a .pt/.safetensors state_dict.
# Unknown keys are rejected with the closest valid one, so typos cannot pass silently.
"""


@app.command("new")
@user_errors
def new(
    path: Annotated[str, typer.Argument(help="The recipe file to write, e.g. my-recipe.yaml.")],
    start: Annotated[
        str, typer.Option("--from", help="Bundled recipe (or file) to start from: see `distil recipe list`.")
    ] = "digits",
    overrides: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists.")] = False,
) -> None:
    """Write a commented recipe to edit: every key with its value, starting from a bundled recipe.

    The result is validated first, so the file always loads.

    Example: distil recipe new my.yaml --from fashion-mnist --set name=my-run --set student.kwargs.width=0.5
    """
    target = Path(path)
    if target.suffix not in (".yaml", ".yml"):
        raise ConfigError(
            f"recipe file {path!r} should end in .yaml (e.g. {target.stem or 'my-recipe'}.yaml)"
        )
    if target.exists() and not force:
        raise ConfigError(f"{path!r} already exists; choose another name or pass --force to overwrite it")
    check_out(target, is_file=True, option="recipe file path")
    recipe = recipe_from(start, overrides)
    text = _HEADER.format(path=path) + commented_yaml(recipe) + "\n"
    atomic_write_text(target, text)
    console.print(f"wrote {path} (from {start}); run it with: distil run {path}")
