"""Loss modules over logits, with the one signature every loss in distil has:

loss(student_out, teacher_out, batch) -> dict of named scalar terms, the total under "loss".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distil.losses.functional import cross_entropy, kd_kl


class CELoss(nn.Module):
    """Plain supervised training: cross-entropy on the labels (teacher_out is ignored)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(
        self, student_out: torch.Tensor, teacher_out: Any, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        ce = cross_entropy(student_out, batch["y"], self.label_smoothing)
        return {"loss": ce, "ce": ce}


class KDLoss(nn.Module):
    """Hinton distillation: kd_weight * T^2 * KL(p_t^T || p_s^T) + ce_weight * CE(student, labels).

    Args:
        temperature: softening temperature T.
        kd_weight: weight of the soft (teacher) term.
        ce_weight: weight of the hard-label term.
        label_smoothing: smoothing of the hard-label term.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        kd_weight: float = 0.9,
        ce_weight: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.kd_weight = kd_weight
        self.ce_weight = ce_weight
        self.label_smoothing = label_smoothing

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        kd = kd_kl(student_out, teacher_out, self.temperature)
        ce = cross_entropy(student_out, batch["y"], self.label_smoothing)
        return {"loss": self.kd_weight * kd + self.ce_weight * ce, "kd": kd, "ce": ce}
