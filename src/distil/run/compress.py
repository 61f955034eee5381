"""`compress_checkpoints`: the compression chain on a saved teacher and distilled student."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distil.run.checkpoint_data import DataOptions, load_checkpoint_and_data, recipe_reader_options
from distil.run.options import setting

if TYPE_CHECKING:
    from distil.compress import CompressResult
    from distil.config import Recipe


@dataclass(frozen=True)
class CompressOptions:
    """What `distil compress` does: which checkpoints, which recipe's settings, where the artefacts go."""

    teacher: str = setting("", "The fp32 teacher checkpoint (teaches every fine-tune).")
    student: str = setting("", "The distilled student checkpoint to compress.")
    recipe: Recipe | None = setting(  # noqa: RUF009 (a dataclasses.field, like the others)
        None, "The recipe whose `compress`, `kd` and `data` (reader options) sections apply (None: defaults)."
    )
    out: str = setting("compressed", "Directory for the artefacts and compress.json.")
    latency: bool = setting(True, "Measure latency at batch 1 and 256.")
    data: str | None = setting(None, "Dataset (default: the student's).")
    data_root: str | None = setting(None, "Dataset directory or file.")
    limit: int | None = setting(None, "Use at most this many training samples (fine-tuning, calibration).")
    model_name: str | None = setting(
        None, "The architecture of a plain state_dict student (a registered name or pkg.module:factory)."
    )


@dataclass(frozen=True)
class CompressOutcome:
    """What `compress_checkpoints` wrote and measured.

    Attributes:
        result: the chain's rows (one per stage, all on ONNX Runtime) and details.
        data_name: the dataset they were measured on.
        latency_threads: the ONNX Runtime threads of every latency measurement.
    """

    result: CompressResult
    data_name: str
    latency_threads: int


def compress_checkpoints(
    options: CompressOptions, *, log: Callable[[str], None] | None = None, progress: Any = None
) -> CompressOutcome:
    """Prune -> KD fine-tune -> int8 -> ONNX on existing checkpoints; one row per stage.

    Args:
        options: the checkpoints, recipe and output settings; the recipe's `trust_code` applies.
        log: where progress lines go; None: nowhere.
        progress: the training progress display (see `distil.report.progress.make_progress`).

    Returns:
        The chain's result, with the dataset's name and the latency threads for its table.

    Raises:
        ConfigError: an unwritable `out` (checked before anything is loaded), or bad data options.
        CheckpointError: a checkpoint that cannot be loaded.
    """
    from distil.compress import compress_model
    from distil.config import CompressConfig, Recipe
    from distil.resources import check_writable
    from distil.train.checkpoint import load_checkpoint

    cfg = options.recipe or Recipe()
    check_writable(options.out)  # before fine-tuning, not after it
    data = DataOptions(options.data, options.data_root, options.limit, **recipe_reader_options(cfg))
    student_model, meta, bundle = load_checkpoint_and_data(
        options.student, data, options.model_name, trust_code=cfg.trust_code
    )
    teacher_model, _ = load_checkpoint(options.teacher, trust_code=cfg.trust_code)
    settings = cfg.compress or CompressConfig()
    result = compress_model(
        teacher_model.eval(),
        student_model,
        meta["spec"],
        bundle,
        settings,
        options.out,
        kd=cfg.kd,
        measure_latency=options.latency,
        log=log,
        progress=progress,
    )
    return CompressOutcome(result, bundle.name, settings.latency_threads)
