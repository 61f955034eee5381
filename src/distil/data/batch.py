"""The batch contract every loader yields and every loop, loss and teacher reads.

A batch is a dict:

* ``inputs``: what the model takes: a tensor (images (B, C, H, W), feature vectors (B, F), token ids
  (B, T)), or a dict of tensors for models called with keyword arguments (e.g. a Hugging Face model's
  ``input_ids`` and ``attention_mask``);
* ``labels``: the targets, (B,) classes (or (B, T) tokens; ``IGNORE_INDEX`` (-100, as in Hugging Face)
  marks a position without a label, which no loss or metric counts);
* ``index``: (B,) int64, each sample's stable id in its split, which teacher caches, samplers and resume
  key on;
* optional masks, e.g. ``mask``: (B, T) bool, the positions a loss or metric counts;
* ``generated``: True on a language-model batch whose completions a model generated during training
  (on-policy distillation, `distil.train.onpolicy`); absent otherwise. A loss then trains on its
  teacher-matching terms only: the labels are the model's own samples, not gold tokens.

Samples of a map-style dataset use the same keys without the batch dimension (``{"inputs", "labels"}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

INPUTS = "inputs"
LABELS = "labels"
INDEX = "index"
MASK = "mask"
GENERATED = "generated"  # a batch whose completions the student generated (its labels are no gold)
VIEW = "view"  # with INDEX, the row of a views cache (batches of an augmented run that uses one)
IGNORE_INDEX = -100


def call_model(
    model: nn.Module | Any, inputs: torch.Tensor | Mapping[str, torch.Tensor], **options: Any
) -> Any:
    """Run `model` on a batch's inputs: positionally for a tensor, as keyword arguments for a dict.

    `options` are passed as keyword arguments too (e.g. ``head=False``: a causal LM's hidden states for
    the fused LM loss, `distil.losses.fused`).
    """
    if isinstance(inputs, Mapping):
        return model(**inputs, **options)
    return model(inputs, **options)


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move every tensor of a batch (also those of a dict of inputs) to `device`."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, Mapping):
            return {k: move(v) for k, v in value.items()}
        return value

    return {k: move(v) for k, v in batch.items()}
