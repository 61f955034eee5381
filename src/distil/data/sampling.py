"""Deterministic stratified selection of sample indices (for validation carve-outs and limits)."""

from __future__ import annotations

import numpy as np


def stratified_take(y: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick `count` indices with class proportions close to those of `y`.

    Each sample gets a key (rank within its class after a seeded shuffle + 0.5) / class size; taking the
    smallest keys draws from every class at the same rate, so the total is exact and the split stratified.

    Labels that are not (N,) integers (multilabel rows, regression targets) have no classes to keep in
    proportion: every sample is one stratum, so the take is a seeded random one.

    Args:
        y: (N,) integer labels, or (N, ...) float targets.
        count: how many indices to take (clipped to [0, N]).
        seed: seed of the shuffle; the same (y, count, seed) always gives the same result.

    Returns:
        (taken, rest): sorted index arrays partitioning range(N).
    """
    n = len(y)
    count = min(max(count, 0), n)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iub":
        y = np.zeros(n, dtype=np.int64)
    labels = y[perm]
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    ends = np.searchsorted(sorted_labels, sorted_labels, side="right")
    rank = np.empty(n, dtype=np.float64)
    rank[order] = (np.arange(n) - starts + 0.5) / (ends - starts)
    chosen = np.argsort(rank, kind="stable")[:count]
    mask = np.zeros(n, dtype=bool)
    mask[perm[chosen]] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)
