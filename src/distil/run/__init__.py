"""The stages of a recipe over one runner: teacher -> scratch student -> transfer -> distill -> compress.

* :mod:`distil.run.runner` -- the one runner: open the run, guard training, measure, write the summary.
* :mod:`distil.run.stages` -- one small function per stage (teacher, scratch student, distill, compress).
* :mod:`distil.run.pipeline` -- the entry points (`run_pipeline`, `train_teacher`, `distill_student`,
  `transfer_student`), each a list of stages handed to the runner.
* :mod:`distil.run.evaluate` -- models that already exist: load any checkpoint, measure checkpoints.
* :mod:`distil.run.prune`, :mod:`~distil.run.quantize`, :mod:`~distil.run.export`,
  :mod:`~distil.run.compress`, :mod:`~distil.run.shrink`, :mod:`~distil.run.layers` -- what the commands
  on existing checkpoints do, each one function taking a small documented options dataclass (the
  `distil` command only parses, calls it and prints its result).
"""

from distil.run.checkpoint_data import DataOptions, load_checkpoint_and_data
from distil.run.compress import CompressOptions, CompressOutcome, compress_checkpoints
from distil.run.evaluate import (
    EvalOptions,
    EvalOutcome,
    evaluate_checkpoint_files,
    evaluate_checkpoints,
    load_any,
    load_checkpoint_data,
    require_data_for_model,
    trained_data_options,
)
from distil.run.export import ExportOptions, ExportOutcome, export_checkpoint
from distil.run.layers import LayersOptions, LayersOutcome, model_layers
from distil.run.pipeline import (
    distill_student,
    load_data,
    run_pipeline,
    train_teacher,
    transfer_student,
    warn_if_student_larger,
)
from distil.run.prune import PruneOptions, PruneOutcome, prune_checkpoint
from distil.run.quantize import QuantizeOptions, QuantizeOutcome, quantize_checkpoint
from distil.run.runner import PipelineResult
from distil.run.shrink import ShrinkOptions, shrink_checkpoint

__all__ = [
    "CompressOptions",
    "CompressOutcome",
    "DataOptions",
    "EvalOptions",
    "EvalOutcome",
    "ExportOptions",
    "ExportOutcome",
    "LayersOptions",
    "LayersOutcome",
    "PipelineResult",
    "PruneOptions",
    "PruneOutcome",
    "QuantizeOptions",
    "QuantizeOutcome",
    "ShrinkOptions",
    "compress_checkpoints",
    "distill_student",
    "evaluate_checkpoint_files",
    "evaluate_checkpoints",
    "export_checkpoint",
    "load_any",
    "load_checkpoint_and_data",
    "load_checkpoint_data",
    "load_data",
    "model_layers",
    "prune_checkpoint",
    "quantize_checkpoint",
    "require_data_for_model",
    "run_pipeline",
    "shrink_checkpoint",
    "train_teacher",
    "trained_data_options",
    "transfer_student",
    "warn_if_student_larger",
]
