"""Recipes bundled with distil (also visible as recipes/ at the repository root)."""

from __future__ import annotations

from pathlib import Path

from distil.errors import ConfigError
from distil.registry import unknown_name_message

RECIPES_DIR = Path(__file__).parent


def bundled_recipes() -> list[str]:
    """Names of the bundled recipes (file stems)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe file: an existing path, or the name of a bundled recipe (e.g. "fashion-mnist")."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = RECIPES_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        raise ConfigError(f"recipe file {name_or_path!r} does not exist; check the path")
    raise ConfigError(unknown_name_message("recipe", name_or_path, bundled_recipes()))
