"""The stages of a recipe, each a small function of the runner: teacher, scratch student, distill, compress.

A stage trains (or compresses) with what the runner holds (recipe, data, accelerator, progress display,
run log) and records what it produced; `Runner.execute` opens, guards, measures and summarises around
them. Stage names are `distil.train.stages.Stage` members, so records, sidecars and training-state
folders agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from distil.api import distill, distill_loss, train_model
from distil.config import Recipe
from distil.data import DataBundle
from distil.losses.compose import ComposedLoss
from distil.run.runner import Runner
from distil.train.stages import Stage
from distil.transfer import PreparedStudent, fit_in_phases, prepare_student, teacher_recipe


def train_on_labels(
    runner: Runner, model: nn.Module, cfg: Any, stage: Stage, data: DataBundle | None = None
) -> nn.Module:
    """Train `model` on the labels with `cfg` as stage `stage` (the teacher, or the scratch baseline).

    `data` defaults to the run's; the scratch student of a run with `data.unlabeled` gets the labelled
    part only.
    """
    result = train_model(
        model,
        data if data is not None else runner.data,
        cfg,
        accelerator=runner.accelerator,
        progress=runner.progress,
        on_epoch_end=runner.log,
        description=stage,
    )
    runner.record(stage, result.history)
    return result.model


def teacher_stage(runner: Runner, teacher: nn.Module) -> nn.Module:
    """The teacher, trained with `recipe.teacher_train`."""
    return train_on_labels(runner, teacher, runner.recipe.teacher_train, Stage.TEACHER)


def scratch_stage(runner: Runner, student: nn.Module, data: DataBundle | None = None) -> nn.Module:
    """The label-only baseline: the student trained with `recipe.student_train` and no teacher.

    With `data.unlabeled`, `data` is the labelled part (`distil.data.unlabeled.labeled_part`).
    """
    return train_on_labels(runner, student, runner.recipe.student_train, Stage.STUDENT_SCRATCH, data)


def transfer_into(
    recipe: Recipe, teacher: nn.Module, student: nn.Module, data: DataBundle
) -> PreparedStudent:
    """Apply `recipe.transfer` to `student`; the teacher's recipe comes from its checkpoint sidecar.

    Runs before the run directory exists as well (a dry run on copies, or the real one), so a bad
    transfer writes nothing.
    """
    cfg = recipe.transfer
    teacher_path = recipe.teacher.checkpoint
    teacher_train = None
    if cfg.inherit_recipe:
        teacher_train = teacher_recipe(teacher_path) if teacher_path else recipe.teacher_train
    return prepare_student(
        cfg,
        teacher,
        student,
        recipe.student_train,
        example_inputs=data.train.head(2),
        teacher_train=teacher_train,
    )


def distill_stage(
    runner: Runner,
    teachers: list[nn.Module],
    teacher_weights: list[float] | None,
    student: nn.Module,
    prepared: PreparedStudent,
    data: DataBundle | None = None,
) -> nn.Module:
    """`student` (prepared by `transfer_into`) distilled from `teachers`, in the phases of its schedule.

    `data` defaults to the run's; with `data.unlabeled` it is the transfer set (hidden labels, extra
    unlabelled inputs: `distil.data.unlabeled.transfer_set`). A student initialised from the teacher
    distills with the transferred KD settings (`transfer.kd_temperature`).
    """
    runner.transfer = prepared
    with distiller(
        teachers,
        teacher_weights,
        data if data is not None else runner.data,
        transferred(runner.recipe),
        prepared.train_cfg,
        runner.accelerator,
        runner.progress,
        runner,
    ) as run_distill:
        student, history = fit_in_phases(
            run_distill, student, prepared.train_cfg, prepared.schedule, Stage.STUDENT_KD
        )
    runner.record(Stage.STUDENT_KD, history)
    return student


def transferred(recipe: Recipe) -> Recipe:
    """`recipe` with the KD settings of its (possibly transferred) student (`Recipe.student_kd`)."""
    return recipe.model_copy(update={"kd": recipe.student_kd})


def compress_stage(runner: Runner) -> None:
    """prune -> KD fine-tune -> int8 -> ONNX on the measured KD student: one row per deployed artefact.

    Runs after the measurement, on the models kept as `Stage.TEACHER` and `Stage.STUDENT_KD`.
    """
    from distil.compress import compress_model

    recipe = runner.recipe
    assert recipe.compress is not None
    student = runner.kept_model(Stage.STUDENT_KD)
    compressed = compress_model(
        runner.kept_model(Stage.TEACHER).model,
        student.model,
        student.spec,
        runner.data,
        recipe.compress,
        runner.dir.file("compress"),
        kd=recipe.kd,
        measure_latency=runner.measure_latency,
        accelerator=runner.accelerator,
        on_epoch_end=runner.log,
        log=runner.console.print,
    )
    runner.metrics += compressed.metrics
    runner.histories.update(compressed.histories)


@contextmanager
def distiller(
    teachers: Any,
    teacher_weights: Any,
    data: DataBundle,
    recipe: Recipe,
    cfg: Any,
    accelerator: Any,
    progress: Any,
    run: Any,
) -> Iterator[Callable[[nn.Module, Any, str], Any]]:
    """`distill(model, cfg, description)` with everything else of this run bound (for fit_in_phases).

    The loss is built once, for the whole run (`cfg`, all its epochs), at the first call and carried
    across the phases of an unfreeze schedule: FitNets regressors, CRD heads and memory banks keep what
    they learned, and each phase continues the warm-ups and temperature schedule at the run's epoch
    instead of restarting them. Its feature hooks are removed when the block ends. `run.log` receives
    each epoch's record.
    """
    loss: ComposedLoss | None = None
    epochs_done = 0

    def run_distill(model: nn.Module, phase: Any, description: str) -> Any:
        nonlocal loss, epochs_done
        if loss is None:
            first = teachers[0] if isinstance(teachers, list | tuple) else teachers
            loss = distill_loss(recipe.kd, teacher=first, student=model, data=data, cfg=cfg)
        result = distill(
            teachers,
            model,
            data,
            phase,
            recipe.kd,
            loss=loss,
            first_epoch=epochs_done,
            teacher_weights=teacher_weights,
            accelerator=accelerator,
            progress=progress,
            on_epoch_end=run.log,
            description=description,
        )
        epochs_done += phase.epochs
        return result

    try:
        yield run_distill
    finally:
        if loss is not None:
            loss.close()
