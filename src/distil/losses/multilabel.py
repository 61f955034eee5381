"""Multilabel distillation: L independent yes/no labels per sample, each a sigmoid of its own logit.

A softmax over the L outputs (the ``kd`` term) would make the labels compete for one unit of probability,
which they do not: a frame of audio can hold several pitches, an image several objects. Here every label
is its own Bernoulli distribution, softened by the temperature as Hinton's softmax is:

* ``ml_kd`` (:func:`binary_kd`): the per-label binary KL(sigmoid(t/T) || sigmoid(s/T)), averaged over labels
  and samples and scaled by T^2 so that its gradients keep their size as T changes (as ``kd``);
* ``ml_bce`` (:func:`binary_cross_entropy`): binary cross-entropy to the 0/1 labels, the counterpart of ``ce``.

Shapes: logits and labels (B, L); an optional (B,) bool mask says which samples count. Both are means
over the valid samples and the labels, so their size does not grow with L (the CREPE pitch tracker has 360).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distil.errors import ConfigError
from distil.losses.registry import Term, TermContext, TermInputs, register_loss


def _check_pair(student: torch.Tensor, other: torch.Tensor, what: str) -> None:
    """Refuse anything but two (B, L) tensors of one shape, naming what was given."""
    if student.dim() != 2 or tuple(student.shape) != tuple(other.shape):
        raise ConfigError(
            f"multilabel terms compare (B, L) student logits with (B, L) {what}, got {tuple(student.shape)} and "
            f"{tuple(other.shape)}; build the model with one output per label (num_classes=L)."
        )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, L) `values` over the labels of the samples `mask` ((B,) bool) keeps; 0 when none do."""
    if mask is None:
        return values.mean()
    keep = mask.to(values.device, values.dtype).reshape(-1, 1)
    return (values * keep).sum() / (keep.sum() * values.shape[1]).clamp(min=1)


def binary_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * mean over labels and samples of KL(Bernoulli(sigmoid(t/T)) || Bernoulli(sigmoid(s/T))).

    Per label, with p = sigmoid(t/T) and q = sigmoid(s/T): p log(p/q) + (1-p) log((1-p)/(1-q)), computed
    from log-sigmoids, so saturated logits give finite values and gradients.

    Args:
        student_logits: (B, L) pre-sigmoid outputs.
        teacher_logits: (B, L) pre-sigmoid outputs (no gradient flows into them).
        temperature: T > 0; both sides are divided by it.
        mask: (B,) bool, the samples that count; None: all.

    Returns:
        A scalar, >= 0, 0 when the two agree.

    Raises:
        ConfigError: shapes that are not one (B, L).
    """
    _check_pair(student_logits, teacher_logits, "teacher logits")
    s = student_logits.float() / temperature
    t = teacher_logits.detach().float() / temperature
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return _masked_mean(kl, mask) * temperature**2


def binary_cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over labels and samples of the binary cross-entropy of sigmoid(s) to the 0/1 `labels`.

    Args:
        student_logits: (B, L) pre-sigmoid outputs.
        labels: (B, L) 0/1 (floats in [0, 1] are soft targets).
        mask: (B,) bool, the samples that count; None: all.

    Raises:
        ConfigError: labels that are not (B, L) like the logits (e.g. class indices).
    """
    _check_pair(student_logits, labels, "0/1 labels")
    bce = F.binary_cross_entropy_with_logits(
        student_logits.float(), labels.to(student_logits.device).float(), reduction="none"
    )
    return _masked_mean(bce, mask)


def _teacher(inputs: TermInputs) -> torch.Tensor:
    if not isinstance(inputs.teacher_logits, torch.Tensor):
        raise ConfigError("the ml_kd term needs the teacher's (B, L) logits, but none were given.")
    return inputs.teacher_logits


@register_loss("ml_kd")
class BinaryKDTerm(Term):
    """Per-label binary KD to the teacher's tempered sigmoids (:func:`binary_kd`), the multilabel ``kd``."""

    uses_mask = True
    tasks = frozenset({"multilabel"})

    def __init__(self, ctx: TermContext) -> None:
        super().__init__()

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return binary_kd(inputs.student_logits, _teacher(inputs), inputs.temperature, inputs.mask)


@register_loss("ml_bce")
class BCETerm(Term):
    """Binary cross-entropy to the 0/1 labels (:func:`binary_cross_entropy`), the multilabel ``ce``."""

    needs_teacher = False
    uses_mask = True
    tasks = frozenset({"multilabel"})

    def __init__(self, ctx: TermContext) -> None:
        super().__init__()
        if ctx.label_smoothing:
            raise ConfigError(
                f"label_smoothing={ctx.label_smoothing:g} smooths one-class targets of ce; ml_bce trains on 0/1 "
                "labels and would ignore it. Fix: set label_smoothing to 0 for multilabel data."
            )

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return binary_cross_entropy(inputs.student_logits, inputs.labels, inputs.mask)
