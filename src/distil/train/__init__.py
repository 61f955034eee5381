"""The training engine: loop, optimizers, checkpoints and run directories (teacher sources: distil.teachers)."""

from distil.train.checkpoint import load_checkpoint, save_checkpoint
from distil.train.engine import FitResult, fit, make_accelerator
from distil.train.runs import RunDir

__all__ = [
    "FitResult",
    "RunDir",
    "fit",
    "load_checkpoint",
    "make_accelerator",
    "save_checkpoint",
]
