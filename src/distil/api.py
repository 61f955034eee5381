"""The Python API: train a model, distill a student from a teacher, measure them side by side.

The CLI only wraps these functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from rich.progress import Progress
from torch import nn

from distil.config import KDConfig, TrainConfig
from distil.data import DataBundle
from distil.data.targets import outputs_are_logits
from distil.errors import ConfigError, DataError
from distil.losses import supervised_loss
from distil.losses.compose import ComposedLoss
from distil.losses.fused import FusedPlan, plan_fused
from distil.losses.protocol import DistillationLoss
from distil.teachers.crosstok import cross_tokenizer_source, cross_tokenizer_teacher
from distil.teachers.generations import seq_kd_data
from distil.teachers.outputs import check_teacher_outputs
from distil.teachers.source import teacher_source
from distil.train.engine import FitResult, LossFn, fit, make_accelerator, train_loader
from distil.train.mutual import Cohort, MutualLoss, MutualResult
from distil.train.onpolicy import on_policy
from distil.train.optim import step_budget
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
    _check_dense_shape(out, data)
    return int(out.shape[1] if data.task == "dense" else out.shape[-1])


def _check_dense_shape(out: Any, data: DataBundle) -> None:
    """Refuse a per-sample model on dense data, and a per-pixel model on any other data."""
    if not isinstance(out, torch.Tensor):
        return
    per_pixel = out.dim() == 4
    if data.task == "dense" and (not per_pixel or tuple(out.shape[2:]) != tuple(data.input_shape[-2:])):
        raise DataError(
            f"dataset {data.name!r} is dense data ((N, H, W) pixel classes), but the model outputs "
            f"{tuple(out.shape)}, not (B, K, H, W) logits of the inputs' size: a class-label model. Fix: use a "
            "model that keeps H x W, e.g. --set teacher.model=tiny-segnet --set student.model=tiny-segnet."
        )
    if data.task != "dense" and per_pixel:
        raise DataError(
            f"the model outputs (B, K, H, W) per-pixel logits {tuple(out.shape)}, but dataset {data.name!r} is "
            f"{data.task} data. Fix: a model with one output row per sample, or dense data ((N, H, W) labels)."
        )


def check_classes(model: nn.Module, data: DataBundle, role: str) -> None:
    """Fail clearly when a model's output count differs from the dataset's class count (an embedding
    model other than the teacher may have its own width: the loss projects it, recall@k compares
    neighbours)."""
    if data.task == "embedding" and role != "teacher":
        return
    k = output_classes(model, data)
    if k != data.num_classes:
        lm = " A teacher with another tokenizer: set kd.teacher_tokenizer to it and use terms uld or alm."
        raise DataError(
            f"the {role} predicts {k} classes but dataset {data.name!r} has {data.num_classes}; build the "
            f"{role} with num_classes={data.num_classes} (or use a checkpoint trained on this dataset)."
            + (lm if role == "teacher" and data.task == "language-modeling" else "")
        )


# Terms that read the true class of every sample: a mixed (mixup/cutmix) sample has none.
_LABEL_TERMS = ("ce", "dkd", "ml_bce", "reg_label", "emb_label", "dense_ce")


def check_mixing(cfg: TrainConfig, loss: LossFn | None) -> None:
    """Refuse mixup/cutmix for a loss that trains on labels: a mixed batch's labels are all -100.

    Function matching (teacher and student on the same mixed view) trains on teacher-matching terms
    only, so `cfg.augment.mixing` needs a teacher and a loss without `ce`/`dkd`.

    Raises:
        ConfigError: with the fix.
    """
    if cfg.augment.mixing == "none":
        return
    # Only a composed loss names its terms; any other loss may read labels.
    weights = loss.weights if isinstance(loss, ComposedLoss) else None
    label_terms = sorted(t for t in _LABEL_TERMS if weights is not None and weights.get(t, 0) > 0)
    if weights is None or label_terms:
        what = f"terms {', '.join(label_terms)} read" if label_terms else "this loss reads"
        raise ConfigError(
            f"augment.mixing={cfg.augment.mixing!r} mixes pairs of samples, whose labels are then unknown (-100), "
            f"but {what} "
            "labels. Fix: distill with teacher-matching terms only (function matching: --set 'kd.terms={kd: "
            "1}'), or set augment.mixing: none."
        )


# How a training recipe says its model's outputs in [0, 1] are logits (`TrainConfig.model_outputs`).
TRAIN_OUTPUTS_ESCAPE = "--set teacher_train.model_outputs=logits (student_train. for the scratch student)"


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
    """Train `model` on the labels of `data` with its task's label loss (cross-entropy; multilabel: binary
    cross-entropy): a teacher, or a scratch baseline.

    Raises:
        NotLogitsError: a classification or multilabel model whose first outputs look like probabilities
            (`distil.teachers.outputs.check_teacher_outputs`), unless `cfg.model_outputs` is "logits".
    """
    cfg = cfg or TrainConfig()
    check_classes(model, data, "model")
    if cfg.model_outputs == "check" and outputs_are_logits(data.task):
        # The check distill runs on its teachers: cross-entropy on probabilities trains silently wrong.
        check_teacher_outputs(model, data, "model", escape=TRAIN_OUTPUTS_ESCAPE)
    check_mixing(cfg, None)
    return fit(
        model,
        data,
        cfg,
        supervised_loss(data.task, cfg.label_smoothing),
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
        task=data.task,
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

    With `cfg.fsdp.enabled` (a multi-process launch) the teacher runs as a copy sharded across the processes,
    like the student (`distil.train.fsdp`); it then always runs live.

    `cfg.teacher_cache` (a `StudentTrainConfig`'s group) and what the loss needs pick the teacher source
    (`distil.teachers.source.teacher_source`, deciding by `distil.teachers.cache.choose_teacher_source`): with deterministic inputs (augment "none"), one
    teacher and a loss whose terms use only the teacher's logits (kd, dkd, rkl, js, logit_mse, ce),
    "auto" computes the logits once into an on-disk cache (`distil.teachers.cache`) and reuses them across
    epochs and runs; random augmentation, an ensemble, terms that capture teacher features, or a user
    loss that does not declare `teacher_needs` run the teacher live. Each record states
    `teacher_source` and `teacher_source_reason`.

    With `cfg.generation.seq_kd` (a `StudentTrainConfig`, language-model data) the student trains on the
    teacher's own completions of the training prompts, generated once and cached
    (`distil.teachers.generations`); validation and test stay the dataset's. Each record then states
    `completions` (and `completions_build` when they were generated by this call).

    On-policy distillation (`cfg.generation.lmbda` > 0, a `StudentTrainConfig`'s group; language models on
    one prompt/completion sample per row): with probability lmbda a batch's completions are sampled by the
    student from its prompts (`distil.train.onpolicy`), the teacher (then always live) scores them, the
    teacher terms train on the generated tokens and label-only terms (ce) are left out on that batch.
    Each record adds `on_policy_batches`, `generated_tokens`, `generation_seconds`, `generated_tokens_per_s`.

    Returns:
        FitResult with the trained student and its per-epoch records.

    Raises:
        ConfigError, DataError, ModelError: seq_kd on data without prompts, a classifier or a teacher
            that cannot generate (`distil.teachers.generations.check_seq_kd`).
        ValueError: `first_epoch` with a loss that is not a `distil.losses.protocol.DistillationLoss`
            (nothing to continue a schedule from).
        ConfigError, DataError, ModelError: on-policy distillation that cannot run (fsdp, data without
            one prompt per row, a student that cannot generate, a loss without a teacher term,
            teacher_cache=on), before training starts.
        ConfigError: `kd.teacher_tokenizer` with seq_kd (`distil.config.cross_tokenizer_problems`); its
            teacher source is chosen by `distil.teachers.crosstok.cross_tokenizer_source`.
    """
    cfg = cfg or TrainConfig()
    kd = kd or KDConfig()
    teachers = list(teacher) if isinstance(teacher, Sequence) else [teacher]
    if len(teachers) > 1 and data.task not in ("classification", "language-modeling"):
        # The ensemble mixes softmax distributions: sigmoid labels and values are not mixed that way.
        raise ConfigError(
            f"an ensemble of {len(teachers)} teachers mixes their softmax distributions, which {data.task} "
            "outputs are not. Fix: distil from one teacher."
        )
    cross = cross_tokenizer_teacher(teachers, data, kd, cfg)  # None unless kd.teacher_tokenizer is set
    for t in teachers if cross is None else []:  # a cross-tokenizer teacher was checked on its own ids
        check_classes(t, data, "teacher")
        if kd.teacher_outputs == "check" and outputs_are_logits(data.task):
            # On raw outputs, before a live or cached source is chosen: every KD path and ensemble member.
            check_teacher_outputs(t, data)
    check_classes(student, data, "student")
    # On-policy distillation (cfg.generation.lmbda): checked before seq-KD generates or a cache is built.
    rewriter = on_policy(
        getattr(cfg, "generation", None), cfg, data, student, loss if loss is not None else kd
    )
    accelerator = accelerator or make_accelerator()
    # seq-KD (cfg.generation.seq_kd): train on the teacher's cached completions; `data` otherwise.
    data, completions = seq_kd_data(teachers, data, cfg, accelerator, progress)
    built = None  # the loss built here, closed here
    if loss is None:
        loss = built = distill_loss(kd, teacher=teachers[0], student=student, data=data, cfg=cfg)
    try:
        _continue_schedule(loss, first_epoch)
        check_mixing(cfg, loss)
        if isinstance(loss, ComposedLoss) and cfg.max_steps is not None:
            # Its temperature schedule spans the epochs the step budget runs, not `cfg.epochs`.
            loss.epochs = first_epoch + step_budget(cfg, len(train_loader(data, cfg, accelerator)))[0]
        if isinstance(loss, ComposedLoss):  # before the teacher source: a live teacher may fuse too
            loss.fused = fused_plan(kd, cfg, student, teachers, data, loss)
        teacher_fn, source_record = (
            teacher_source(
                teachers,
                data,
                loss,
                cfg,
                accelerator,
                weights=teacher_weights,
                temperature=kd.temperature,
                mix=kd.ensemble_mix,
            )
            if cross is None
            else cross_tokenizer_source(cross, data, loss, cfg, accelerator)
        )
        source_record.update(completions)
        if isinstance(loss, ComposedLoss) and loss.fused is not None:
            source_record["fused_head"] = "student+teacher" if loss.fused.teacher else "student"

        def log(record: dict[str, Any]) -> None:
            record.update(source_record)  # every epoch says where its teacher outputs came from
            if on_epoch_end is not None:
                on_epoch_end(record)

        result = fit(
            student,
            data,
            cfg,
            loss,
            teacher=teacher_fn,
            accelerator=accelerator,
            progress=progress,
            on_epoch_end=log,
            description=description,
            rewriter=rewriter,
        )
    finally:
        if built is not None:
            built.close()  # the returned student carries no feature hooks
    for record in result.history:
        record.update(source_record)
    return result


