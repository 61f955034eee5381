"""Compute: multiply-accumulates of one forward pass, counted by ``torch.utils.flop_counter``."""

from __future__ import annotations

import torch
from torch import nn

from distil.measure._util import _eval_mode, _model_dtype


def count_macs(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device = "cpu",
    *,
    vocab_size: int | None = None,
) -> int:
    """Multiply-accumulates of one forward pass on one sample.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; biases,
    activations and normalizations are not counted), which reports 2 FLOPs per MAC.

    Args:
        model: The model, already on ``device``.
        input_shape: Shape of one sample, without the batch dimension, e.g. ``(3, 32, 32)``.
        device: Device for the dummy input.
        vocab_size: for a token model, the vocabulary its ids come from (``input_shape`` is then
            ``(T,)``: MACs of scoring one block of T tokens).

    Returns:
        MACs per sample.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if vocab_size is not None:
        x = torch.zeros((1, *input_shape), device=device, dtype=torch.long)
    else:
        x = torch.zeros((1, *input_shape), device=device, dtype=_model_dtype(model))
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2
