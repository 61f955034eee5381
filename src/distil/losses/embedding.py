"""Embedding distillation: the student's (B, D_s) embedding pulled onto the teacher's (B, D_t) embedding.

An embedding model's outputs are vectors compared by direction and distance (retrieval, clustering), not
logits: there is no distribution to soften, so the temperature does not apply. The terms:

* ``emb_mse`` (:func:`embedding_mse`): mean squared distance to the teacher's embedding;
* ``emb_cos`` (:func:`embedding_cosine`): 1 - cosine similarity to it (the direction alone);
* ``emb_kd``: their sum (``mse`` and ``cos`` weigh the parts), the default teacher-matching term;
* ``emb_label``: mean squared distance to the data's target vectors, the counterpart of ``ce`` that a
  teacher is trained on.

Where the student's width D_s (its ``kwargs.num_classes``) differs from the teacher's D_t, a teacher-matching
term owns a trainable linear projection D_s -> D_t, as the FitNets term owns its regressor: it trains with
the student but is part of the loss, so the exported student keeps its own width.

Shapes: embeddings (B, D); an optional (B,) bool mask says which samples count. Every term is a mean over
the valid samples (MSE also over the D dimensions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distil.errors import ConfigError
from distil.losses.registry import Term, TermContext, TermInputs, register_loss


def _check_pair(student: torch.Tensor, target: torch.Tensor, what: str) -> None:
    """Refuse embeddings that are not (B, D) rows of the same shape."""
    if student.dim() != 2 or tuple(student.shape) != tuple(target.shape):
        raise ConfigError(
            f"embedding terms compare (B, D) embeddings with (B, D) {what}, got {tuple(student.shape)} and "
            f"{tuple(target.shape)}; the teacher's embedding must have the data's width "
            "(its target vectors'); a student of another width is projected onto it by the term."
        )


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of (B,) values over the valid samples; no valid sample gives 0."""
    if mask is None:
        return per_sample.mean()
    keep = mask.to(per_sample.device, per_sample.dtype).reshape(-1)
    return (per_sample * keep).sum() / keep.sum().clamp(min=1)


def embedding_mse(
    student: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared distance between (B, D) embeddings, averaged over the D dimensions and valid samples.

    Args:
        student: (B, D) the student's (projected) embedding.
        target: (B, D) the teacher's embedding or the target vectors.
        mask: (B,) bool, the samples that count; None: all.

    Raises:
        ConfigError: shapes that differ.
    """
    _check_pair(student, target, "targets")
    per = (student.float() - target.to(student.device).float()).square().mean(dim=1)
    return _masked_mean(per, mask)


def embedding_cosine(
    student: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - cosine similarity between (B, D) embeddings, averaged over the valid samples (0: same direction).

    Args:
        student: (B, D) the student's (projected) embedding.
        target: (B, D) the teacher's embedding.
        mask: (B,) bool, the samples that count; None: all.

    Raises:
        ConfigError: shapes that differ.
    """
    _check_pair(student, target, "targets")
    cos = F.cosine_similarity(student.float(), target.to(student.device).float(), dim=1, eps=1e-8)
    return _masked_mean(1 - cos, mask)


class _TeacherEmbeddingTerm(Term):
    """A distance to the teacher's embedding, through a trainable projection where the widths differ."""

    uses_mask = True
    needs_student_width = True
    tasks = frozenset({"embedding"})
    mse_weight: float = 1.0
    cos_weight: float = 1.0

    def __init__(self, ctx: TermContext) -> None:
        super().__init__()
        student_dim, teacher_dim = ctx.student_width, ctx.num_classes
        # Owned by the loss, so it trains with the student but is never exported with it.
        self.projection: nn.Module = (
            nn.Linear(student_dim, teacher_dim, bias=False)
            if student_dim is not None and student_dim != teacher_dim
            else nn.Identity()
        )

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if not isinstance(inputs.teacher_logits, torch.Tensor):
            name = getattr(type(self), "term_name", "embedding")
            raise ConfigError(f"the {name} term needs the teacher's (B, D) embedding, but none was given.")
        student = self.projection(inputs.student_logits.float())
        teacher = inputs.teacher_logits.detach()
        loss = student.new_zeros(())
        if self.mse_weight:
            loss = loss + self.mse_weight * embedding_mse(student, teacher, inputs.mask)
        if self.cos_weight:
            loss = loss + self.cos_weight * embedding_cosine(student, teacher, inputs.mask)
        return loss


@register_loss("emb_mse")
class EmbeddingMSETerm(_TeacherEmbeddingTerm):
    """Mean squared distance of the student's (projected) embedding to the teacher's."""

    cos_weight = 0.0


@register_loss("emb_cos")
class EmbeddingCosineTerm(_TeacherEmbeddingTerm):
    """1 - cosine similarity of the student's (projected) embedding to the teacher's."""

    mse_weight = 0.0


@register_loss("emb_kd")
class EmbeddingKDTerm(_TeacherEmbeddingTerm):
    """MSE + (1 - cosine) to the teacher's embedding: the default embedding distillation term."""


@register_loss("emb_label")
class EmbeddingLabelTerm(Term):
    """Mean squared distance of the embedding to the data's target vectors (how a teacher is trained)."""

    uses_mask = True
    needs_teacher = False
    needs_student_width = True
    tasks = frozenset({"embedding"})

    def __init__(self, ctx: TermContext) -> None:
        super().__init__()
        if ctx.label_smoothing:
            raise ConfigError(
                f"label_smoothing={ctx.label_smoothing:g} smooths one-class targets of ce; emb_label fits target "
                "vectors and would ignore it. Fix: set label_smoothing to 0 for embedding data."
            )
        if ctx.student_width is not None and ctx.student_width != ctx.num_classes:
            raise ConfigError(
                f"the emb_label term compares the student's embedding with the {ctx.num_classes}-wide target "
                f"vectors, but the student's is {ctx.student_width} wide. Fix: distil on the teacher alone, "
                "--set 'kd.terms={emb_kd: 1.0}' (its projection bridges the widths)."
            )

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return embedding_mse(inputs.student_logits, inputs.labels, inputs.mask)
