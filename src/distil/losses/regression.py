"""Regression distillation: D real outputs per sample, matched to the teacher's outputs and to the targets.

Regression outputs are values, not logits: there is no distribution to soften, so the temperature does
not apply. The student is pulled towards the teacher's outputs (``reg_kd``) and towards the float targets
(``reg_label``, the counterpart of ``ce``) by one distance, chosen per term with the ``loss`` option:

* ``mse``: mean squared error (the default);
* ``l1``: mean absolute error (robust to outlying targets);
* ``huber``: squared below ``delta``, linear above it (``torch.nn.functional.huber_loss``).

Shapes: outputs (B, D); targets (B, D), or (B,) for D = 1; an optional (B,) bool mask says which samples
count. Every distance is the mean over the valid samples and the D outputs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from distil.errors import ConfigError
from distil.losses.registry import Term, TermContext, TermInputs, register_loss

Distance = Literal["mse", "l1", "huber"]
DISTANCES: tuple[str, ...] = ("mse", "l1", "huber")


def _as_rows(target: torch.Tensor, outputs: torch.Tensor, what: str) -> torch.Tensor:
    """`target` as (B, D) like `outputs` ((B,) targets of one output gain a column), or a clear error."""
    if target.dim() == 1 and outputs.dim() == 2 and outputs.shape[1] == 1:
        target = target.unsqueeze(1)
    if outputs.dim() != 2 or tuple(target.shape) != tuple(outputs.shape):
        raise ConfigError(
            f"regression terms compare (B, D) outputs with (B, D) {what}, got {tuple(outputs.shape)} and "
            f"{tuple(target.shape)}; build the model with one output per target column (num_classes=D)."
        )
    return target.to(outputs.device).float()


def regression_distance(
    outputs: torch.Tensor,
    target: torch.Tensor,
    distance: str = "mse",
    *,
    delta: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean `distance` between (B, D) `outputs` and `target` over the valid samples and the outputs.

    Args:
        outputs: (B, D) the student's outputs.
        target: (B, D) or, for D = 1, (B,) values (the teacher's outputs or the labels).
        distance: "mse", "l1" or "huber".
        delta: huber only: where the squared part turns linear.
        mask: (B,) bool, the samples that count; None: all. No valid sample gives 0.

    Raises:
        ConfigError: an unknown distance, or shapes that differ.
    """
    if distance not in DISTANCES:
        raise ConfigError(f"regression distance must be one of {list(DISTANCES)}, got {distance!r}.")
    target = _as_rows(target, outputs, "targets")
    s = outputs.float()
    if distance == "mse":
        per = (s - target).square()
    elif distance == "l1":
        per = (s - target).abs()
    else:
        per = F.huber_loss(s, target, reduction="none", delta=delta)
    if mask is None:
        return per.mean()
    keep = mask.to(per.device, per.dtype).reshape(-1, 1)
    return (per * keep).sum() / (keep.sum() * per.shape[1]).clamp(min=1)


class _RegressionTerm(Term):
    """A regression distance with its options (`loss`, `delta`) checked when built."""

    uses_mask = True
    tasks = frozenset({"regression"})

    def __init__(self, ctx: TermContext, loss: str = "mse", delta: float = 1.0) -> None:
        super().__init__()
        if loss not in DISTANCES:
            raise ConfigError(f"option loss must be one of {list(DISTANCES)}, got {loss!r}.")
        if delta <= 0:
            raise ConfigError(f"option delta must be > 0, got {delta}.")
        self.loss, self.delta = loss, delta


@register_loss("reg_kd")
class RegressionKDTerm(_RegressionTerm):
    """The distance of the student's outputs to the teacher's (no temperature: they are values)."""

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if not isinstance(inputs.teacher_logits, torch.Tensor):
            raise ConfigError("the reg_kd term needs the teacher's (B, D) outputs, but none were given.")
        teacher = inputs.teacher_logits.detach()
        return regression_distance(
            inputs.student_logits, teacher, self.loss, delta=self.delta, mask=inputs.mask
        )


@register_loss("reg_label")
class RegressionLabelTerm(_RegressionTerm):
    """The distance of the student's outputs to the float targets, the regression counterpart of ``ce``."""

    needs_teacher = False

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return regression_distance(
            inputs.student_logits, inputs.labels, self.loss, delta=self.delta, mask=inputs.mask
        )
