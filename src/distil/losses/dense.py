"""Dense (per-pixel) distillation: (B, K, H, W) logits, one class distribution per pixel.

A pixel is a row: the logits are viewed as (B, H*W, K) positions, as a language model's (B, T, V), so the
terms are the existing pure functions (`kd_kl`, `cross_entropy`), never a second KL:

* ``dense_kd``: Hinton's T^2-scaled KL to the teacher's per-pixel distribution, over every pixel (the
  teacher has an output where the labels have none);
* ``dense_ce``: cross-entropy to the (B, H, W) pixel classes, pixels labelled `IGNORE_INDEX` (255 as
  saved) left out.

An optional (B,) bool mask says which samples count.
"""

from __future__ import annotations

import torch

from distil.errors import ConfigError
from distil.losses.functional import cross_entropy, kd_kl
from distil.losses.registry import Term, TermContext, TermInputs, register_loss


def pixel_rows(logits: torch.Tensor, what: str = "outputs") -> torch.Tensor:
    """(B, K, H, W) logits as (B, H*W, K) positions (a view where the memory allows).

    Raises:
        ConfigError: logits that are not 4-D.
    """
    if logits.dim() != 4:
        raise ConfigError(
            f"dense terms read (B, K, H, W) per-pixel logits, got {what} of shape {tuple(logits.shape)}; use "
            "a model that keeps H x W (e.g. tiny-segnet) on dense data."
        )
    return logits.flatten(2).transpose(1, 2)


def dense_kd(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """T^2 * KL(teacher || student) per pixel, averaged over every pixel of the valid samples.

    Args:
        student: (B, K, H, W) the student's logits.
        teacher: (B, K, H, W) the teacher's, or its (B, H*W, K) pixel rows (as a teacher cache stores them).
        temperature: T > 0.
        mask: (B,) bool, the samples that count; None: all.
    """
    rows = teacher if teacher.dim() == 3 else pixel_rows(teacher, "teacher outputs")  # cached: rows already
    return kd_kl(pixel_rows(student), rows, temperature, mask)


def dense_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy to (B, H, W) pixel classes, averaged over the labelled pixels (IGNORE_INDEX skipped).

    Raises:
        ConfigError: labels that are not (B, H, W) beside the logits' (B, K, H, W).
    """
    rows = pixel_rows(logits)
    b, _, h, w = logits.shape
    if tuple(labels.shape) != (b, h, w):
        raise ConfigError(
            f"dense_ce compares (B, K, H, W) logits {tuple(logits.shape)} with (B, H, W) pixel classes, got "
            f"labels of shape {tuple(labels.shape)}; save y as (N, H, W) classes of the inputs' size."
        )
    return cross_entropy(rows, labels.reshape(b, h * w), label_smoothing, mask=mask)


@register_loss("dense_kd")
class DenseKDTerm(Term):
    """Per-pixel KD to the teacher's (B, K, H, W) logits at the loss's temperature."""

    uses_mask = True
    tasks = frozenset({"dense"})

    def __init__(self, ctx: TermContext) -> None:
        super().__init__()

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if not isinstance(inputs.teacher_logits, torch.Tensor):
            raise ConfigError(
                "the dense_kd term needs the teacher's (B, K, H, W) logits, but none were given."
            )
        return dense_kd(
            inputs.student_logits, inputs.teacher_logits.detach(), inputs.temperature, inputs.mask
        )


@register_loss("dense_ce")
class DenseCETerm(Term):
    """Per-pixel cross-entropy to the labels, the dense counterpart of ``ce`` (a teacher trains on it);
    the recipe's label smoothing applies per pixel."""

    uses_mask = True
    needs_teacher = False
    tasks = frozenset({"dense"})

    def __init__(self, ctx: TermContext) -> None:
        super().__init__()
        self.label_smoothing = ctx.label_smoothing

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return dense_cross_entropy(inputs.student_logits, inputs.labels, inputs.mask, self.label_smoothing)
