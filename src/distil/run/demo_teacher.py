"""A teacher trained once with a bigger data budget than its students, kept in the user cache.

The language-model demo's story (docs/lm.md#demo) is the one practitioners see distillation pay in: the
teacher was expensive (more text, more steps), the students get a small budget of text, and the
distilled student also learns the teacher's next-token distribution on that same text. The teacher's
budget is `recipe.data` with `limit` raised to `blocks`; everything else is the recipe's own
(`teacher`, `teacher_train`).

Training the teacher costs most of the demo, so it is done once: `train_teacher` writes its run
directory under :func:`demo_cache_dir` (atomically, as every run directory: a `.NAME.partial` folder
renamed into place when it finishes), named by :func:`teacher_key`, a hash of everything the teacher
depends on. A later demo with the same teacher recipe reuses it; a changed recipe trains a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from distil.config import Recipe, parse_recipe
from distil.errors import ConfigError
from distil.fileio import is_locked
from distil.resources import check_writable
from distil.run.pipeline import load_data, train_teacher
from distil.train.checkpoint import checkpoint_paths

# Bump when what a cached teacher is (or how it is trained) changes without the recipe changing.
CACHE_FORMAT = 1
TEACHER_NAME = "teacher"  # the checkpoint a teacher run directory holds (teacher.safetensors + .json)


@dataclass(frozen=True)
class CachedTeacher:
    """A trained teacher in the cache.

    Attributes:
        checkpoint: the checkpoint path (without suffix) to give as `teacher.checkpoint`.
        run_dir: the teacher's run directory (its report, curves and recipe).
        trained: True when this call trained it, False when it came from the cache.
    """

    checkpoint: Path
    run_dir: Path
    trained: bool


def demo_cache_dir() -> Path:
    """`$DISTIL_CACHE_DIR/demo` when the variable is set, else `~/.cache/distil/demo` (beside `text`)."""
    env = os.environ.get("DISTIL_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "distil") / "demo"


def teacher_recipe(recipe: Recipe, blocks: int) -> Recipe:
    """`recipe` with the teacher's data budget: `data.limit = blocks` (validated like any recipe)."""
    raw = recipe.model_dump(mode="json")
    raw["data"]["limit"] = blocks
    raw["teacher"]["checkpoint"] = None
    return parse_recipe(raw, source=f"{recipe.name} (the teacher's budget: {blocks} blocks)")


def with_teacher(recipe: Recipe, checkpoint: Path) -> Recipe:
    """`recipe` whose teacher is the trained checkpoint (the pipeline then trains only the students)."""
    raw = recipe.model_dump(mode="json")
    raw["teacher"]["checkpoint"] = str(checkpoint)
    return parse_recipe(raw, source=f"{recipe.name} (teacher {checkpoint})")


def teacher_key(recipe: Recipe, corpus: dict[str, Any]) -> str:
    """The cache name of `recipe`'s teacher: a hash of everything it depends on.

    Args:
        recipe: the teacher's recipe (:func:`teacher_recipe`); its `data`, `teacher`, `teacher_train` and
            `trust_code` sections count, the students' do not.
        corpus: what identifies the data read (:func:`corpus_identity`).
    """
    spec = {
        "format": CACHE_FORMAT,
        "python": sys.version,  # the default corpus is this Python's own standard library
        "recipe": {k: recipe.model_dump(mode="json")[k] for k in ("data", "teacher", "teacher_train")},
        "trust_code": recipe.trust_code,
        "corpus": corpus,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"{recipe.name}-teacher-{digest}"


def corpus_identity(recipe: Recipe) -> dict[str, Any]:
    """What the teacher's training data is, beyond its recipe section: its source and size, and for a
    token dataset the cached token stream it reads (named by a hash of the files' paths, sizes and
    mtimes, so edited text under `data.root` is a new teacher)."""
    data = load_data(recipe)
    stream = getattr(data.train, "tokens_path", None)
    return {
        "source": data.source,
        "train": len(data.train),
        "stream": Path(stream).parent.name if stream is not None else None,
    }


def cached_teacher(
    recipe: Recipe,
    blocks: int,
    *,
    cache_dir: Path | None = None,
    console: Console | None = None,
    log_format: str = "auto",
) -> CachedTeacher:
    """The teacher of `recipe` trained on `blocks` training samples, from the cache or trained now.

    Args:
        recipe: the students' recipe (its `data.limit` is their budget).
        blocks: the teacher's training budget (`data.limit` of its own run).
        cache_dir: where teachers are kept (default :func:`demo_cache_dir`).
        console: where to say that the teacher is being trained (its run itself prints nothing).
        log_format: as for `train_teacher`.

    Returns:
        The cached teacher.

    Raises:
        ConfigError: an unwritable cache, or another process training the same teacher right now.
    """
    root = cache_dir if cache_dir is not None else demo_cache_dir()
    t_recipe = teacher_recipe(recipe, blocks)
    name = teacher_key(t_recipe, corpus_identity(t_recipe))
    run_dir = root / name
    checkpoint = run_dir / TEACHER_NAME
    if run_dir.is_dir():
        if not checkpoint_paths(checkpoint)[0].is_file():
            raise ConfigError(
                f"the cached teacher {run_dir} has no {TEACHER_NAME}.safetensors; remove that folder "
                "(rm -r) and run again to train it afresh."
            )
        return CachedTeacher(checkpoint, run_dir, trained=False)
    check_writable(root, "DISTIL_CACHE_DIR")
    # A teacher run killed earlier continues from its last epoch; one running now is refused by name.
    partial = root / f".{name}.partial"
    resume = partial if partial.is_dir() and not is_locked(partial) else None
    if console is not None:
        console.print(
            f"teacher: not in the cache yet; training it once ({blocks} blocks x {recipe.teacher_train.epochs} "
            f"epochs) into {run_dir}{' (continuing an interrupted training)' if resume else ''}",
            highlight=False,
            soft_wrap=True,
        )
    # Its run is the cache's business: no table of its own (the demo measures it on the students' test
    # set) and no `--resume` hint (the next demo continues it by itself).
    result = train_teacher(
        t_recipe,
        root,
        run_name=name,
        console=Console(quiet=True),
        show_progress=False,
        log_format=log_format,
        measure_latency=False,
        resume=resume,
    )
    return CachedTeacher(result.run_dir / TEACHER_NAME, result.run_dir, trained=True)
