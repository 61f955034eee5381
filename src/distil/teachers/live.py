"""How the training loop gets teacher outputs for a batch.

The loop only calls `teacher(batch) -> Tensor`; a live frozen module is one source, a cache of
precomputed outputs can be another, without the loop knowing which.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from distil.data.batch import INPUTS, call_model


def freeze(model: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with no gradients (in place); returns it for chaining."""
    model.eval()
    model.requires_grad_(False)
    return model


@contextmanager
def frozen(model: nn.Module | None) -> Iterator[None]:
    """`model` frozen (eval mode, no parameter gradients) for the block, then as it was.

    For a function handed a model it borrows: it must neither update the model's BatchNorm statistics
    nor leave gradients in its parameters, and the caller gets back the mode and flags it passed in.

    Args:
        model: the module to freeze; None is a no-op (an optional student).
    """
    if model is None:
        yield
        return
    # Per module and per parameter: a partly frozen model (a frozen backbone) comes back the same.
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    freeze(model)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


class LiveTeacher:
    """Runs a frozen teacher module on each batch, without building a graph.

    Args:
        module: the teacher (frozen here).
        options: keyword arguments of its forward, e.g. ``head=False`` for a causal LM's hidden states
            and head (the fused LM loss, `distil.losses.fused`); {} for its logits.
    """

    def __init__(self, module: nn.Module, options: dict[str, Any] | None = None) -> None:
        self.module = freeze(module)
        self.options = dict(options or {})

    def to(self, device: torch.device) -> LiveTeacher:
        self.module.to(device)
        return self

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> Any:
        return call_model(self.module, batch[INPUTS], **self.options)