def fused_plan(
    kd: KDConfig,
    cfg: TrainConfig,
    student: nn.Module,
    teachers: Sequence[nn.Module],
    data: DataBundle,
    loss: ComposedLoss,
) -> FusedPlan | None:
    """The fused LM head plan of `kd.fused` for this run (`distil.losses.fused.plan_fused`); a one-line
    notice when it was asked for (or `auto` would have fused) but cannot be."""
    plan, notice = plan_fused(
        kd.fused,
        student=student,
        teachers=teachers,
        terms=loss.terms,
        sample=data.train.head(1).to(next(student.parameters()).device),
        vocab=data.num_classes,
        sharded=cfg.fsdp.enabled,
    )
    if notice is not None:
        warnings.warn(notice, stacklevel=3)
    return plan


def _continue_schedule(loss_fn: LossFn, first_epoch: int) -> None:
    """Start a `DistillationLoss`'s warm-ups and temperature schedule at the run's `first_epoch`.

    Raises:
        ValueError: `first_epoch` with any other loss (nothing to continue a schedule from).
    """
    if isinstance(loss_fn, DistillationLoss):
        loss_fn.epoch_offset = first_epoch
    elif first_epoch:
        raise ValueError(f"first_epoch={first_epoch} needs a DistillationLoss (distill_loss) to go on")


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
    if data.task != "classification":
        # MutualLoss is softmax KL plus cross-entropy on class indices.
        raise ConfigError(
            f"mutual learning trains students on softmax KL and class labels, but {data.name!r} is {data.task} "
            "data. Fix: distil each student from a teacher (distill) instead."
        )
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
