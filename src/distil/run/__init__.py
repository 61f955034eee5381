"""The stages of a recipe over one runner: teacher -> scratch student -> transfer -> distill -> compress.

* :mod:`distil.run.runner` -- the one runner: open the run, guard training, measure, write the summary.
* :mod:`distil.run.stages` -- one small function per stage (teacher, scratch student, distill, compress).
* :mod:`distil.run.pipeline` -- the entry points (`run_pipeline`, `train_teacher`, `distill_student`,
  `transfer_student`), each a list of stages handed to the runner.
* :mod:`distil.run.evaluate` -- models that already exist: load any checkpoint, measure checkpoints.
"""

from distil.run.evaluate import (
    evaluate_checkpoints,
    load_any,
    load_checkpoint_data,
    require_data_for_model,
    trained_data_options,
)
from distil.run.pipeline import (
    distill_student,
    load_data,
    run_pipeline,
    train_teacher,
    transfer_student,
    warn_if_student_larger,
)
from distil.run.runner import PipelineResult

__all__ = [
    "PipelineResult",
    "distill_student",
    "evaluate_checkpoints",
    "load_any",
    "load_checkpoint_data",
    "load_data",
    "require_data_for_model",
    "run_pipeline",
    "train_teacher",
    "trained_data_options",
    "transfer_student",
    "warn_if_student_larger",
]
