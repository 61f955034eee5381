"""Several frozen teachers as one teacher source: the weighted mixture of their softened distributions
(`mix="probs"`), or the weighted mean of their logits (`mix="logits"`, FedDF's ensemble)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from distil.config import KDConfig
from distil.data import DataBundle
from distil.data.batch import INPUTS, call_model
from distil.errors import ConfigError
from distil.losses.functional import ensemble_logits, mean_logits
from distil.teachers.live import freeze

EnsembleMix = Literal["probs", "logits"]
ENSEMBLE_MIXES: tuple[EnsembleMix, ...] = ("probs", "logits")
"""How an ensemble combines its teachers: `probs`, the mixture of their T-softened distributions (the
default of multi-teacher KD); `logits`, the weighted mean of their logits (FedDF, Lin et al. 2020)."""


class EnsembleTeacher:
    """Runs every teacher on a batch and returns one set of logits for the KD terms.

    With `mix="probs"` the output is `T * log(sum_i w_i softmax(z_i / T))` (weights normalised), so a KD
    term at the same temperature T distills from sum_i w_i p_i^T exactly (see
    `distil.losses.functional.ensemble_logits`). With `mix="logits"` it is `sum_i w_i z_i` (weights
    normalised), whatever T: the KD term then distills from softmax of the mean logits.
    Feature terms capture features from the first teacher (`modules[0]`).

    Args:
        modules: the trained teachers (frozen here: eval mode, no gradients).
        weights: one non-negative weight per teacher (default: equal).
        temperature: the T the probability mixture is formed at; use the KD temperature. A loss whose
            temperature follows a schedule (`temperature_final`) sets it per call through :meth:`follow`.
        mix: `ENSEMBLE_MIXES`: "probs" (default) or "logits".

    Raises:
        ConfigError: no teachers, weights that do not match them, or an unknown mix.
    """

    def __init__(
        self,
        modules: Sequence[nn.Module],
        weights: Sequence[float] | None = None,
        temperature: float = 4.0,
        mix: EnsembleMix = "probs",
    ) -> None:
        if not modules:
            raise ConfigError("an ensemble needs at least one teacher")
        if mix not in ENSEMBLE_MIXES:
            raise ConfigError(f"unknown ensemble mix {mix!r}; valid: {', '.join(ENSEMBLE_MIXES)}")
        weights = list(weights) if weights is not None else [1.0] * len(modules)
        if len(weights) != len(modules) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                f"an ensemble of {len(modules)} teachers needs {len(modules)} non-negative weights with a "
                f"positive sum, got {weights}"
            )
        self.modules = [freeze(m) for m in modules]
        self.weights = weights
        self.temperature = temperature
        self.mix = mix
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
        if self.mix == "logits":
            return mean_logits(logits, self.weights)
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
