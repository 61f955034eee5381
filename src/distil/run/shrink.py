"""`shrink_checkpoint`: the most accurate student of a saved teacher that meets a measured budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distil.run.checkpoint_data import recipe_reader_options
from distil.run.options import setting

if TYPE_CHECKING:
    from distil.config import Recipe, ShrinkConfig
    from distil.data import DataBundle
    from distil.shrink import ShrinkResult


@dataclass(frozen=True)
class ShrinkOptions:
    """What `distil shrink` searches for: the teacher, the budget, the recipe, where the search lives.

    Budget fields left at None take the recipe's ``shrink`` section (or its defaults).
    """

    teacher: str = setting("", "The trained teacher checkpoint (or a state_dict with --model).")
    target_latency: str | None = setting(
        None, "Latency budget (median on the target backend), e.g. 0.3ms or 300us."
    )
    target_size: str | None = setting(None, "Budget on the deployed file, e.g. 200kB, 1.5MB.")
    max_drop: float | None = setting(
        None, "Accuracy points below the teacher you accept (reported as met/missed)."
    )
    backend: str = setting("onnxruntime", "Target backend: onnxruntime (CPU) is the one measured.")
    threads: int | None = setting(
        None, "Backend intra-op threads, as on the target (default: the recipe's, 1)."
    )
    batch: int | None = setting(None, "Batch size the budget is for (default: the recipe's, 1).")
    budget_hours: float | None = setting(None, "Wall-clock cap on the search's ranking.")
    recipe: Recipe | None = setting(  # noqa: RUF009 (a dataclasses.field, like the others)
        None, "The recipe whose student_train, kd, shrink and data reader options apply (None: defaults)."
    )
    recipe_data: bool | None = setting(
        None,
        "Read the recipe's dataset (name, root, val_fraction, limit) rather than the teacher's "
        "(None: when a recipe is given); --data wins over both.",
    )
    out: str = setting("shrink", "Search directory; an existing one with state.json is resumed.")
    data: str | None = setting(None, "Dataset (default: the recipe's, else the teacher's).")
    data_root: str | None = setting(None, "Dataset directory or file.")
    limit: int | None = setting(None, "Use at most this many training samples (fine-tuning, calibration).")
    model_name: str | None = setting(
        None, "The architecture of a plain state_dict teacher (a registered name or pkg.module:factory)."
    )


def shrink_settings(options: ShrinkOptions, recipe: Recipe) -> ShrinkConfig:
    """The recipe's shrink settings with the options' budget over them, checked.

    Raises:
        ConfigError: an unknown backend, a value out of range, or no budget at all.
    """
    from distil.config import ShrinkConfig, checked_config
    from distil.errors import ConfigError
    from distil.shrink import parse_latency, parse_size

    if options.backend != "onnxruntime":
        raise ConfigError(
            f"unknown backend {options.backend!r}; valid: onnxruntime (CPU execution provider)."
        )
    given = {
        "target_latency_ms": parse_latency(options.target_latency) if options.target_latency else None,
        "target_size_bytes": parse_size(options.target_size) if options.target_size else None,
        "max_drop": options.max_drop,
        "budget_hours": options.budget_hours,
        "threads": options.threads,
        "batch": options.batch,
    }
    base = recipe.shrink or ShrinkConfig()
    settings = base.model_copy(update={k: v for k, v in given.items() if v is not None})
    # Checks the merged values: a bad option is a clear error (exit 2), not a pydantic traceback.
    settings = checked_config(ShrinkConfig, "distil shrink options", **settings.model_dump())
    if settings.target_latency_ms is None and settings.target_size_bytes is None:
        raise ConfigError("give a budget: --target-latency 0.3ms and/or --target-size 200kB.")
    return settings


def shrink_data(options: ShrinkOptions, recipe: Recipe) -> DataBundle:
    """The data the search trains and measures on: --data, else the recipe's, else the teacher's."""
    from distil.run.evaluate import load_checkpoint_data, require_data_for_model
    from distil.train.checkpoint import read_sidecar, trained_dataset

    require_data_for_model(options.model_name, options.data, options.teacher)
    given_recipe = options.recipe is not None if options.recipe_data is None else options.recipe_data
    if options.data is not None:
        name, root = options.data, options.data_root
    elif given_recipe:
        name, root = recipe.data.name, options.data_root or recipe.data.root
    else:
        name = trained_dataset(read_sidecar(options.teacher), trust_code=recipe.trust_code)
        root = options.data_root
    return load_checkpoint_data(
        options.teacher,
        name,
        root,
        val_fraction=recipe.data.val_fraction if given_recipe else 0.1,
        limit=options.limit or (recipe.data.limit if given_recipe else None),
        options=recipe_reader_options(recipe),
    )


def shrink_checkpoint(
    options: ShrinkOptions, *, log: Callable[[str], None] | None = None, progress: Any = None
) -> ShrinkResult:
    """Search narrower/shallower/pruned versions of a saved teacher for the most accurate one under a budget.

    Latency is measured on ONNX Runtime (fp32 and int8, the faster kept) in a fresh process; candidates
    over budget are dropped before training; the rest are ranked by short distillations (successive
    halving); the winner is distilled fully, compressed, and its saved file re-measured.

    Args:
        options: the teacher, budget, recipe and search directory; the recipe's `trust_code` applies.
        log: where progress lines go; None: nowhere.
        progress: the training progress display (see `distil.report.progress.make_progress`).

    Returns:
        The search's result; ``result.final`` describes the winner and its re-measurement.

    Raises:
        ConfigError: bad options or no budget, or an unwritable `out` (checked before anything is loaded).
        CheckpointError: a teacher that cannot be loaded.
    """
    from distil.config import Recipe
    from distil.resources import check_writable
    from distil.run.evaluate import load_any
    from distil.shrink import shrink_model

    cfg = options.recipe or Recipe()
    settings = shrink_settings(options, cfg)
    check_writable(options.out)
    say = log or (lambda _line: None)
    # The user names the factory (--model or the recipe's teacher.model): sidecars naming it may load.
    user_model = options.model_name or (cfg.teacher.model if ":" in cfg.teacher.model else None)
    bundle = shrink_data(options, cfg)
    teacher_model, meta, _ = load_any(options.teacher, bundle, user_model, trust_code=cfg.trust_code)
    say(
        f"shrink: {meta['spec'].get('name')} teacher on {bundle.name} ({len(bundle.train):,} training samples); "
        f"state and artefacts in {options.out}"
    )
    return shrink_model(
        teacher_model,
        meta["spec"],
        bundle,
        settings,
        options.out,
        train_cfg=cfg.student_train,
        kd=cfg.kd,
        log=log,
        progress=progress,
    )
