"""Parameter averaging (FedAvg, McMahan et al. 2017): the weighted mean of several models' states."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from distil.errors import ConfigError


def average_states(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts with the same keys and shapes (parameters and buffers).

    Floating tensors are averaged in float64 and cast back to their dtype, so averaging one state (or
    identical ones) returns it exactly. Integer and bool buffers (e.g. BatchNorm's
    `num_batches_tracked`) get the weighted mean rounded to the nearest integer: a count stays a count.

    Args:
        states: the models' `state_dict()`s.
        weights: one non-negative weight per state (e.g. its client's sample count), normalised here.

    Returns:
        A new state dict on the first state's devices.

    Raises:
        ConfigError: no states, weights that do not match them, or states with different keys/shapes.
    """
    if not states:
        raise ConfigError("averaging needs at least one model state")
    if len(weights) != len(states) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(
            f"averaging {len(states)} models needs {len(states)} non-negative weights with a positive sum, "
            f"got {list(weights)}"
        )
    total = float(sum(weights))
    shares = [float(w) / total for w in weights]
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        _check_same_layout(first, state, i)
    return {key: _mean([s[key] for s in states], shares) for key in first}


def _mean(tensors: list[torch.Tensor], shares: list[float]) -> torch.Tensor:
    """sum_i shares_i * tensors_i in float64, back in the first tensor's dtype (integers rounded)."""
    acc = torch.zeros_like(tensors[0], dtype=torch.float64)
    for t, share in zip(tensors, shares, strict=True):
        acc += share * t.to(acc.device, torch.float64)
    like = tensors[0]
    if like.is_floating_point() or like.is_complex():
        return acc.to(like.dtype)
    return acc.round().to(like.dtype)


def _check_same_layout(first: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor], i: int) -> None:
    if first.keys() != other.keys():
        diff = sorted(set(first) ^ set(other))
        raise ConfigError(
            f"model {i} has other state keys than model 0 (differing: {diff[:4]}); average copies of one architecture"
        )
    for key, value in first.items():
        if other[key].shape != value.shape:
            raise ConfigError(
                f"model {i}'s {key!r} has shape {tuple(other[key].shape)}, model 0's {tuple(value.shape)}; "
                "average copies of one architecture"
            )
