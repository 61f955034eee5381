"""Online mutual learning (Zhang et al., CVPR 2018, "Deep Mutual Learning"): no fixed teacher.

Two or more students train together; each minimises

    ce_weight * CE(student_i, y) + kd_weight * mean_{j != i} T^2 * KL(p_j^T || p_i^T)

where the peers' distributions p_j are treated as constants (detached), as in the paper. The students
are one trainable module (`Cohort`, whose forward returns every student's logits) and the objective is
one loss (`MutualLoss`), so they train through the one loop, `distil.train.engine.fit`, with its
resume, sharded evaluation, trackers, channels_last and data parallelism. All students see the same
batches, with the same recipe; gradient clipping applies to each student's own norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from distil.data.batch import LABELS
from distil.errors import ConfigError
from distil.losses.functional import cross_entropy, kd_kl
from distil.models.vit import plain_logits


@dataclass
class MutualResult:
    """The trained students (unwrapped, in input order) and one record per epoch."""

    models: list[nn.Module]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_accuracies(self) -> list[float]:
        return (
            [self.history[-1][f"s{i}_eval_accuracy"] for i in range(len(self.models))] if self.history else []
        )


class Cohort(nn.Module):
    """Students trained together as one module: `forward` returns a tuple of their logits, in order.

    The training loop evaluates each student on its own (records `s{i}_eval_accuracy`; the first one's
    is the cohort's `eval_accuracy`) and clips each student's gradient norm on its own.

    Args:
        students: two or more networks with the same inputs (they may differ in architecture).

    Raises:
        ConfigError: fewer than two students.
    """

    def __init__(self, students: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(students) < 2:
            raise ConfigError(
                f"mutual learning needs at least two students, got {len(students)}: pass a list of two or "
                "more models (e.g. two SmallNets with different seeds)."
            )
        self.students = nn.ModuleList(students)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return tuple(student(*args, **kwargs) for student in self.students)


def mutual_losses(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    temperature: float,
    kd_weight: float,
    ce_weight: float,
) -> list[dict[str, torch.Tensor]]:
    """Each student's DML loss terms: {"loss", "ce", "kd"} with the peers' outputs detached.

    Args:
        logits: one (B, K) tensor per student.
        labels: (B,) classes.
        temperature: T of the mimicry term (1 in the paper).
        kd_weight: weight of the mimicry term.
        ce_weight: weight of the supervised term.
    """
    out = []
    for i, z in enumerate(logits):
        peers = [p.detach() for j, p in enumerate(logits) if j != i]
        kd = torch.stack([kd_kl(z, p, temperature) for p in peers]).mean()
        ce = cross_entropy(z, labels)
        out.append({"loss": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd})
    return out


class MutualLoss(nn.Module):
    """The deep-mutual-learning objective of a `Cohort`, in the loop's loss signature.

    Returns {"loss": the sum of the students' losses, "s{i}_loss", "s{i}_ce", "s{i}_kd"}: peers are
    detached, so one backward of the sum gives each student exactly its own loss's gradient.

    Args:
        temperature: T of the mimicry term (1 in the paper).
        kd_weight: weight of the mimicry term.
        ce_weight: weight of the supervised term.
    """

    def __init__(self, temperature: float = 1.0, kd_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature, self.kd_weight, self.ce_weight = temperature, kd_weight, ce_weight

    def forward(
        self, student_out: Sequence[torch.Tensor], teacher_out: Any, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        # A distillation-token student (vit-tiny) trains both heads through their average, as CELoss does.
        logits = [plain_logits(out) for out in student_out]
        per_student = mutual_losses(logits, batch[LABELS], self.temperature, self.kd_weight, self.ce_weight)
        terms = {"loss": torch.stack([t["loss"] for t in per_student]).sum()}
        for i, t in enumerate(per_student):
            terms.update({f"s{i}_{name}": value for name, value in t.items()})
        return terms
