"""Batches from an in-memory Split: seeded, resumable shuffles and data-parallel shards."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from distil.data.augment import AUGMENTS, augment_batch
from distil.data.bundle import Split
from distil.errors import ConfigError
from distil.registry import unknown_name_message


def _seed(*parts: int) -> int:
    # SeedSequence mixes (seed, epoch, ...) so nearby tuples give unrelated streams.
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class TensorLoader:
    """Iterate a Split as dicts {"x", "y", "index"} (index: int64 positions in the split).

    The order of an epoch is a function of (seed, epoch) only, and each batch's augmentation of
    (seed, epoch, shard_index, batch number), so runs are reproducible and resume exactly from
    `set_epoch(epoch)`. With `num_shards > 1` every rank draws the same permutation and takes the
    strided slice `[shard_index::num_shards]`; without drop_last the permutation is padded by wrapping
    so all ranks get the same number of samples and batches (a few samples repeat), with drop_last the
    tail that does not divide evenly is dropped.

    Args:
        split: the data.
        batch_size: samples per batch.
        shuffle: draw a new permutation every epoch.
        drop_last: drop the final incomplete batch (and the uneven tail across shards).
        augment: "none", "crop" or "crop_flip" (see `augment_batch`).
        crop_padding: padding for random crops.
        fill: per-channel padding value (use `zero_fill(bundle.mean, bundle.std)`).
        seed: base seed of shuffles and augmentation.
        num_shards: number of data-parallel ranks.
        shard_index: this rank, in [0, num_shards).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: str = "none",
        crop_padding: int = 0,
        fill: Sequence[float] | None = None,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if augment not in AUGMENTS:
            raise ConfigError(unknown_name_message("augmentation", augment, AUGMENTS))
        if augment != "none" and split.x.dim() != 4:
            # Crops and flips are image operations; on feature vectors they have no meaning.
            raise ConfigError(
                f"augment {augment!r} needs images (N, C, H, W), but this data holds feature vectors of shape "
                f"{tuple(split.x.shape[1:])}; set augment: none (or auto) in teacher_train and student_train."
            )
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ConfigError(
                f"need num_shards >= 1 and 0 <= shard_index < num_shards, got {shard_index}/{num_shards}."
            )
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.crop_padding = crop_padding
        self.fill = tuple(fill) if fill is not None else None
        self.seed = seed
        self.num_shards = num_shards
        self.shard_index = shard_index
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentation) the next iteration produces."""
        self.epoch = epoch

    @property
    def samples_per_shard(self) -> int:
        n = len(self.split)
        return n // self.num_shards if self.drop_last else math.ceil(n / self.num_shards)

    def __len__(self) -> int:
        per = self.samples_per_shard
        return per // self.batch_size if self.drop_last else math.ceil(per / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This shard's sample indices for the current epoch, in iteration order."""
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.samples_per_shard * self.num_shards
        if total > n:
            # Wrap around (repeatedly if the split is smaller than the number of shards).
            order = order.repeat(math.ceil(total / max(n, 1)))
        return order[:total][self.shard_index :: self.num_shards]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        idx = self.indices()
        for b in range(len(self)):
            batch_idx = idx[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.split.x[batch_idx]
            if self.augment != "none":
                g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.shard_index, b, 1))
                x = augment_batch(x, self.augment, self.crop_padding, g, self.fill)
            yield {"x": x, "y": self.split.y[batch_idx], "index": batch_idx}
