"""The stages of a recipe over one runner: teacher -> scratch student -> transfer -> distill -> compress."""

from distil.run.pipeline import (
    PipelineResult,
    distill_student,
    evaluate_checkpoints,
    load_any,
    load_data,
    require_data_for_model,
    run_pipeline,
    train_teacher,
    transfer_student,
    warn_if_student_larger,
)

__all__ = [
    "PipelineResult",
    "distill_student",
    "evaluate_checkpoints",
    "load_any",
    "load_data",
    "require_data_for_model",
    "run_pipeline",
    "train_teacher",
    "transfer_student",
    "warn_if_student_larger",
]
