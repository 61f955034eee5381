"""Distillation losses as pure functions: tensors in, scalar tensor out.

Shapes: logits are (B, K) for B samples and K classes; labels are (B,) int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss: T^2 * KL(p_teacher^T || p_student^T), averaged over the batch.

    The T^2 factor keeps the gradient scale of the soft term independent of T (Hinton et al. 2015).

    Args:
        student_logits: (B, K) raw student outputs.
        teacher_logits: (B, K) raw teacher outputs (no gradient needed).
        temperature: T > 0; larger T gives softer distributions.

    Returns:
        A scalar tensor.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ: do teacher and student have the same classes?"
        )
    t = temperature
    # Compute in fp32: under bf16/fp16 autocast the log-softmax of small differences loses precision.
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hard-label cross-entropy, averaged over the batch. logits (B, K), labels (B,)."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
