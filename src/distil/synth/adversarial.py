"""A generator trained adversarially against a student (DFAD, Fang et al. 2019; ZSKT, Micaelli & Storkey
2019): it needs only the teacher's outputs, so it applies to teachers without BatchNorm too.

The generator maps noise z to inputs where student and teacher disagree most (it maximises the mean
absolute difference of their logits, DFAD's choice: unlike KL, its gradient does not vanish where the
student already agrees); the student then learns to agree on fresh generated batches. Alternating the
two drives the generator over the regions of input space the teacher knows and the student does not.

Here the adversarial game makes a transfer set: the generated batches the student trained on are kept
(evenly spaced over the game) and written out like any other, so the final student is distilled by
distil's one loop, with its caches, resume and reports. The student inside the game is a probe that
gives the generator its signal; `AdversarialResult.student` is also usable on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from distil.errors import ModelError
from distil.losses.functional import kd_kl
from distil.models.vit import plain_logits
from distil.teachers.live import frozen


@dataclass(frozen=True)
class AdversarialConfig:
    """Settings of the adversarial game.

    Attributes:
        steps: generator updates.
        student_steps: student updates per generator update (DFAD: 5).
        batch_size: generated inputs per update.
        z_dim: noise dimension of the generator.
        generator_lr, student_lr: Adam learning rates (generator) and SGD learning rate (student).
        temperature: of the student's KD loss on generated batches.
        balance_weight: weight of DAFL's information-entropy term (Chen et al. 2019): the generator also
            maximises the entropy of the teacher's mean class distribution over a batch, so it cannot
            collapse onto one class (0: plain DFAD).
    """

    steps: int = 200
    student_steps: int = 5
    batch_size: int = 128
    z_dim: int = 100
    generator_lr: float = 1e-3
    student_lr: float = 0.05
    temperature: float = 1.0
    balance_weight: float = 0.0

    def __post_init__(self) -> None:
        if min(self.steps, self.student_steps, self.batch_size, self.z_dim) < 1:
            raise ModelError("adversarial: steps, student_steps, batch_size and z_dim must be >= 1.")
        if min(self.generator_lr, self.student_lr, self.temperature) <= 0:
            raise ModelError("adversarial: learning rates and temperature must be > 0.")
        if self.balance_weight < 0:
            raise ModelError(f"adversarial: balance_weight must be >= 0, got {self.balance_weight}.")


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, C, H, W), standardised per channel like normalized training inputs.

    fc -> (128, H/4, W/4) -> upsample, conv 128 -> upsample, conv 64 -> conv C -> BatchNorm without
    affine parameters (DFAD's output layer: the inputs a teacher was trained on have mean 0, std 1).
    """

    def __init__(self, z_dim: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(
                f"the adversarial generator makes images (C, H, W); the teacher's inputs have shape "
                f"{input_shape}."
            )
        channels, height, width = input_shape
        self.start = (math.ceil(height / 4), math.ceil(width / 4))
        self.fc = nn.Linear(z_dim, 128 * self.start[0] * self.start[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(128),
            nn.Upsample(size=(math.ceil(height / 2), math.ceil(width / 2))),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2),
            nn.Upsample(size=(height, width)),
            nn.Conv2d(128, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, channels, 3, padding=1),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) for noise (B, z_dim)."""
        return self.body(self.fc(z).view(len(z), 128, *self.start))


def disagreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the logits (DFAD's adversarial loss), a scalar; (B, K) each."""
    return (student_logits - teacher_logits).abs().mean()


def class_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the teacher's mean class distribution over a (B, K) batch: log K when balanced."""
    mean = teacher_logits.softmax(dim=1).mean(dim=0)
    return -(mean * mean.clamp_min(1e-12).log()).sum()


def generator_step(
    generator: nn.Module,
    student: nn.Module,
    teacher: nn.Module,
    opt: torch.optim.Optimizer,
    z: torch.Tensor,
    balance_weight: float = 0.0,
) -> float:
    """One generator update: gradient ascent on the student-teacher disagreement (plus `balance_weight`
    times `class_entropy`); returns the disagreement before the update.

    The student and teacher are not updated (the optimizer holds only the generator's parameters);
    gradients reach the generator through both.
    """
    opt.zero_grad(set_to_none=True)
    x = generator(z)
    teacher_logits = teacher(x)
    gap = disagreement(plain_logits(student(x)), teacher_logits)  # a token ViT: (B, K) of its heads
    objective = gap + balance_weight * class_entropy(teacher_logits) if balance_weight else gap
    (-objective).backward()
    opt.step()
    return float(gap.detach())


def student_step(
    generator: nn.Module,
    student: nn.Module,
    teacher: nn.Module,
    opt: torch.optim.Optimizer,
    z: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, float]:
    """One student update on a generated batch (distil's KD loss, `kd_kl`); returns (inputs, loss)."""
    with torch.no_grad():
        x = generator(z)
        target = teacher(x)
    opt.zero_grad(set_to_none=True)
    loss = kd_kl(plain_logits(student(x)), target, temperature)
    loss.backward()
    opt.step()
    return x, float(loss.detach())


@dataclass
class AdversarialResult:
    """The kept generated inputs and the game's end state.

    Attributes:
        inputs: (N, C, H, W) generated inputs the student trained on, evenly spaced over the game.
        generator: the trained generator (eval mode).
        student: the probe student after the game (eval mode).
        history: per generator step, {"disagreement", "student_kd"}.
    """

    inputs: torch.Tensor
    generator: nn.Module
    student: nn.Module
    history: list[dict[str, float]]


def play(
    teacher: nn.Module,
    student: nn.Module,
    input_shape: tuple[int, ...],
    count: int,
    cfg: AdversarialConfig,
    *,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> AdversarialResult:
    """Train a generator against `student` (which learns `teacher` meanwhile) and keep `count` inputs.

    Args:
        teacher: the teacher; frozen for the call (eval mode, no parameter gradients), then given back
            in the mode and flags it came in.
        student: the probe student, trained in place.
        input_shape: (C, H, W) of the teacher's inputs.
        count: generated inputs to keep, spread over the game's student batches.
        cfg: the game's settings.
        seed: seeds the generator's initialisation and the noise.
        on_step: called with the number of generator steps done (progress display).

    Returns:
        The kept inputs, the generator and the student.

    Raises:
        ModelError: the inputs are not images, or `count` exceeds what the game generates.
    """
    produced = cfg.steps * cfg.student_steps * cfg.batch_size
    if not 1 <= count <= produced:
        raise ModelError(
            f"adversarial: {count} inputs asked for, but the game generates {produced} ({cfg.steps} steps x "
            f"{cfg.student_steps} student steps x {cfg.batch_size}); raise steps or lower the count."
        )
    gen = torch.Generator().manual_seed(seed)
    device = next(teacher.parameters()).device
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the caller's RNG alone
        torch.manual_seed(seed)
        generator = Generator(cfg.z_dim, input_shape).to(device)
    g_opt = torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr)
    s_opt = torch.optim.SGD(student.parameters(), lr=cfg.student_lr, momentum=0.9, weight_decay=5e-4)
    per_batch = _kept_per_batch(count, cfg.steps * cfg.student_steps)
    kept: list[torch.Tensor] = []
    history: list[dict[str, float]] = []
    batch = 0
    with frozen(teacher):  # its BN statistics and parameters stay as they are, whatever mode it came in
        for step in range(cfg.steps):
            generator.train()
            student.eval()  # the generator's signal: the student's current function, without updating its BN
            gap = generator_step(
                generator, student, teacher, g_opt, _noise(cfg, gen, device), cfg.balance_weight
            )
            student.train()
            losses = []
            for _ in range(cfg.student_steps):
                x, loss = student_step(
                    generator, student, teacher, s_opt, _noise(cfg, gen, device), cfg.temperature
                )
                losses.append(loss)
                kept.append(x[: per_batch[batch]].cpu())
                batch += 1
            history.append({"disagreement": gap, "student_kd": sum(losses) / len(losses)})
            if on_step is not None:
                on_step(step + 1)
    return AdversarialResult(torch.cat(kept)[:count], generator.eval(), student.eval(), history)


def _noise(cfg: AdversarialConfig, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn((cfg.batch_size, cfg.z_dim), generator=gen).to(device)


def _kept_per_batch(count: int, batches: int) -> list[int]:
    # Spread `count` over the batches as evenly as integers allow, so the transfer set samples the whole
    # game rather than only its start or end.
    base, extra = divmod(count, batches)
    return [base + (1 if i < extra else 0) for i in range(batches)]
