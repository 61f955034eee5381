"""Helpers every measurement shares: eval mode that restores flags, a model's device and dtype, dummy inputs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from distil.errors import ConfigError


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every submodule's own flag afterwards.

    Restoring per module (not just ``model.train(was_training)``) keeps deliberately frozen
    submodules, e.g. a BatchNorm left in eval during fine-tuning, exactly as they were.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def _model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a stateless model)."""
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype the model computes in, so dummy inputs match (float32 by default)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _dummy_inputs(
    model: nn.Module, batch_size: int, input_shape: tuple[int, ...], vocab_size: int | None
) -> Tensor:
    """Inputs to time or count a model on: random token ids in [0, vocab_size) for a token model (an
    embedding takes ids, not floats), else standard-normal floats in the model's dtype."""
    device = _model_device(model)
    if vocab_size is not None:
        return torch.randint(0, vocab_size, (batch_size, *input_shape), device=device)
    return torch.randn((batch_size, *input_shape), device=device, dtype=_model_dtype(model))


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}.")
