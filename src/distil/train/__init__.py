"""The training engine: loop, optimizers, teacher sources, checkpoints and run directories."""

from distil.train.checkpoint import load_checkpoint, save_checkpoint
from distil.train.engine import FitResult, fit, make_accelerator
from distil.train.runs import RunDir
from distil.train.teacher import LiveTeacher, freeze

__all__ = [
    "FitResult",
    "LiveTeacher",
    "RunDir",
    "fit",
    "freeze",
    "load_checkpoint",
    "make_accelerator",
    "save_checkpoint",
]
