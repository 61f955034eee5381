"""Several frozen teachers as one teacher source: the weighted mixture of their softened distributions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from distil.config import KDConfig
from distil.data import DataBundle
from distil.data.batch import INPUTS, call_model
from distil.errors import ConfigError
from distil.losses.functional import ensemble_logits
from distil.teachers.live import freeze


class EnsembleTeacher:
    """Runs every teacher on a batch and returns logits whose T-softened distribution is the mixture.

    The output is `T * log(sum_i w_i softmax(z_i / T))` (weights normalised), so a KD term at the same
    temperature T distills from sum_i w_i p_i^T exactly (see `distil.losses.functional.ensemble_logits`).
    Feature terms capture features from the first teacher (`modules[0]`).

    Args:
        modules: the trained teachers (frozen here: eval mode, no gradients).
        weights: one non-negative weight per teacher (default: equal).
        temperature: the T the mixture is formed at; use the KD temperature. A loss whose temperature
            follows a schedule (`temperature_final`) sets it per call through :meth:`follow`.

    Raises:
        ConfigError: no teachers, or weights that do not match them.
    """

    def __init__(
        self, modules: Sequence[nn.Module], weights: Sequence[float] | None = None, temperature: float = 4.0
    ) -> None:
        if not modules:
            raise ConfigError("an ensemble needs at least one teacher")
        weights = list(weights) if weights is not None else [1.0] * len(modules)
        if len(weights) != len(modules) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                f"an ensemble of {len(modules)} teachers needs {len(modules)} non-negative weights with a "
                f"positive sum, got {weights}"
            )
        self.modules = [freeze(m) for m in modules]
        self.weights = weights
        self.temperature = temperature
        self._temperature: Callable[[], float] | None = None

    def follow(self, temperature: Callable[[], float]) -> EnsembleTeacher:
        """Mix at `temperature()` (e.g. `ComposedLoss.current_temperature`) at each call, so the mixture
        is the one the KD term distills at in every epoch, not the first epoch's."""
        self._temperature = temperature
        return self

    def to(self, device: torch.device) -> EnsembleTeacher:
        for m in self.modules:
            m.to(device)
        return self

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = [call_model(m, batch[INPUTS]) for m in self.modules]
        shapes = {tuple(z.shape) for z in logits}
        if len(shapes) > 1:
            raise ConfigError(f"the teachers of an ensemble give different output shapes {sorted(shapes)}")
        t = self._temperature() if self._temperature is not None else self.temperature
        return ensemble_logits(logits, self.weights, t)


def recipe_teachers(
    kd: KDConfig, teacher: nn.Module, data: DataBundle, *, trust_code: bool = False
) -> tuple[list[nn.Module], list[float] | None]:
    """The teachers of a recipe: the main one plus `kd.teachers` (built from their checkpoints).

    Each sidecar may name the factory its entry's `model` names (or any, with `trust_code`).

    Returns:
        (teachers, weights); weights is None for a single teacher.

    Raises:
        CheckpointError, DataError: an extra teacher's checkpoint is missing or does not fit `data`.
    """
    if not kd.teachers:
        return [teacher], None
    from distil.train.build import build_model

    extra = [build_model(t, data, trust_code=trust_code)[0] for t in kd.teachers]
    return [teacher, *extra], [kd.teacher_weight, *(t.weight for t in kd.teachers)]
