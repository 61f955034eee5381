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

from distil.config import KDConfig, TeacherCacheConfig, TrainConfig, cache_settings
from distil.data import DataBundle
from distil.data.text import LANGUAGE_MODELING
from distil.errors import ConfigError, DataError
from distil.losses import CELoss
from distil.losses.compose import ComposedLoss
from distil.losses.protocol import DeclaresTeacherNeeds, DistillationLoss
from distil.losses.registry import Term
from distil.teachers.cache import (
    CachedTeacher,
    CacheInfo,
    TeacherViews,
    choose_teacher_source,
    main_process_first,
    open_or_build,
)
from distil.teachers.live import LiveTeacher, freeze
from distil.teachers.outputs import check_teacher_outputs
from distil.teachers.seqcache import SparseCachedTeacher, open_run_cache, sparse_cache_blocker
from distil.train.engine import FitResult, LossFn, TeacherFn, augmenter_for, fit
from distil.train.fsdp import check_fsdp, shard_copy, sharding_info
from distil.train.mutual import Cohort, MutualLoss, MutualResult
from distil.train.stages import Stage


def output_classes(model: nn.Module, data: DataBundle) -> int:
    """How many classes `model` predicts, found by running it on one training sample."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(data.train.head(1).to(next(model.parameters()).device))
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


# Terms that read the true class of every sample: a mixed (mixup/cutmix) sample has none.
_LABEL_TERMS = ("ce", "dkd")


def check_mixing(cfg: TrainConfig, loss: LossFn | None) -> None:
    """Refuse mixup/cutmix for a loss that trains on labels: a mixed batch's labels are all -100.

    Function matching (teacher and student on the same mixed view) trains on teacher-matching terms
    only, so `cfg.mixing` needs a teacher and a loss without `ce`/`dkd`.

    Raises:
        ConfigError: with the fix.
    """
    if cfg.mixing == "none":
        return
    # Only a composed loss names its terms; any other loss may read labels.
    weights = loss.weights if isinstance(loss, ComposedLoss) else None
    label_terms = sorted(t for t in _LABEL_TERMS if weights is not None and weights.get(t, 0) > 0)
    if weights is None or label_terms:
        what = f"terms {', '.join(label_terms)} read" if label_terms else "this loss reads"
        raise ConfigError(
            f"mixing={cfg.mixing!r} mixes pairs of samples, whose labels are then unknown (-100), but {what} "
            "labels. Fix: distill with teacher-matching terms only (function matching: --set 'kd.terms={kd: "
            "1}'), or set mixing: none."
        )


def check_topk_terms(cache: TeacherCacheConfig, loss: Any) -> None:
    """Refuse a dense top-k teacher cache (`teacher_cache.form: topk`) under teacher terms other than kd.

    The cache keeps the k largest logits and fills the rest with one value that preserves the softened
    tail mass: KD's KL is built for that, but rkl, js, tvd, logit_mse and dkd then read made-up logits
    (logit_mse 17.96 live vs 13.16 cached in one run) and would train on another target silently.

    Raises:
        ConfigError: naming the terms and the fix.
    """
    if cache.form != "topk" or not isinstance(loss, ComposedLoss):
        return  # only a composed loss names its terms
    others = [
        name
        for name, term in loss.terms.items()
        if name != "kd" and isinstance(term, Term) and term.needs_teacher
    ]
    if others:
        raise ConfigError(
            f"teacher_cache.form=topk (k={cache.k}) caches the top-k teacher logits with a tail fill, which "
            f"serves only the kd term, but terms {', '.join(others)} compare the teacher's logits too. Fix: "
            "teacher_cache.form=full (the full logits are cached), or teacher_cache.mode=off (the teacher "
            "runs live)."
        )


def train_model(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    *,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    description: str = Stage.TRAIN,
) -> FitResult:
    """Train `model` on the labels of `data` with cross-entropy (a teacher, or a scratch baseline)."""
    cfg = cfg or TrainConfig()
    check_classes(model, data, "model")
    check_mixing(cfg, None)
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


def distill_loss(
    kd: KDConfig,
    *,
    teacher: nn.Module,
    student: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
) -> ComposedLoss:
    """The loss `distill` trains with: the composed terms of `kd` (`{kd: kd_weight, ce: ce_weight}`,
    Hinton KD, when `kd.terms` is unset), built for this student/teacher pair over `cfg.epochs`.

    Build it once and pass it as `distill(..., loss=...)` to train in phases with one loss: its adapters,
    heads and memory banks carry over and its warm-ups and temperature schedule continue (pass each
    phase's `first_epoch`). Call `close()` afterwards to remove its feature hooks.
    """
    from distil.losses.compose import build_loss

    return build_loss(
        kd,
        student=student,
        teacher=teacher,
        sample_x=data.train.head(2).to(next(student.parameters()).device),
        num_classes=data.num_classes,
        n_data=len(data.train),
        label_smoothing=cfg.label_smoothing,
        epochs=cfg.epochs,
    )


def open_teacher_cache(
    teacher: nn.Module,
    data: DataBundle,
    loss_fn: Any,
    cache: TeacherCacheConfig,
    *,
    augment: str,
    views: TeacherViews | None,
    device: torch.device | str,
    channels_last: bool = False,
    batch_size: int = 64,
) -> tuple[CachedTeacher | SparseCachedTeacher, CacheInfo]:
    """The teacher cache a distillation run reads: which reader of the one store serves this loss.

    A language model's kd-only loss at one temperature reads sparse targets (`sampled`, or `topk`
    read sparsely: `distil.teachers.seqcache.open_run_cache`, which also resolves `auto` by the
    vocabulary); everything else reads dense logits: all of them, or the top-k with a tail fill per
    temperature of the loss's schedule (`distil.teachers.cache.open_or_build`).

    Raises:
        ConfigError: `sampled` for a classifier, or the errors of the two readers.
    """
    sparse_ok = cache.form != "topk" or sparse_cache_blocker(loss_fn) is None
    if data.task == LANGUAGE_MODELING and cache.form != "full" and sparse_ok:
        return open_run_cache(
            teacher,
            data,
            loss_fn,
            form=cache.form,
            k=cache.k,
            augment=augment,
            cache_dir=cache.dir,
            device=device,
            batch_size=batch_size,
        )
    if cache.form == "sampled":
        raise ConfigError(
            "teacher_cache.form=sampled stores per-token draws of a sequence model's (B, T, V) outputs, but "
            f"this is a {data.task} run. Fix: teacher_cache.form=topk (with k) or full."
        )
    check_topk_terms(cache, loss_fn)  # before anything is built or written
    scheduled = loss_fn if isinstance(loss_fn, DistillationLoss) else None
    return open_or_build(
        teacher,
        data,
        augment=augment,
        cache_dir=cache.dir,
        topk=cache.k if cache.form == "topk" else None,
        device=device,
        channels_last=channels_last,
        batch_size=batch_size,
        temperatures=scheduled.temperatures() if scheduled is not None else (1.0,),
        views=views if augment != "none" else None,
    )


def distill(
    teacher: nn.Module | Sequence[nn.Module],
    student: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    kd: KDConfig | None = None,
    *,
    loss: LossFn | None = None,
    first_epoch: int = 0,
    teacher_weights: Sequence[float] | None = None,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    description: str = Stage.DISTILL,
) -> FitResult:
    """Train `student` to match the frozen `teacher` on `data`.

    Args:
        teacher: a trained model; it is frozen (eval mode, no gradients) and never updated. A list of
            models distills from the weighted mixture of their softened distributions
            (`distil.teachers.ensemble.EnsembleTeacher`); feature terms use the first one.
        student: the model to train (from its current weights: random, or transferred).
        data: the dataset both models were built for.
        cfg: the student's training recipe.
        kd: loss settings: the composed loss of `kd.terms` (`distil.losses.compose.build_loss`); unset,
            Hinton KD, the terms `{kd: kd_weight, ce: ce_weight}`. Warm-ups and `temperature_final`
            apply either way. Also the temperature of an ensemble's mixture. Ignored when `loss` is given.
        loss: a prebuilt loss (`distill_loss`, to carry one across phases) or any loss with the
            signature `loss(student_out, teacher_out, batch) -> dict`; it is not closed here. Only a
            `distil.losses.protocol.DistillationLoss` follows the epoch (warm-ups, temperature schedule).
        first_epoch: the run's epoch (0-based) this call starts at, when `loss` is carried across
            training phases: its warm-ups and temperature schedule continue from there.
        teacher_weights: one weight per teacher of an ensemble (default: equal).
        accelerator, progress, on_epoch_end, description: as in `distil.train.engine.fit`.

    With `cfg.fsdp` (a multi-process launch) the teacher runs as a copy sharded across the processes,
    like the student (`distil.train.fsdp`); it then always runs live.

    `cfg.teacher_cache` (a `StudentTrainConfig`'s group) and what the loss needs pick the teacher source
    (`distil.teachers.cache.choose_teacher_source`): with deterministic inputs (augment "none"), one
    teacher and a loss whose terms use only the teacher's logits (kd, dkd, rkl, js, logit_mse, ce),
    "auto" computes the logits once into an on-disk cache (`distil.teachers.cache`) and reuses them across
    epochs and runs; random augmentation, an ensemble, terms that capture teacher features, or a user
    loss that does not declare `teacher_needs` run the teacher live. Each record states
    `teacher_source` and `teacher_source_reason`.

    Returns:
        FitResult with the trained student and its per-epoch records.

    Raises:
        ValueError: `first_epoch` with a loss that is not a `distil.losses.protocol.DistillationLoss`
            (nothing to continue a schedule from).
    """
    cfg = cfg or TrainConfig()
    kd = kd or KDConfig()
    teachers = list(teacher) if isinstance(teacher, Sequence) else [teacher]
    for t in teachers:
        check_classes(t, data, "teacher")
        # On raw outputs, before a live or cached source is chosen: every KD path and ensemble member.
        check_teacher_outputs(t, data)
    check_classes(student, data, "student")
    teacher = teachers[0]
    built = None  # the loss built here, closed here
    loss_fn: LossFn
    if loss is None:
        loss_fn = built = distill_loss(kd, teacher=teacher, student=student, data=data, cfg=cfg)
    else:
        loss_fn = loss
    scheduled = loss_fn if isinstance(loss_fn, DistillationLoss) else None
    if scheduled is not None:
        scheduled.epoch_offset = first_epoch
    elif first_epoch:
        raise ValueError(f"first_epoch={first_epoch} needs a DistillationLoss (distill_loss) to go on")
    if accelerator is None:
        from distil.train.engine import make_accelerator

        accelerator = make_accelerator()
    # The teacher source (cached logits or a live forward pass) is chosen here, from what the loss
    # declares it needs, and recorded in every epoch record with the reason.
    for t in teachers:
        freeze(t)  # whichever source is used, a teacher is never trained
    check_mixing(cfg, loss_fn)
    augment = data.augment if cfg.augment == "auto" else cfg.augment
    if cfg.mixing != "none":
        augment = (
            cfg.mixing if augment == "none" else f"{augment}+{cfg.mixing}"
        )  # random: the teacher runs live
    augmenter = augmenter_for(data, cfg)
    if not augmenter.is_random:
        augment = "none"  # e.g. a crop with 0 padding: the inputs never change
    cache = cache_settings(cfg)
    views = TeacherViews(augmenter, cache.views) if cache.views else None
    needs = loss_fn.teacher_needs if isinstance(loss_fn, DeclaresTeacherNeeds) else None
    if cfg.fsdp:
        check_fsdp(accelerator)
        if needs is not None and needs.live:
            raise ConfigError(
                f"fsdp=true runs a sharded copy of the teacher, but {needs.reason}, captured by hooks on the "
                "whole teacher. Use terms on the outputs (kd, ce, rkl, js, dkd, logit_mse) with fsdp, or set "
                "fsdp=false."
            )
    source, reason = choose_teacher_source(
        cache.mode,
        augment,
        needs=needs,
        teachers=len(teachers),
        views=views.count if views is not None else None,
        sharded=cfg.fsdp,
    )
    source_record: dict[str, Any] = {"teacher_source": source, "teacher_source_reason": reason}
    teacher_fn: TeacherFn
    if source == "cache":
        # A top-k cache's tail mass depends on the temperature: it stores every one the loss's schedule
        # uses and looks up the current one (a loss without a schedule gets the plain T=1 tail).
        with main_process_first(accelerator):
            cached, info = open_teacher_cache(
                teacher,
                data,
                loss_fn,
                cache,
                augment=augment,
                views=views,
                device=accelerator.device,
                channels_last=cfg.channels_last,
                batch_size=cfg.batch_size,  # the build's teacher batch follows the recipe
            )
        if scheduled is not None and isinstance(cached, CachedTeacher):
            cached.follow(scheduled.current_temperature)
        teacher_fn = cached.to(accelerator.device)
        source_record["teacher_cache"] = info.to_dict()
    else:
        # With FSDP each teacher runs as a sharded copy, already on the device (the module passed stays
        # whole, where it is); `to` would try to move its sharded parameters.
        live = teachers
        if cfg.fsdp:
            live = [shard_copy(t, accelerator, frozen=True, units=cfg.fsdp_units) for t in teachers]
            source_record["teacher_fsdp"] = sharding_info(live[0])
        if len(teachers) > 1:
            from distil.teachers.ensemble import EnsembleTeacher

            ensemble = EnsembleTeacher(live, teacher_weights, kd.temperature)
            # Mixed at the loss's temperature of the epoch (temperature_final), like a top-k cache's tail.
            teacher_fn = ensemble.follow(scheduled.current_temperature) if scheduled is not None else ensemble
        else:
            teacher_fn = LiveTeacher(live[0])
        if not cfg.fsdp:
            teacher_fn = teacher_fn.to(accelerator.device)
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
        if built is not None:
            built.close()  # the returned student carries no feature hooks
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
    description: str = Stage.MUTUAL,
) -> MutualResult:
    """Train two or more students that teach each other (deep mutual learning; no fixed teacher).

    Each student minimises ce_weight * CE + kd_weight * mean over peers of T^2 KL(p_peer || p_self),
    the peers' predictions held constant: the students train as one `Cohort` through `fit` (with
    resume, sharded evaluation and trackers). See `distil.train.mutual`.

    Returns:
        MutualResult with every trained student and per-epoch records (`s{i}_eval_accuracy`, ...).
    """
    cfg = cfg or TrainConfig()
    for i, s in enumerate(students):
        check_classes(s, data, f"student {i}")
    cohort = Cohort(students)
    result = fit(
        cohort,
        data,
        cfg,
        MutualLoss(temperature, kd_weight, ce_weight),
        accelerator=accelerator,
        progress=progress,
        on_epoch_end=on_epoch_end,
        description=description,
    )
    trained = result.model
    assert isinstance(trained, Cohort)
    return MutualResult(models=list(trained.students), history=result.history)
