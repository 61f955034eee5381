"""The Python API: train a model, distill a student from a teacher, measure them side by side.

The CLI only wraps these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from distil.train.mutual import MutualResult, fit_mutual
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
    teacher: nn.Module | Sequence[nn.Module],
    student: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    kd: KDConfig | None = None,
    *,
    loss: LossFn | None = None,
    teacher_weights: Sequence[float] | None = None,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    description: str = "distill",
) -> FitResult:
    """Train `student` to match the frozen `teacher` on `data`.

    Args:
        teacher: a trained model; it is frozen (eval mode, no gradients) and never updated. A list of
            models distills from the weighted mixture of their softened distributions
            (`distil.train.ensemble.EnsembleTeacher`); feature terms use the first one.
        student: the model to train (from its current weights: random, or transferred).
        data: the dataset both models were built for.
        cfg: the student's training recipe.
        kd: loss settings; with `kd.terms` unset, Hinton KD (temperature, kd_weight, ce_weight), else the
            composed loss of those terms (`distil.losses.compose.build_loss`); ignored when `loss` is given.
        loss: any loss with the signature `loss(student_out, teacher_out, batch) -> dict`.
        teacher_weights: one weight per teacher of an ensemble (default: equal).
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
    teachers = list(teacher) if isinstance(teacher, Sequence) else [teacher]
    for t in teachers:
        check_classes(t, data, "teacher")
    check_classes(student, data, "student")
    teacher = teachers[0]
    composed = None
    if loss is None and kd.terms is not None:
        from distil.losses.compose import build_loss

        composed = build_loss(
            kd,
            student=student,
            teacher=teacher,
            sample_x=data.train.x[:2].to(next(student.parameters()).device),
            num_classes=data.num_classes,
            n_data=len(data.train),
            label_smoothing=cfg.label_smoothing,
            epochs=cfg.epochs,
        )
    loss_fn: LossFn
    if loss is not None:
        loss_fn = loss
    elif composed is not None:
        loss_fn = composed
    else:
        loss_fn = KDLoss(kd.temperature, kd.kd_weight, kd.ce_weight, cfg.label_smoothing)
    if accelerator is None:
        from distil.train.engine import make_accelerator

        accelerator = make_accelerator()
    # The teacher source (cached logits or a live forward pass) is chosen here and recorded in every
    # epoch record, with the reason, so a run says how its targets were produced.
    for t in teachers:
        freeze(t)  # whichever source is used, a teacher is never trained
    augment = data.augment if cfg.augment == "auto" else cfg.augment
    if len(teachers) > 1 or (composed is not None and composed.teacher_capture is not None):
        source, reason = "live", "the loss captures teacher features or mixes several teachers"
    else:
        source, reason = choose_teacher_source(
            cfg.teacher_cache, augment, custom_loss=loss is not None or composed is not None
        )
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
                channels_last=cfg.channels_last,
                temperatures=composed.temperatures() if composed is not None else (kd.temperature,),
            )
        # A top-k cache's tail mass depends on the temperature: look it up at the loss's current one.
        current = composed.current_temperature if composed is not None else lambda: kd.temperature
        teacher_fn = cached.follow(current).to(accelerator.device)
        source_record["teacher_cache"] = info.to_dict()
    else:
        if len(teachers) > 1:
            from distil.train.ensemble import EnsembleTeacher

            teacher_fn = EnsembleTeacher(teachers, teacher_weights, kd.temperature).to(accelerator.device)
        else:
            teacher_fn = LiveTeacher(teacher).to(accelerator.device)
        if cfg.channels_last:
            for t in teachers:
                t.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def log(record: dict[str, Any]) -> None:
        record.update(source_record)
        if on_epoch_end is not None:
            on_epoch_end(record)

    try:
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
    finally:
        if composed is not None:
            composed.close()  # the returned student carries no feature hooks
    for record in result.history:
        record.update(source_record)
    return result


def mutual_learning(
    students: Sequence[nn.Module],
    data: DataBundle,
    cfg: TrainConfig | None = None,
    *,
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    ce_weight: float = 1.0,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    description: str = "mutual",
) -> MutualResult:
    """Train two or more students that teach each other (deep mutual learning; no fixed teacher).

    Each student minimises ce_weight * CE + kd_weight * mean over peers of T^2 KL(p_peer || p_self),
    the peers' predictions held constant. See `distil.train.mutual.fit_mutual`.

    Returns:
        MutualResult with every trained student and per-epoch records (`s{i}_eval_accuracy`, ...).
    """
    cfg = cfg or TrainConfig()
    for i, s in enumerate(students):
        check_classes(s, data, f"student {i}")
    return fit_mutual(
        students,
        data,
        cfg,
        temperature=temperature,
        kd_weight=kd_weight,
        ce_weight=ce_weight,
        accelerator=accelerator,
        progress=progress,
        on_epoch_end=on_epoch_end,
        description=description,
    )
