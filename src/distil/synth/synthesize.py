"""`synthesize`: a transfer set made from the teacher alone, by one of the registered methods.

A method takes the frozen teacher, the (C, H, W) input shape, the class count and the settings, and
returns inputs in the teacher's input space; `synthesize` labels them with the teacher and times it.
Methods are looked up in `METHODS` (unknown names list the valid ones).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from distil.errors import ConfigError, ModelError
from distil.registry import Registry
from distil.synth.adversarial import AdversarialConfig, play
from distil.synth.deepinversion import DeepInversionConfig, invert_batch, require_batchnorm
from distil.teachers.live import frozen

Progress = Callable[[int, int], None]
"""Called as progress(done, total) in the method's own units (inversion iterations, generator steps)."""


@dataclass(frozen=True)
class SynthesisConfig:
    """What to synthesise.

    Attributes:
        method: a `METHODS` name: "deepinversion" or "adversarial".
        count: inputs to make.
        seed: seeds every random choice (targets, noise, initialisations).
        deepinversion: the inversion's settings.
        adversarial: the adversarial game's settings.
    """

    method: str = "deepinversion"
    count: int = 1000
    seed: int = 0
    deepinversion: DeepInversionConfig = field(default_factory=DeepInversionConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)


@dataclass
class SyntheticSet:
    """Synthetic inputs in the teacher's input space, with what the teacher says of them.

    Attributes:
        inputs: (N, C, H, W) float32 (normalized as the teacher's training inputs were).
        targets: (N,) the classes the inputs were made for (DeepInversion), or None (adversarial: the
            generator makes inputs for no class).
        teacher_labels: (N,) the teacher's argmax on `inputs`.
        method: the method's name.
        seed: the seed.
        seconds: wall time of the synthesis.
        settings: the method's settings (for the dataset's sidecar).
        student: the adversarial game's probe student (None for DeepInversion).
    """

    inputs: torch.Tensor
    targets: torch.Tensor | None
    teacher_labels: torch.Tensor
    method: str
    seed: int
    seconds: float
    settings: dict[str, Any]
    student: nn.Module | None = None

    @property
    def ids(self) -> list[str]:
        """One stable id per input: method, seed and position (what caches and reports key on)."""
        return [f"{self.method}-s{self.seed}-{i:06d}" for i in range(len(self.inputs))]

    @property
    def teacher_agreement(self) -> float | None:
        """The share of inputs the teacher gives the class they were made for; None without targets."""
        if self.targets is None:
            return None
        return float((self.teacher_labels == self.targets).float().mean())


class Method(Protocol):
    """A synthesis method: returns (inputs, targets or None, probe student or None)."""

    def __call__(
        self,
        teacher: nn.Module,
        input_shape: tuple[int, ...],
        num_classes: int,
        cfg: SynthesisConfig,
        student: nn.Module | None,
        progress: Progress | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, nn.Module | None]: ...


METHODS: Registry[Method] = Registry("synthesis method", error=ConfigError)


@METHODS.register("deepinversion")
def _deepinversion(
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: SynthesisConfig,
    student: nn.Module | None,
    progress: Progress | None,
) -> tuple[torch.Tensor, torch.Tensor | None, nn.Module | None]:
    di = cfg.deepinversion
    require_batchnorm(teacher)  # before any work
    if di.competition_weight > 0 and student is None:
        raise ConfigError(
            "deepinversion.competition_weight > 0 needs a student (the adaptive competition term); pass "
            "one, or set competition_weight to 0."
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    # Balanced classes in a seeded order, so every batch mixes classes as training batches do.
    targets = (torch.arange(cfg.count) % num_classes)[torch.randperm(cfg.count, generator=gen)]
    total = -(-cfg.count // di.batch_size) * di.iterations
    done = 0
    batches = []

    def step(_terms: dict[str, float]) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with frozen(student):
        for start in range(0, cfg.count, di.batch_size):
            part = targets[start : start + di.batch_size]
            batches.append(
                invert_batch(
                    teacher, part, input_shape, di, generator=gen, student=student, on_step=step
                ).cpu()
            )
    return torch.cat(batches), targets, None


@METHODS.register("adversarial")
def _adversarial(
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: SynthesisConfig,
    student: nn.Module | None,
    progress: Progress | None,
) -> tuple[torch.Tensor, torch.Tensor | None, nn.Module | None]:
    del num_classes  # the generator has no class targets
    if student is None:
        raise ConfigError(
            "the adversarial method trains a generator against a student: pass the student model (the "
            "recipe's student in `distil synthesize`)."
        )
    steps = cfg.adversarial.steps
    result = play(
        teacher,
        student,
        input_shape,
        cfg.count,
        cfg.adversarial,
        seed=cfg.seed,
        on_step=None if progress is None else (lambda n: progress(n, steps)),
    )
    return result.inputs, None, result.student


def synthesize(
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: SynthesisConfig,
    *,
    student: nn.Module | None = None,
    progress: Progress | None = None,
) -> SyntheticSet:
    """Make `cfg.count` inputs from `teacher` alone by `cfg.method`.

    The teacher is frozen here (eval mode, no parameter gradients) and left so.

    Args:
        teacher: a trained classifier taking (B, *input_shape) normalized inputs.
        input_shape: (C, H, W) of one input.
        num_classes: the teacher's output count.
        cfg: method, count, seed and the method's settings.
        student: the adversarial method's probe student (trained in place; pass a fresh copy), or
            DeepInversion's competition student (not updated).
        progress: progress callback.

    Returns:
        The synthetic set.

    Raises:
        ConfigError: an unknown method, a non-positive count, or a missing student.
        ModelError: a method that does not apply to the teacher (no BatchNorm for DeepInversion),
            or inputs that are not images.
    """
    method = METHODS.get(cfg.method)
    if cfg.count < 1:
        raise ConfigError(f"count must be a positive number of inputs, got {cfg.count}.")
    if len(input_shape) != 3:
        raise ModelError(
            f"data-free synthesis makes images (C, H, W); this teacher's inputs have shape {input_shape}."
        )
    teacher.eval().requires_grad_(False)
    started = time.perf_counter()
    inputs, targets, probe = method(teacher, tuple(input_shape), num_classes, cfg, student, progress)
    seconds = time.perf_counter() - started
    labels = teacher_argmax(teacher, inputs)
    settings = cfg.deepinversion if cfg.method == "deepinversion" else cfg.adversarial
    return SyntheticSet(
        inputs=inputs,
        targets=targets,
        teacher_labels=labels,
        method=cfg.method,
        seed=cfg.seed,
        seconds=seconds,
        settings=dict(vars(settings)),
        student=probe,
    )


@torch.no_grad()
def teacher_argmax(teacher: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N,) int64: the teacher's class for each input, in batches."""
    device = next(teacher.parameters()).device
    out = [
        teacher(inputs[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(out)
