"""DeiT's distillation through a distillation token (Touvron et al. 2021), hard and soft.

A student with a distillation token (``vit-tiny`` with ``distill_token: true``) has two heads. The class
head learns the labels; the distillation head learns the teacher:

* hard (``deit``): ``(1 - w) * CE(cls, y) + w * CE(dist, argmax teacher)``, w = 0.5 in the paper;
* soft (``deit_soft``): ``(1 - w) * CE(cls, y) + w * T^2 * KL(p_teacher^T || p_dist^T)``.

At test time the model averages the two heads' logits (its eval-mode output). Each term is the whole DeiT
objective, so the method is the term alone (``--method deit``, or ``kd.terms: {deit: 1.0}``); the term
reads both heads from the student's training-mode output (`distil.models.vit.TokenLogits`).
"""

from __future__ import annotations

import torch

from distil.errors import ConfigError
from distil.losses.functional import cross_entropy, kd_kl
from distil.losses.registry import Term, TermContext, TermInputs, register_loss
from distil.models.vit import TokenLogits


def deit_hard(
    cls_logits: torch.Tensor,
    dist_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    distill_weight: float = 0.5,
    label_smoothing: float = 0.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """DeiT's hard-label distillation: ``(1 - w) CE(cls, y) + w CE(dist, argmax teacher)``.

    Args:
        cls_logits: (B, K) class-head logits.
        dist_logits: (B, K) distillation-head logits.
        labels: (B,) classes; -100 marks a sample without a label (it still learns from the teacher).
        teacher_logits: (B, K) teacher logits (only their argmax is used).
        distill_weight: w in [0, 1], the distillation head's share.
        label_smoothing: for the class head's cross-entropy (the teacher's labels are never smoothed).
        mask: optional (B,) bool, the samples that count.

    Returns:
        A scalar tensor.
    """
    _check_shapes(cls_logits, dist_logits, teacher_logits)
    teacher_labels = teacher_logits.detach().argmax(dim=-1)
    ce_cls = cross_entropy(cls_logits, labels, label_smoothing, mask=mask)
    ce_dist = cross_entropy(dist_logits, teacher_labels, mask=mask)
    return (1.0 - distill_weight) * ce_cls + distill_weight * ce_dist


def deit_soft(
    cls_logits: torch.Tensor,
    dist_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    distill_weight: float = 0.5,
    label_smoothing: float = 0.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """DeiT's soft distillation through the token: ``(1 - w) CE(cls, y) + w T^2 KL(p_t^T || p_dist^T)``.

    Args:
        cls_logits: (B, K) class-head logits.
        dist_logits: (B, K) distillation-head logits.
        labels: (B,) classes (-100: no label).
        teacher_logits: (B, K) teacher logits.
        temperature: T > 0 of the softened distributions.
        distill_weight: w in [0, 1], the distillation head's share.
        label_smoothing: for the class head's cross-entropy.
        mask: optional (B,) bool, the samples that count.

    Returns:
        A scalar tensor.
    """
    _check_shapes(cls_logits, dist_logits, teacher_logits)
    ce_cls = cross_entropy(cls_logits, labels, label_smoothing, mask=mask)
    kl = kd_kl(dist_logits, teacher_logits.detach(), temperature, mask=mask)
    return (1.0 - distill_weight) * ce_cls + distill_weight * kl


def _check_shapes(cls_logits: torch.Tensor, dist_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if cls_logits.dim() != 2 or cls_logits.shape != dist_logits.shape:
        raise ValueError(
            f"DeiT distillation takes (B, K) class and distillation logits of one shape; got "
            f"{tuple(cls_logits.shape)} and {tuple(dist_logits.shape)}"
        )
    if teacher_logits.shape != cls_logits.shape:
        raise ValueError(
            f"student logits {tuple(cls_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ: do teacher and student have the same classes?"
        )


def _heads(inputs: TermInputs, term: str) -> TokenLogits:
    """The two heads the student gave, or a ConfigError saying how to give them."""
    if inputs.student_heads is None:
        raise ConfigError(
            f"the {term!r} loss term trains a distillation token, but the student has none: its output is "
            "plain (B, K) logits. Fix: use a student with a distillation token (model vit-tiny with "
            "kwargs {distill_token: true}), or a term for plain students (kd)."
        )
    return inputs.student_heads


def _teacher(inputs: TermInputs, term: str) -> torch.Tensor:
    if not isinstance(inputs.teacher_logits, torch.Tensor) or inputs.teacher_logits.dim() != 2:
        raise ConfigError(
            f"the {term!r} loss term needs the teacher's (B, K) class logits; got "
            f"{type(inputs.teacher_logits).__name__}. It distills image classifiers, not token sequences."
        )
    return inputs.teacher_logits


# Cross-entropy on (B,) class labels and the argmax (or softmax) of a classifier teacher: image
# classification only; `check_term_tasks` refuses the terms on multilabel, regression or dense data.
DEIT_TASKS = frozenset({"classification"})


def _check_weight(term: str, distill_weight: float) -> None:
    if not 0.0 <= distill_weight <= 1.0:
        raise ConfigError(
            f"{term} option distill_weight must be in [0, 1] (the distillation head's share), got "
            f"{distill_weight!r}"
        )


class _TokenTerm(Term):
    """What both DeiT terms share: the distillation head's weight, label smoothing, the tasks they fit."""

    uses_mask = True
    tasks = DEIT_TASKS
    term_name: str  # set by register_loss

    def __init__(self, ctx: TermContext, distill_weight: float = 0.5) -> None:
        super().__init__()
        _check_weight(self.term_name, distill_weight)
        self.distill_weight = distill_weight
        self.label_smoothing = ctx.label_smoothing


@register_loss("deit")
class DeiTTerm(_TokenTerm):
    """DeiT hard-label distillation through the distillation token (`deit_hard`); the whole objective.

    Options:
        distill_weight: the distillation head's share w (0.5 in DeiT); the class head gets 1 - w.
    """

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        heads = _heads(inputs, "deit")
        return deit_hard(
            heads.cls,
            heads.dist,
            inputs.labels,
            _teacher(inputs, "deit"),
            self.distill_weight,
            self.label_smoothing,
            mask=inputs.mask,
        )


@register_loss("deit_soft")
class DeiTSoftTerm(_TokenTerm):
    """DeiT soft distillation through the distillation token (`deit_soft`, at the recipe's temperature).

    Options:
        distill_weight: the distillation head's share w; the class head gets 1 - w.
    """

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        heads = _heads(inputs, "deit_soft")
        return deit_soft(
            heads.cls,
            heads.dist,
            inputs.labels,
            _teacher(inputs, "deit_soft"),
            inputs.temperature,
            self.distill_weight,
            self.label_smoothing,
            mask=inputs.mask,
        )
