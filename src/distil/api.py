"""The Python API: train a model, distill a student from a teacher, measure them side by side.

The CLI only wraps these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from rich.progress import Progress
from torch import nn

from distil.config import KDConfig, TrainConfig
from distil.data import DataBundle
from distil.errors import DataError
from distil.losses import CELoss, KDLoss
from distil.train.cache import choose_teacher_source, main_process_first, open_or_build
from distil.train.engine import FitResult, LossFn, TeacherFn, fit
from distil.train.teacher import LiveTeacher, freeze


def output_classes(model: nn.Module, data: DataBundle) -> int:
    """How many classes `model` predicts, found by running it on one training sample."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(data.train.x[:1].to(next(model.parameters()).device))
    except RuntimeError as exc:
        raise DataError(
            f"the model cannot run on this data's input shape {data.input_shape}: {str(exc).splitlines()[0]}. "
            "Build the model for this dataset's channels and image size."
        ) from None
    finally:
        model.train(was_training)
    return int(out.shape[-1])


def check_classes(model: nn.Module, data: DataBundle, role: str) -> None:
    """Fail clearly when a model's output count differs from the dataset's class count."""
    k = output_classes(model, data)
    if k != data.num_classes:
        raise DataError(
            f"the {role} predicts {k} classes but dataset {data.name!r} has {data.num_classes}; build the "
            f"{role} with num_classes={data.num_classes} (or use a checkpoint trained on this dataset)."
        )


def train_model(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    *,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    description: str = "train",
) -> FitResult:
    """Train `model` on the labels of `data` with cross-entropy (a teacher, or a scratch baseline)."""
    cfg = cfg or TrainConfig()
    check_classes(model, data, "model")
    return fit(
        model,
        data,
        cfg,
        CELoss(cfg.label_smoothing),
        accelerator=accelerator,
        progress=progress,
        on_epoch_end=on_epoch_end,
        description=description,
    )


def distill(
    teacher: nn.Module,
    student: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    kd: KDConfig | None = None,
    *,
    loss: LossFn | None = None,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    description: str = "distill",
) -> FitResult:
    """Train `student` to match the frozen `teacher` on `data`.

    Args:
        teacher: a trained model; it is frozen (eval mode, no gradients) and never updated.
        student: the model to train (from its current weights: random, or transferred).
        data: the dataset both models were built for.
        cfg: the student's training recipe.
        kd: Hinton loss settings (temperature, kd_weight, ce_weight); ignored when `loss` is given.
        loss: any loss with the signature `loss(student_out, teacher_out, batch) -> dict`.
        accelerator, progress, on_epoch_end, description: as in `distil.train.engine.fit`.

    `cfg.teacher_cache` picks the teacher source: with deterministic inputs (augment "none") and the
    built-in KD loss, "auto" computes the teacher's logits once into an on-disk cache
    (`distil.train.cache`) and reuses them across epochs and runs; with random augmentation or a
    custom loss the teacher runs live. Each record states `teacher_source` and `teacher_source_reason`.

    Returns:
        FitResult with the trained student and its per-epoch records.
    """
    cfg = cfg or TrainConfig()
    kd = kd or KDConfig()
    check_classes(teacher, data, "teacher")
    check_classes(student, data, "student")
    loss_fn = loss or KDLoss(kd.temperature, kd.kd_weight, kd.ce_weight, cfg.label_smoothing)
    if accelerator is None:
        from distil.train.engine import make_accelerator

        accelerator = make_accelerator()
    # The teacher source (cached logits or a live forward pass) is chosen here and recorded in every
    # epoch record, with the reason, so a run says how its targets were produced.
    freeze(teacher)  # whichever source is used, the teacher is never trained
    augment = data.augment if cfg.augment == "auto" else cfg.augment
    source, reason = choose_teacher_source(cfg.teacher_cache, augment, custom_loss=loss is not None)
    source_record: dict[str, Any] = {"teacher_source": source, "teacher_source_reason": reason}
    teacher_fn: TeacherFn
    if source == "cache":
        with main_process_first(accelerator):
            cached, info = open_or_build(
                teacher,
                data,
                augment=augment,
                cache_dir=cfg.teacher_cache_dir,
                topk=cfg.teacher_cache_topk,
                device=accelerator.device,
            )
        teacher_fn = cached.to(accelerator.device)
        source_record["teacher_cache"] = info.to_dict()
    else:
        teacher_fn = LiveTeacher(teacher).to(accelerator.device)
        if cfg.channels_last:
            teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def log(record: dict[str, Any]) -> None:
        record.update(source_record)
        if on_epoch_end is not None:
            on_epoch_end(record)

    result = fit(
        student,
        data,
        cfg,
        loss_fn,
        teacher=teacher_fn,
        accelerator=accelerator,
        progress=progress,
        on_epoch_end=log,
        description=description,
    )
    for record in result.history:
        record.update(source_record)
    return result
