"""The stages of a run, by one name each: records' "stage", sidecars' "role", training-state folders.

A stage is a `Stage` member (a `str`, so it compares, hashes, formats and serialises as its value:
run directories and reports written before it existed still read). `fit(..., description=...)` also
takes any other name; these are the ones distil itself uses.
"""

from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    """A stage of training or compression; the value is what run directories and records hold."""

    TRAIN = "train"  # a plain `train_model` / `fit` call
    DISTILL = "distill"  # a plain `distill` call
    TEACHER = "teacher"
    STUDENT = "student"  # a transferred student, before any training
    STUDENT_SCRATCH = "student_scratch"
    STUDENT_KD = "student_kd"
    MUTUAL = "mutual"
    PRUNED = "pruned"
    PRUNE_FINETUNE = "prune_finetune"
    PRUNED_KD = "pruned_kd"
    QAT_KD = "qat_kd"

    def __str__(self) -> str:
        return self.value


UNFROZEN_SUFFIX = "-unfrozen"


def unfrozen(stage: str) -> str:
    """The name of the phase of `stage` trained after its reused modules are unfrozen.

    It is a stage of its own (its own optimizer, log lines and training-state folder), recorded as a
    "phase" of `stage`: e.g. ``unfrozen(Stage.STUDENT_KD) == "student_kd-unfrozen"``.
    """
    return f"{stage}{UNFROZEN_SUFFIX}"


__all__ = ["UNFROZEN_SUFFIX", "Stage", "unfrozen"]
