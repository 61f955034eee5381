"""Relational terms: RKD, PKT and similarity-preserving KD transfer how samples relate within a batch.

They compare (B, B) structures, so student and teacher feature sizes may differ and need no adapter.
"""

from __future__ import annotations

import torch

from distil.losses.feature import select_pairs
from distil.losses.functional import pkt, rkd_angle, rkd_distance, similarity_preserving
from distil.losses.registry import Term, TermContext, TermInputs, register_loss


@register_loss("rkd")
class RKDTerm(Term):
    """Relational KD: distance_weight * RKD-D + angle_weight * RKD-A (25 and 50 as in the paper).

    Options:
        distance_weight, angle_weight: the two parts' weights.
        pairs: indices into kd.feature_pairs (default: the last pair, the embeddings).
    """

    needs_features = True

    def __init__(
        self,
        ctx: TermContext,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        pairs: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.indices = select_pairs(ctx, pairs, "last", "rkd")
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        total = []
        for i in self.indices:
            s, t = inputs.student_features[i], inputs.teacher_features[i]
            total.append(self.distance_weight * rkd_distance(s, t) + self.angle_weight * rkd_angle(s, t))
        return torch.stack(total).sum()


@register_loss("pkt")
class PKTTerm(Term):
    """Probabilistic knowledge transfer on the selected pairs (default: the last pair)."""

    needs_features = True

    def __init__(self, ctx: TermContext, pairs: list[int] | None = None) -> None:
        super().__init__()
        self.indices = select_pairs(ctx, pairs, "last", "pkt")

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return torch.stack(
            [pkt(inputs.student_features[i], inputs.teacher_features[i]) for i in self.indices]
        ).sum()


@register_loss("sp")
class SPTerm(Term):
    """Similarity-preserving KD on the selected pairs (default: the last pair)."""

    needs_features = True

    def __init__(self, ctx: TermContext, pairs: list[int] | None = None) -> None:
        super().__init__()
        self.indices = select_pairs(ctx, pairs, "last", "sp")

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return torch.stack(
            [
                similarity_preserving(inputs.student_features[i], inputs.teacher_features[i])
                for i in self.indices
            ]
        ).sum()
