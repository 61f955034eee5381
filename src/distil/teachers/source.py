"""Where a distillation run's teacher outputs come from: one function picks and builds the source.

`teacher_source` reads the recipe (`cfg.teacher_cache`, augmentation, `fsdp`) and what the loss
declares it needs, asks `distil.teachers.cache.choose_teacher_source` for the decision, and builds
what the loop calls: a live teacher, an ensemble, sharded copies (FSDP), or a reader of the on-disk
cache (dense logits, or a sequence model's sparse targets). It returns that callable with the record
every epoch logs (`teacher_source`, `teacher_source_reason`, and the cache's or the sharding's facts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from torch import nn

from distil.config import TeacherCacheConfig, TrainConfig, cache_settings
from distil.data import DataBundle
from distil.data.augment import Augmenter
from distil.data.text import LANGUAGE_MODELING
from distil.errors import ConfigError
from distil.losses.compose import ComposedLoss
from distil.losses.protocol import ChoosesModelOutputs, DeclaresTeacherNeeds, DistillationLoss
from distil.losses.registry import TeacherNeeds, Term
from distil.teachers.cache import (
    CachedTeacher,
    CacheInfo,
    TeacherViews,
    choose_teacher_source,
    main_process_first,
    open_or_build,
)
from distil.teachers.live import LiveTeacher, freeze
from distil.teachers.seqcache import SparseCachedTeacher, open_run_cache, sparse_cache_blocker
from distil.train.engine import LossFn, TeacherFn, augmenter_for
from distil.train.fsdp import check_fsdp, shard_copy, sharding_info

if TYPE_CHECKING:
    from distil.teachers.ensemble import EnsembleMix


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


def teacher_augment(data: DataBundle, cfg: TrainConfig) -> tuple[str, Augmenter]:
    """The augmentation the teacher sees, as the cache names it, and the run's augmenter.

    Mixing (mixup/cutmix) is random, so it joins the name; an augmenter that never changes its inputs
    (a crop with 0 padding) is "none", which lets the teacher's outputs be cached.
    """
    ops, mixing = cfg.augment.ops, cfg.augment.mixing
    augment = data.augment if ops == "auto" else ops
    if mixing != "none":
        augment = mixing if augment == "none" else f"{augment}+{mixing}"
    augmenter = augmenter_for(data, cfg)
    return (augment if augmenter.is_random else "none"), augmenter


def _check_sharded(needs: TeacherNeeds | None, accelerator: Accelerator) -> None:
    """Refuse FSDP outside a multi-process launch, or for a loss that hooks the whole teacher."""
    check_fsdp(accelerator)
    if needs is not None and needs.live:
        raise ConfigError(
            f"fsdp=true runs a sharded copy of the teacher, but {needs.reason}, captured by hooks on the "
            "whole teacher. Use terms on the outputs (kd, ce, rkl, js, dkd, logit_mse) with fsdp, or set "
            "fsdp=false."
        )


def _live_teacher(
    teachers: list[nn.Module],
    cfg: TrainConfig,
    accelerator: Accelerator,
    scheduled: DistillationLoss | None,
    weights: Sequence[float] | None,
    temperature: float,
    mix: EnsembleMix,
    record: dict[str, Any],
) -> TeacherFn:
    """One teacher, or the ensemble of several, run live (as sharded copies under FSDP)."""
    # With FSDP each teacher runs as a sharded copy, already on the device (the module passed stays
    # whole, where it is); `to` would try to move its sharded parameters.
    live = teachers
    if cfg.fsdp.enabled:
        live = [shard_copy(t, accelerator, frozen=True, units=cfg.fsdp.units) for t in teachers]
        record["teacher_fsdp"] = sharding_info(live[0])
    teacher_fn: Any
    if len(teachers) > 1:
        from distil.teachers.ensemble import EnsembleTeacher

        ensemble = EnsembleTeacher(live, weights, temperature, mix)
        # Mixed at the loss's temperature of the epoch (temperature_final), like a top-k cache's tail.
        teacher_fn = ensemble.follow(scheduled.current_temperature) if scheduled is not None else ensemble
    else:
        # e.g. a causal LM's hidden states and head for the fused LM loss, not its logits
        options: dict[str, Any] = (
            scheduled.model_call_options("teacher") if isinstance(scheduled, ChoosesModelOutputs) else {}
        )
        teacher_fn = LiveTeacher(live[0], options)
    if not cfg.fsdp.enabled:
        teacher_fn = teacher_fn.to(accelerator.device)
    if cfg.channels_last:
        for t in teachers:
            t.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return teacher_fn  # type: ignore[no-any-return]


def on_policy_lmbda(cfg: TrainConfig) -> float:
    """`cfg.generation.lmbda` of a student's recipe (a plain `TrainConfig` has none: 0)."""
    generation = getattr(cfg, "generation", None)
    return float(generation.lmbda) if generation is not None else 0.0


