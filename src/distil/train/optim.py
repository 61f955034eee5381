"""Optimizer and learning-rate schedule from a TrainConfig."""

from __future__ import annotations

import math

import torch
from torch import nn

from distil.config import TrainConfig


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, extra: nn.Module | None = None
) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over the trainable parameters of `model` (and `extra`).

    `extra` holds trainable parts that are not the model, e.g. the adapters of a feature loss.
    Weight decay is not applied to biases and normalization parameters (1-D tensors): decaying them
    only hurts accuracy.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.optimizer.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.optimizer.momentum)
    if cfg.optimizer.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The multiplier of the base lr at `step` (0-based): linear warm-up, then the schedule."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        # The classic 0.1 decay at 50% and 75% of training.
        return 0.1 ** sum(progress >= m for m in (0.5, 0.75))
    return 1.0


def step_budget(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs begun, optimizer steps) of a run: `cfg.epochs` whole epochs, or with `cfg.max_steps` that many
    steps, the last epoch cut short where they end (`max_steps` replaces `epochs` as the budget)."""
    if cfg.max_steps is None:
        return cfg.epochs, cfg.epochs * steps_per_epoch
    return max(1, math.ceil(cfg.max_steps / max(steps_per_epoch, 1))), cfg.max_steps


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler covering the run's steps (`step_budget`)."""
    total = step_budget(cfg, steps_per_epoch)[1]
    if cfg.schedule.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=max(total, 1))
    warmup = int(cfg.schedule.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule.name)
    )
