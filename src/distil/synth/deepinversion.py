"""DeepInversion (Yin et al., CVPR 2020): inputs optimised until the teacher's BatchNorm layers see the
feature statistics they saw in training.

Every BatchNorm layer keeps the running mean and variance of its input over the training data. A batch
of inputs whose per-layer batch statistics match them, which the teacher classifies as sampled target
classes, and which are smooth (total variation) and small (l2), is a stand-in for training images. The
optional adaptive competition term (ADI) adds a student: it pushes the inputs towards where teacher and
student disagree, so later batches cover what the student has not learnt yet.

The images are produced in the teacher's input space (the normalized tensors it was trained on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distil.errors import ModelError
from distil.losses.functional import js_divergence
from distil.teachers.live import frozen

ADVERSARIAL_HINT = (
    "use method 'adversarial' (a generator trained against the student: it needs only the teacher's "
    "outputs), or a teacher with BatchNorm layers (e.g. teacher.kwargs.norm=batch for largenet)"
)


@dataclass(frozen=True)
class DeepInversionConfig:
    """Settings of the inversion (defaults: DeepInversion's small-image settings, scaled down).

    Attributes:
        iterations: Adam steps per batch of inputs.
        batch_size: inputs optimised together (their batch statistics are matched).
        lr: Adam learning rate on the inputs.
        bn_weight: weight of the BatchNorm statistics term.
        tv_weight: weight of the total variation prior (smooth images).
        l2_weight: weight of the l2 prior (mean squared input value: small inputs).
        jitter: random shift of up to this many pixels per step (0: none).
        flip: random horizontal flip per step.
        competition_weight: weight of the adaptive competition term (0: plain DeepInversion; needs a
            student).
    """

    iterations: int = 200
    batch_size: int = 128
    lr: float = 0.1
    bn_weight: float = 1.0
    tv_weight: float = 1e-3
    l2_weight: float = 1e-5
    jitter: int = 2
    flip: bool = True
    competition_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ModelError(
                f"deepinversion: iterations and batch_size must be >= 1, got {self.iterations}, {self.batch_size}."
            )
        if min(self.lr, self.bn_weight, self.tv_weight, self.l2_weight, self.competition_weight) < 0:
            raise ModelError("deepinversion: lr and the loss weights must be >= 0.")
        if self.jitter < 0:
            raise ModelError(f"deepinversion: jitter must be >= 0 pixels, got {self.jitter}.")


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """The (path, module) of every BatchNorm layer of `model` that keeps running statistics."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
        and m.running_var is not None
    ]


def require_batchnorm(model: nn.Module, what: str = "the teacher") -> None:
    """Refuse a model that DeepInversion cannot invert, naming the method that applies.

    Raises:
        ModelError: `model` has no BatchNorm layer with running statistics.
    """
    if not batchnorm_layers(model):
        raise ModelError(
            f"DeepInversion matches the running statistics of BatchNorm layers, but {what} "
            f"({type(model).__name__}) has none. Fix: {ADVERSARIAL_HINT}."
        )


