"""Which of a teacher's channels a thinner student keeps: the one choice behind every width selection.

Used for traced layers (:mod:`distil.transfer.parameters`) and for Hugging Face transformers' hidden
units, heads and MLP units (:mod:`distil.transfer.hf_layers`) alike.
"""

from __future__ import annotations

import torch

from distil.errors import TransferError
from distil.registry import closest

SELECTIONS: tuple[str, ...] = ("uniform", "first", "l1")


def select_indices(n: int, k: int, selection: str, importance: torch.Tensor | None = None) -> list[int]:
    """Which `k` of `n` channels to keep, in ascending order.

    Args:
        n: the teacher's channel count.
        k: the student's channel count (1 <= k <= n).
        selection: "uniform" (evenly spaced: floor(i * n / k)), "first" (0..k-1) or "l1" (the k with the
            largest importance).
        importance: one score per channel, required for "l1".

    Returns:
        `k` sorted channel indices.
    """
    if not 1 <= k <= n:
        raise TransferError(
            f"cannot keep {k} of {n} channels; the student must not be wider than the teacher"
        )
    if selection == "first":
        return list(range(k))
    if selection == "uniform":
        return [i * n // k for i in range(k)]
    if selection == "l1":
        if importance is None or importance.numel() != n:
            raise TransferError(f"l1 selection needs one importance score per channel ({n})")
        # A stable sort keeps the lower index on ties, so a tie-break never depends on the platform.
        order = torch.sort(importance.double(), descending=True, stable=True).indices[:k]
        return sorted(int(i) for i in order)
    raise TransferError(
        f"unknown selection {selection!r}. Valid selections: {', '.join(SELECTIONS)}"
        + (f". Did you mean {closest(selection, SELECTIONS)!r}?" if closest(selection, SELECTIONS) else ".")
    )
