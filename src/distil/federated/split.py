"""Non-IID client shards: a Dirichlet(alpha) label split of a training split (Hsu et al. 2019, FedDF).

For every class c a share vector p_c ~ Dir(alpha, ..., alpha) over the clients decides how many of
c's samples each client gets: small alpha gives each client a few classes, large alpha approaches an
IID split. The split is a function of (labels, clients, alpha, seed) only.
"""

from __future__ import annotations

import numpy as np
import torch

from distil.errors import DataError

MIN_CLIENT_SAMPLES = 2
"""The fewest samples a client is given: a BatchNorm layer in train mode refuses a batch of one."""


def dirichlet_split(labels: torch.Tensor, clients: int, alpha: float, seed: int = 0) -> list[torch.Tensor]:
    """Split sample positions among `clients` with Dirichlet(alpha) class proportions.

    Every position goes to exactly one client, and every client gets at least `MIN_CLIENT_SAMPLES`
    samples: a client the draw left short takes samples from the largest shard (deterministically), so
    no client trains on nothing, nor on a single sample (BatchNorm cannot train on a batch of one).

    Args:
        labels: (N,) int64 class labels of the samples to split (entries < 0 are split too, as a
            class of their own).
        clients: how many shards, >= 1.
        alpha: the Dirichlet concentration, > 0 (0.1: very skewed; 100: nearly IID).
        seed: the draw.

    Returns:
        One sorted (n_k,) int64 tensor of positions per client; together a partition of range(N).

    Raises:
        DataError: alpha <= 0, clients < 1, or fewer than `MIN_CLIENT_SAMPLES` samples per client.
    """
    n = int(labels.shape[0])
    if not alpha > 0:  # also catches NaN
        raise DataError(
            f"the Dirichlet label split needs alpha > 0, got {alpha}; use e.g. 0.1 (very non-IID) to 100 "
            "(nearly IID)."
        )
    if clients < 1:
        raise DataError(f"the federated split needs at least 1 client, got {clients}.")
    if clients * MIN_CLIENT_SAMPLES > n:
        raise DataError(
            f"{clients} clients but only {n} training samples to share among them: every client needs at "
            f"least {MIN_CLIENT_SAMPLES} (a BatchNorm layer cannot train on one sample). Use at most "
            f"{n // MIN_CLIENT_SAMPLES} clients, or more data (data.limit / a smaller transfer set)."
        )
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    shards: list[list[int]] = [[] for _ in range(clients)]
    for c in np.unique(y):
        where = rng.permutation(np.flatnonzero(y == c))
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(where)).astype(np.int64)
        for k, part in enumerate(np.split(where, cuts)):
            shards[k].extend(part.tolist())
    _fill_short(shards)
    return [torch.tensor(sorted(s), dtype=torch.int64) for s in shards]


def _fill_short(shards: list[list[int]]) -> None:
    """Top each shard up to `MIN_CLIENT_SAMPLES` from the currently largest shard (in place).

    With at least `MIN_CLIENT_SAMPLES` samples per shard in total, the largest shard always has more
    than the minimum while some shard is short, so the donor never drops below it.
    """
    for shard in shards:
        while len(shard) < MIN_CLIENT_SAMPLES:
            largest = max(shards, key=len)
            shard.append(largest.pop())


def label_skew(labels: torch.Tensor, shards: list[torch.Tensor], num_classes: int) -> float:
    """How non-IID a split is: the mean total-variation distance between each client's class
    distribution and the whole data's (0: every client sees the global mix; near 1: disjoint classes).

    Args:
        labels: (N,) class labels the shards index into.
        shards: the clients' positions.
        num_classes: K.

    Returns:
        The mean over clients of 0.5 * sum_c |p_k(c) - p(c)|.
    """
    y = labels.cpu()
    overall = torch.bincount(y, minlength=num_classes).double()
    overall /= overall.sum()
    distances = []
    for shard in shards:
        counts = torch.bincount(y[shard], minlength=num_classes).double()
        distances.append(0.5 * float((counts / counts.sum() - overall).abs().sum()))
    return sum(distances) / len(distances)