def _batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Per channel over every other dim: what BatchNorm normalises with (biased variance, as in training
    # mode's normalisation; the running var is the unbiased estimate, the difference is 1/n).
    dims = [0, *range(2, x.dim())]
    return x.mean(dim=dims), x.var(dim=dims, unbiased=False)


def bn_statistics_loss(
    moments: list[tuple[torch.Tensor, torch.Tensor]], layers: list[nn.modules.batchnorm._BatchNorm]
) -> torch.Tensor:
    """Sum over layers of ||mu - running_mean||_2 + ||var - running_var||_2 (DeepInversion's R_feature).

    Args:
        moments: per layer, the (C,) batch mean and variance of its input.
        layers: the BatchNorm layers, in the same order.

    Returns:
        A scalar tensor.
    """
    total = torch.zeros(())
    for (mu, var), bn in zip(moments, layers, strict=True):
        assert bn.running_mean is not None and bn.running_var is not None
        total = (
            total
            + torch.linalg.vector_norm(mu - bn.running_mean)
            + torch.linalg.vector_norm(var - bn.running_var)
        )
    return total


@contextmanager
def record_bn_inputs(model: nn.Module) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Collect the batch mean/variance of every BatchNorm layer's input during forward passes.

    Yields a list that each forward pass fills (in `batchnorm_layers` order; clear it between passes).
    The hooks are removed on exit.
    """
    moments: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        moments.append(_batch_moments(inputs[0]))

    handles = [m.register_forward_hook(hook) for _, m in batchnorm_layers(model)]
    try:
        yield moments
    finally:
        for h in handles:
            h.remove()


def total_variation_prior(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of vertical and horizontal neighbours.

    Args:
        x: (B, C, H, W) images.
    """
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def _augment(x: torch.Tensor, cfg: DeepInversionConfig, gen: torch.Generator) -> torch.Tensor:
    # Jitter and flips make the inputs work for the teacher under small shifts, not as one brittle
    # pattern (DeepInversion's random roll and flip).
    if cfg.jitter:
        dx, dy = (int(v) for v in torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if cfg.flip and bool(torch.rand((), generator=gen) < 0.5):
        x = torch.flip(x, dims=(3,))
    return x


def inversion_loss(
    teacher: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    cfg: DeepInversionConfig,
    moments: list[tuple[torch.Tensor, torch.Tensor]],
    layers: list[nn.modules.batchnorm._BatchNorm],
    student: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """DeepInversion's objective on inputs `x` (already augmented), as named terms plus their sum.

    Args:
        teacher: the frozen teacher in eval mode, hooked by `record_bn_inputs` (which fills `moments`).
        x: (B, C, H, W) inputs in the teacher's input space.
        targets: (B,) sampled classes.
        cfg: the weights.
        moments: the hooks' list (cleared here before the forward pass).
        layers: the teacher's BatchNorm layers.
        student: for the competition term when `cfg.competition_weight` > 0.

    Returns:
        {"loss", "ce", "bn", "tv", "l2"} (+ "competition").
    """
    moments.clear()
    logits = teacher(x)
    terms = {
        "ce": F.cross_entropy(logits, targets),
        "bn": bn_statistics_loss(list(moments), layers),
        "tv": total_variation_prior(x),
        "l2": x.square().mean(),
    }
    loss = (
        terms["ce"] + cfg.bn_weight * terms["bn"] + cfg.tv_weight * terms["tv"] + cfg.l2_weight * terms["l2"]
    )
    if student is not None and cfg.competition_weight > 0:
        # ADI: 1 - JS(teacher, student), JS in [0, log 2] scaled to [0, 1]: the inputs move to where the
        # two disagree. The student is not updated here.
        js = js_divergence(student(x), logits, 1.0) / torch.log(torch.tensor(2.0))
        terms["competition"] = 1.0 - js.clamp(0.0, 1.0)
        loss = loss + cfg.competition_weight * terms["competition"]
    terms["loss"] = loss
    return terms


def invert_batch(
    teacher: nn.Module,
    targets: torch.Tensor,
    input_shape: tuple[int, ...],
    cfg: DeepInversionConfig,
    *,
    generator: torch.Generator,
    student: nn.Module | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> torch.Tensor:
    """Optimise one batch of inputs for `targets` with Adam; returns them detached.

    Args:
        teacher: the teacher; frozen for the call (eval mode, so BatchNorm uses and keeps its running
            statistics; no parameter gradients), then given back in the mode and flags it came in.
        targets: (B,) classes the inputs should be.
        input_shape: (C, H, W) of one input, in the teacher's input space.
        cfg: iterations, learning rate and loss weights.
        generator: seeds the initial noise and the augmentation.
        student: optional, for the adaptive competition term.
        on_step: called after each step with the terms' values (progress display, tests).

    Returns:
        (B, C, H, W) float32 inputs.

    Raises:
        ModelError: the teacher has no BatchNorm layer, or the inputs are not images.
    """
    require_batchnorm(teacher)
    if len(input_shape) != 3:
        raise ModelError(
            f"DeepInversion makes images (C, H, W); the teacher's inputs have shape {input_shape}. "
            f"Fix: {ADVERSARIAL_HINT}."
        )
    layers = [m for _, m in batchnorm_layers(teacher)]
    device = next(teacher.parameters()).device
    x = torch.randn((len(targets), *input_shape), generator=generator).to(device).requires_grad_(True)
    targets = targets.to(device)
    opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9))
    # Frozen here, not only by the caller: in train mode BatchNorm would normalise by the synthetic
    # batch's own statistics and overwrite the running ones the loss matches against.
    with frozen(teacher), record_bn_inputs(teacher) as moments:
        for _ in range(cfg.iterations):
            opt.zero_grad(set_to_none=True)
            terms = inversion_loss(
                teacher, _augment(x, cfg, generator), targets, cfg, moments, layers, student
            )
            terms["loss"].backward()
            opt.step()
            if on_step is not None:
                on_step({k: float(v.detach()) for k, v in terms.items()})
    return x.detach().float()
