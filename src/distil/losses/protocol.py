"""What the training loop and `distil.distill` use of a loss besides calling it, as typed protocols.

Any callable `loss(student_out, teacher_out, batch) -> dict` trains (`distil.train.engine.LossFn`). A
loss that also implements `DistillationLoss` (as `ComposedLoss` does) has its epoch set by the loop, can
be carried across training phases (`distill(..., first_epoch=e)`), and tells a teacher cache which
temperatures to store. A plain callable may declare only what it needs from the teacher
(`DeclaresTeacherNeeds`: a `teacher_needs = TeacherNeeds(live=False)` attribute) to train from a cache.

Callers test these with `isinstance` (both are runtime-checkable), never by probing attribute names.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import torch

from distil.losses.registry import TeacherNeeds


@runtime_checkable
class DeclaresTeacherNeeds(Protocol):
    """A loss that says what it needs from the teacher (`distil.teachers.cache.choose_teacher_source`)."""

    @property
    def teacher_needs(self) -> TeacherNeeds:
        """Whether the loss needs the teacher's forward pass (live) or only its logits (a cache will do)."""
        ...


@runtime_checkable
class DistillationLoss(DeclaresTeacherNeeds, Protocol):
    """A loss whose term weights and temperature follow the epoch: `ComposedLoss`.

    Attributes:
        epoch_offset: the run's epoch of this training phase's epoch 0, so a loss carried across phases
            continues its warm-ups and temperature schedule (set by `distil.distill(..., first_epoch=)`).
    """

    epoch_offset: int

    def __call__(
        self, student_out: Any, teacher_out: Any, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The named loss terms of one batch, the weighted total under "loss"."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Select the phase's epoch (0-based) whose weights and temperature apply; the loop calls it."""
        ...

    def current_temperature(self) -> float:
        """The softening temperature of the current epoch (a top-k teacher cache follows it)."""
        ...

    def temperatures(self) -> tuple[float, ...]:
        """Every temperature the run uses (a top-k teacher cache stores the tail mass at each)."""
        ...


@runtime_checkable
class ChoosesModelOutputs(Protocol):
    """A loss that asks the models for something other than their logits: `ComposedLoss` with the fused
    LM head (`distil.losses.fused`) asks a causal LM for its hidden states and head (``head=False``).

    The loop passes the student's options to its forward (`distil.data.batch.call_model`); a live
    teacher is built with the teacher's (`distil.teachers.source.teacher_source`).
    """

    def model_call_options(self, role: Literal["student", "teacher"]) -> dict[str, Any]:
        """Keyword arguments for the forward of the student or the teacher ({} = plain logits)."""
        ...
