"""How the training loop gets teacher outputs for a batch.

The loop only calls `teacher(batch) -> Tensor`; a live frozen module is one source, a cache of
precomputed outputs can be another, without the loop knowing which.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distil.data.batch import INPUTS, call_model


def freeze(model: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with no gradients (in place); returns it for chaining."""
    model.eval()
    model.requires_grad_(False)
    return model


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