def teacher_source(
    teachers: Sequence[nn.Module],
    data: DataBundle,
    loss_fn: LossFn,
    cfg: TrainConfig,
    accelerator: Accelerator,
    *,
    weights: Sequence[float] | None = None,
    temperature: float = 1.0,
    mix: EnsembleMix = "probs",
) -> tuple[TeacherFn, dict[str, Any]]:
    """Pick and build where the teacher outputs of a distillation run come from.

    Args:
        teachers: one frozen teacher, or the members of an ensemble (they are frozen here either way).
        data: the dataset of the run.
        loss_fn: the run's loss; what it declares it needs (`teacher_needs`) rules out a cache.
        cfg: the student's recipe: `teacher_cache` and `generation.lmbda` (a `StudentTrainConfig`'s
            groups: on-policy generation runs the teacher live), augmentation, mixing, `fsdp`, `channels_last`.
        accelerator: the run's accelerator (the device, and rank 0 builds a cache first).
        weights: one weight per teacher of an ensemble (default: equal).
        temperature: the ensemble's mixing temperature when the loss has no schedule to follow.
        mix: how an ensemble combines its teachers (`distil.teachers.ensemble.ENSEMBLE_MIXES`).

    Returns:
        The callable the loop asks for teacher outputs, and the record every epoch logs
        (`teacher_source`, `teacher_source_reason`, `teacher_cache` or `teacher_fsdp`).

    Raises:
        ConfigError: FSDP with a loss that hooks the teacher, or a cache that cannot serve the loss.
    """
    teachers = list(teachers)
    for t in teachers:
        freeze(t)  # whichever source is used, a teacher is never trained
    augment, augmenter = teacher_augment(data, cfg)
    cache = cache_settings(cfg)
    views = TeacherViews(augmenter, cache.views) if cache.views else None
    needs = loss_fn.teacher_needs if isinstance(loss_fn, DeclaresTeacherNeeds) else None
    if cfg.fsdp.enabled:
        _check_sharded(needs, accelerator)
    source, reason = choose_teacher_source(
        cache.mode,
        augment,
        needs=needs,
        teachers=len(teachers),
        views=views.count if views is not None else None,
        sharded=cfg.fsdp.enabled,
        on_policy=on_policy_lmbda(cfg),
    )
    record: dict[str, Any] = {"teacher_source": source, "teacher_source_reason": reason}
    scheduled = loss_fn if isinstance(loss_fn, DistillationLoss) else None
    if source != "cache":
        live = _live_teacher(teachers, cfg, accelerator, scheduled, weights, temperature, mix, record)
        return live, record
    # A top-k cache's tail mass depends on the temperature: it stores every one the loss's schedule
    # uses and looks up the current one (a loss without a schedule gets the plain T=1 tail).
    with main_process_first(accelerator):
        cached, info = open_teacher_cache(
            teachers[0],
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
    record["teacher_cache"] = info.to_dict()
    return cached.to(accelerator.device), record
