"""A weighted sum of registered loss terms, with feature capture, warm-ups and a temperature schedule.

    loss = build_loss(KDConfig(terms={"ce": 1.0, "fitnet": 100.0}), student=s, teacher=t, sample_x=x)
    terms = loss(student_logits, teacher_logits, batch)   # {"loss": total, "ce": ..., "fitnet": ...}

Each term is logged separately (its unweighted value); "loss" is the weighted total.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from distil.config import KDConfig
from distil.data.batch import GENERATED, IGNORE_INDEX, INDEX, LABELS, MASK, call_model
from distil.errors import ConfigError
from distil.features import FeatureCapture, block_pairs, feature_shapes, propose_pairs
from distil.losses.fused import FusedPlan, as_logits, fallback_notice, fused_terms
from distil.losses.logit import CELoss
from distil.losses.protocol import DistillationLoss
from distil.losses.registry import (
    LOSSES,
    TeacherNeeds,
    Term,
    TermContext,
    TermInputs,
    build_term,
    check_term_tasks,
    task_terms,
)
from distil.losses.vocab import align_vocab
from distil.models.hf import HeadOutput
from distil.models.vit import TokenLogits


class ComposedLoss(nn.Module, DistillationLoss):
    """`loss(student_out, teacher_out, batch) -> dict`: the weighted sum of named terms.

    Args:
        terms: name -> built term module.
        weights: name -> weight (same keys as `terms`).
        temperature: the softening temperature at the first epoch.
        temperature_final: the temperature at the last epoch (linear in between); None keeps it fixed.
        epochs: the number of epochs (for the temperature schedule).
        warmup: name -> epochs over which the term's weight rises linearly from 1/N of it to all of it.
        student_capture: hooks on the student's feature modules (needed by feature terms).
        teacher_capture: hooks on the teacher's feature modules.
        vocab_tolerance: (B, T, V) outputs whose vocabularies differ by padding rows are cut to the
            common ids (`distil.losses.vocab.align_vocab`); the first batch checks that the teacher puts
            at most this probability on the ids dropped.

    It implements `distil.losses.protocol.DistillationLoss`: the training loop calls `set_epoch(epoch)`
    at the start of each epoch (0-based); `epoch_offset` is added to it, so a loss carried across
    training phases (an unfreeze schedule) continues its warm-ups and temperature schedule instead of
    restarting them. `teacher_needs` says whether cached
    teacher logits can stand in for the teacher (no term needs features or the live teacher).

    On a batch whose completions were generated during training (``batch["generated"]``: on-policy
    distillation), label-only terms (``ce``: `Term.needs_teacher` False) are left out of the total and
    reported as 0: their labels would be the student's own samples. The teacher terms reduce over the
    generated tokens (the batch's ``mask``).
    """

    def __init__(
        self,
        terms: dict[str, Term],
        weights: dict[str, float],
        *,
        temperature: float = 4.0,
        temperature_final: float | None = None,
        epochs: int = 1,
        warmup: dict[str, float] | None = None,
        student_capture: FeatureCapture | None = None,
        teacher_capture: FeatureCapture | None = None,
        vocab_tolerance: float = 1e-3,
    ) -> None:
        super().__init__()
        if set(terms) != set(weights):
            raise ValueError(f"terms {sorted(terms)} and weights {sorted(weights)} must have the same names")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.temperature = temperature
        self.temperature_final = temperature_final
        self.epochs = epochs
        self.warmup = dict(warmup or {})
        self.student_capture = student_capture
        self.teacher_capture = teacher_capture
        self.epoch = 0
        self.epoch_offset = 0
        self.vocab_tolerance = vocab_tolerance
        self._vocab_checked = False
        # The fused LM head (kd.fused, set by `distil.distill`): None computes from whole logits.
        self.fused: FusedPlan | None = None
        self._fused_noticed = False

    @property
    def teacher_needs(self) -> TeacherNeeds:
        """Live when a term needs the teacher's forward pass (features), else cached logits suffice."""
        live = [
            name for name, term in self.terms.items() if isinstance(term, Term) and term.runs_teacher_live()
        ]
        if live:
            return TeacherNeeds(True, f"terms {', '.join(live)} need the teacher's features (captured live)")
        return TeacherNeeds(False, f"terms {', '.join(self.terms)} use only the teacher's logits")

    def model_call_options(self, role: Literal["student", "teacher"]) -> dict[str, Any]:
        """``head=False`` (hidden states and head, not logits) for the models the fused plan covers."""
        plan = self.fused
        fused = plan is not None and plan.student and (role == "student" or plan.teacher)
        return {"head": False} if fused else {}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (0-based, counted from `epoch_offset`) whose weights and temperature apply."""
        self.epoch = self.epoch_offset + epoch

    def temperature_at(self, epoch: int) -> float:
        """The temperature of `epoch` (0-based; linear from `temperature` to `temperature_final`)."""
        if self.temperature_final is None or self.epochs <= 1:
            return self.temperature
        frac = min(epoch, self.epochs - 1) / (self.epochs - 1)
        return self.temperature + frac * (self.temperature_final - self.temperature)

    def current_temperature(self) -> float:
        """The temperature of the current epoch."""
        return self.temperature_at(self.epoch)

    def temperatures(self) -> tuple[float, ...]:
        """Every temperature the run uses, one per epoch (a top-k teacher cache stores each tail mass)."""
        return tuple(dict.fromkeys(self.temperature_at(e) for e in range(max(self.epochs, 1))))

    def current_weight(self, name: str) -> float:
        """The weight of term `name` at the current epoch (after its warm-up)."""
        w = self.weights[name]
        n = self.warmup.get(name, 0.0)
        return w * min(1.0, (self.epoch + 1) / n) if n > 0 else w

    def forward(
        self, student_out: torch.Tensor | TokenLogits, teacher_out: Any, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        # A distillation-token student (training mode) gives both heads: every term sees their average,
        # the deit terms the heads themselves.
        if isinstance(student_out, TokenLogits):
            return self._terms(student_out.logits, teacher_out, batch, student_out)
        return self._terms(student_out, teacher_out, batch, None)

    def _terms(
        self,
        student_out: torch.Tensor,
        teacher_out: Any,
        batch: dict[str, torch.Tensor],
        heads: TokenLogits | None,
    ) -> dict[str, torch.Tensor]:
        """The named terms and their weighted total, for (B, K) or (B, T, V) student logits."""
        mask = batch.get(MASK)
        if mask is not None:
            self._check_mask_users()
        if isinstance(student_out, HeadOutput):
            fused = self._fused_forward(student_out, teacher_out, batch, mask)
            if fused is not None:
                return fused
        student_out, teacher_out = as_logits(student_out), as_logits(teacher_out)
        if (
            isinstance(teacher_out, torch.Tensor)
            and student_out.dim() == 3
            and teacher_out.dim() == 3
            and student_out.shape[-1] != teacher_out.shape[-1]
        ):
            # The one place both outputs meet: padding rows are cut here, checked once (one host sync).
            student_out, teacher_out = align_vocab(
                student_out,
                teacher_out,
                temperature=self.current_temperature(),
                tolerance=self.vocab_tolerance,
                mask=mask,
                check=not self._vocab_checked,
            )
            self._vocab_checked = True
        inputs = TermInputs(
            student_logits=student_out,
            teacher_logits=teacher_out,
            labels=batch[LABELS],
            index=batch.get(INDEX),
            mask=positions_that_count(mask, batch[LABELS]),
            student_features=self.student_capture.features() if self.student_capture else [],
            teacher_features=self.teacher_capture.features() if self.teacher_capture else [],
            temperature=self.current_temperature(),
            student_heads=heads,
        )
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        generated = bool(batch.get(GENERATED, False))
        reported: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            if generated and not getattr(term, "needs_teacher", True):
                # The labels of a generated batch are the student's own samples, not gold tokens: a
                # label-only term (ce) would train the student on them. It counts 0 and is left out.
                out[name] = torch.zeros((), device=student_out.device)
                continue
            value = term(inputs)
            out[name] = value
            # Scalars a term reports besides its value (the cross-tokenizer terms' aligned fraction):
            # recorded with the terms, never weighted into the total.
            reported.update(getattr(term, "report", {}))
            weighted = self.current_weight(name) * value
            total = weighted if total is None else total + weighted
        if total is None:
            raise ConfigError(
                f"a generated batch (on-policy distillation) trains on teacher-matching terms only, but the "
                f"loss has none (terms: {', '.join(self.terms)}). Fix: add a divergence term (e.g. kd), or "
                "set student_train.generation.lmbda=0."
            )
        return {"loss": total, **out, **reported}

    def _fused_forward(
        self,
        student_out: HeadOutput,
        teacher_out: Any,
        batch: dict[str, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor] | None:
        """The terms with the LM head fused (`distil.losses.fused`); None (after a one-time notice) when
        this batch's outputs cannot be, e.g. the sparse rows of a top-k teacher cache."""
        labels = batch[LABELS]
        result = fused_terms(
            self.terms,
            {name: self.current_weight(name) for name in self.terms},
            student_out,
            teacher_out,
            labels,
            positions_that_count(mask, labels),
            self.current_temperature(),
            generated=bool(batch.get(GENERATED, False)),
        )
        if isinstance(result, str):
            if not self._fused_noticed:
                warnings.warn(fallback_notice(result), stacklevel=3)
                self._fused_noticed = True
            return None
        return result

    def _check_mask_users(self) -> None:
        """Refuse a masked batch when a term would ignore its mask (features, relations: per sample)."""
        blind = [name for name, term in self.terms.items() if not getattr(term, "uses_mask", False)]
        if blind:
            raise ConfigError(
                f"the batch has a 'mask' of valid positions, but terms {', '.join(blind)} compare whole "
                "samples (features or relations) and cannot honour it. Fix: use logit terms (kd, ce, rkl, "
                "js, tvd, logit_mse, dkd) or per-token hidden-state terms (hidden_mse, hidden_cosine) "
                "with masked data, or drop 'mask' from the batches."
            )

    def close(self) -> None:
        """Remove the feature hooks from the student and teacher."""
        for capture in (self.student_capture, self.teacher_capture):
            if capture is not None:
                capture.remove()


def positions_that_count(mask: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor | None:
    """The mask every term reduces over: with (B, T) token labels, `mask` and-ed with labels != -100.

    A prompt token (or padding) of a language-model batch is labelled `IGNORE_INDEX` without a mask;
    CE skips it, and so must the teacher terms, or they average over prompts. (B,) labels keep `mask`
    as it is: an unlabeled sample (-100) still trains the teacher terms. A mask of another shape is
    passed on unchanged, for the term to refuse with its own message.

    Args:
        mask: the batch's (B,) or (B, T) bool mask, or None.
        labels: (B,) classes or (B, T) token ids.

    Returns:
        (B, T) bool for token labels, else `mask`.
    """
    if labels.dim() != 2 or labels.is_floating_point():
        # (B, L) float rows (multilabel, regression) are one sample's targets, not token positions.
        return mask
    keep = labels != IGNORE_INDEX
    if mask is None:
        return keep
    if mask.dim() == 1 and mask.shape[0] == labels.shape[0]:
        return keep & mask.bool().to(keep.device).unsqueeze(1)
    if tuple(mask.shape) == tuple(labels.shape):
        return keep & mask.bool().to(keep.device)
    return mask


def resolve_terms(kd: KDConfig, task: str | None = None) -> dict[str, float]:
    """The term weights of a KD config: `kd.terms`, or `{"kd": kd_weight, "ce": ce_weight}` (for a task with
    its own pair, `distil.losses.registry.TASK_TERMS`, e.g. multilabel's `ml_kd`/`ml_bce`); zero weights dropped.

    Args:
        kd: the distillation settings.
        task: the data's task (`DataBundle.task`); given, every term must fit it (`Term.tasks`).

    Raises:
        ConfigError: an unknown term name (the valid names and the closest match are listed), a term that
            does not fit `task`, or no term with a positive weight.
    """
    kd_name, ce_name = task_terms(task or "classification")
    weights = dict(kd.terms) if kd.terms is not None else {kd_name: kd.kd_weight, ce_name: kd.ce_weight}
    for name in [*weights, *kd.options, *kd.warmup]:
        LOSSES.get(name)  # raises with the valid names and the closest match
    if task is not None:
        check_term_tasks(list(weights), task)
    kept = {k: float(v) for k, v in weights.items() if v != 0}
    if not kept:
        raise ConfigError(f"kd.terms {weights} has no term with a non-zero weight: nothing would be trained")
    return kept


def build_loss(
    kd: KDConfig,
    *,
    student: nn.Module,
    teacher: nn.Module | None,
    sample_x: torch.Tensor,
    num_classes: int,
    n_data: int = 0,
    label_smoothing: float = 0.0,
    epochs: int = 1,
    task: str | None = None,
) -> ComposedLoss:
    """Build the composed loss of `kd` for this student/teacher pair.

    When a term needs features, the feature pairs (`kd.feature_pairs`, or pairs proposed by stage when
    "auto") are resolved, their shapes measured with one forward of `sample_x`, and forward hooks are
    registered on both models (teacher features detached). Call `close()` to remove them.

    Args:
        kd: the distillation settings (terms, weights, options, pairs, schedules).
        student: the student network.
        teacher: the module whose features are captured (the first teacher of an ensemble).
        sample_x: a small input batch (2+ samples) for measuring feature shapes.
        num_classes: number of classes.
        n_data: training-set size (sizes CRD's memory bank).
        label_smoothing: for the cross-entropy term.
        epochs: training epochs (for the temperature schedule).
        task: the data's task: picks the default terms and refuses terms that do not fit it.

    Raises:
        ConfigError: unknown term, option or module path; a term that does not fit `task`; feature shapes
            that no adapter can match.
    """
    weights = resolve_terms(kd, task)
    classes = {name: LOSSES.get(name) for name in weights}
    needs_features = any(c.needs_features for c in classes.values())
    if teacher is None and any(c.needs_teacher for c in classes.values()):
        raise ConfigError(f"terms {sorted(weights)} need a teacher, but none was given")
    ctx = TermContext(
        adapters=kd.adapters,
        num_classes=num_classes,
        n_data=n_data,
        label_smoothing=label_smoothing,
    )
    if any(c.needs_student_width for c in classes.values()):
        ctx.student_width = _output_width(student, sample_x)
    student_capture = teacher_capture = None
    options = {name: dict(kd.options.get(name) or {}) for name in weights}
    if needs_features:
        assert teacher is not None
        block_terms = [name for name, c in classes.items() if getattr(c, "maps_blocks", False)]
        by_stage = any(c.needs_features and name not in block_terms for name, c in classes.items())
        if kd.feature_pairs != "auto":
            pairs = [(s, t) for s, t in kd.feature_pairs]
        else:
            pairs = propose_pairs(teacher, student, sample_x) if by_stage else []
        for name in block_terms:
            # A term mapping transformer blocks by index gets those pairs (added once) as its `pairs`.
            layer_map = options[name].get("layer_map")
            if layer_map is None and kd.feature_pairs == "auto":
                layer_map = "auto"
            if layer_map is not None and "pairs" not in options[name]:
                mapped = block_pairs(student, teacher, layer_map)
                pairs.extend(p for p in dict.fromkeys(mapped) if p not in pairs)
                options[name]["pairs"] = [pairs.index(p) for p in mapped]
        ctx.pairs = pairs
        ctx.student_shapes = feature_shapes(student, [s for s, _ in pairs], sample_x, "student")
        ctx.teacher_shapes = feature_shapes(teacher, [t for _, t in pairs], sample_x, "teacher")
    terms = {name: build_term(name, ctx, options[name] or None) for name in weights}
    if needs_features:
        assert teacher is not None
        student_capture = FeatureCapture(student, [s for s, _ in ctx.pairs], role="student")
        teacher_capture = FeatureCapture(teacher, [t for _, t in ctx.pairs], detach=True, role="teacher")
    return ComposedLoss(
        terms,
        weights,
        temperature=kd.temperature,
        temperature_final=kd.temperature_final,
        epochs=epochs,
        warmup=kd.warmup,
        student_capture=student_capture,
        teacher_capture=teacher_capture,
        vocab_tolerance=kd.vocab_tolerance,
    )


def _output_width(model: nn.Module, sample_x: torch.Tensor) -> int:
    """The width of `model`'s outputs on `sample_x` (one forward without gradients, modes restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(call_model(model, sample_x).shape[-1])
    finally:
        model.train(was_training)


def supervised_loss(task: str, label_smoothing: float = 0.0) -> nn.Module:
    """The loss a model trains on the labels with (a teacher, a scratch baseline): `task`'s label term.

    Classification and language modelling: cross-entropy (`CELoss`); a task with its own label term
    (`distil.losses.registry.TASK_TERMS`, e.g. multilabel's `ml_bce`) gets that term alone, logged under its name.
    """
    name = task_terms(task)[1]
    if name == "ce":
        return CELoss(label_smoothing)
    term = build_term(name, TermContext(label_smoothing=label_smoothing))
    return ComposedLoss({name: term}, {name: 1.0})
