"""Training batches: one seeded, resumable, sharded sampler and two ways to read the samples it picks.

* :class:`EpochSampler` decides which sample ids form each batch of an epoch. The order is a function
  of (seed, epoch) only, every data-parallel rank takes its own strided share, and an epoch can start
  at any batch, so an interrupted run continues exactly.
* :class:`TensorLoader` gathers those ids from a :class:`~distil.data.bundle.Split` held in memory: one
  indexing op per batch, the fast path for data that fits in memory.
* :class:`DatasetLoader` reads them from any map-style dataset (``__len__``, ``__getitem__(i) ->
  {"inputs": tensor, "labels": label}``, e.g. files on disk) through ``torch.utils.data.DataLoader`` with worker
  processes, pinned memory and prefetching.

Both yield the same batch dicts ``{"inputs", "labels", "index"}`` (the contract of
:mod:`distil.data.batch`; ``index``: the samples' stable ids in their split, which caches and resume
key on) and apply the same batched augmentation with the same seeds:
given the same samples and seed they produce bit-identical batches.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from distil.data.augment import MIXINGS, Augmenter, AugmentSpec, parse_ops, view_of
from distil.data.batch import IGNORE_INDEX, INDEX, INPUTS, LABELS, VIEW
from distil.data.bundle import Split
from distil.errors import ConfigError
from distil.registry import unknown_name_message


class SampleDataset(Protocol):
    """A map-style dataset: sample `i` as ``{"inputs": (C, H, W) float tensor, "labels": int or 0-d tensor}``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def _seed(*parts: int) -> int:
    # SeedSequence mixes (seed, epoch, ...) so nearby tuples give unrelated streams.
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler[torch.Tensor]):
    """Batches of sample ids (int64 tensors) for one shard of one epoch.

    With `num_shards > 1` every rank draws the same permutation and takes the strided slice
    `[shard_index::num_shards]`; without drop_last the permutation is padded by wrapping so all ranks get
    the same number of samples and batches (a few samples repeat), with drop_last the tail that does not
    divide evenly is dropped.

    Args:
        num_samples: size of the split.
        batch_size: samples per batch.
        shuffle: draw a new permutation every epoch.
        drop_last: drop the final incomplete batch (and the uneven tail across shards).
        seed: base seed of the shuffles.
        num_shards: number of data-parallel ranks.
        shard_index: this rank, in [0, num_shards).
        groups: for data stored in file shards (`distil.data.shards`): the sample ids of each file
            shard. With several ranks, rank r then takes the groups r, r + num_shards, ... and a
            permutation of just those samples (seeded by seed, epoch), wrapped around (or cut, with
            drop_last) to the same count on every rank, so each rank reads its own files only.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
        groups: Sequence[torch.Tensor] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ConfigError(
                f"need num_shards >= 1 and 0 <= shard_index < num_shards, got {shard_index}/{num_shards}."
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_shards = num_shards
        self.shard_index = shard_index
        self.epoch = 0
        self.start_batch = 0
        self._own: torch.Tensor | None = None
        if groups is not None and num_shards > 1:
            if len(groups) < num_shards:
                raise ConfigError(
                    f"{len(groups)} data shard(s) for {num_shards} processes: every process reads its own "
                    "shards, so write at least as many (distil data shards --shard-size SMALLER)."
                )
            owned = [int(sum(len(g) for g in groups[r::num_shards])) for r in range(num_shards)]
            self._own = torch.cat(list(groups[shard_index::num_shards]))
            self._per_rank = min(owned) if drop_last else max(owned)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch the next iteration produces, starting at batch `start_batch` (for resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def samples_per_shard(self) -> int:
        if self._own is not None:
            return self._per_rank
        n = self.num_samples
        return n // self.num_shards if self.drop_last else math.ceil(n / self.num_shards)

    def __len__(self) -> int:
        """Batches in a whole epoch (also when it starts at a later batch)."""
        per = self.samples_per_shard
        return per // self.batch_size if self.drop_last else math.ceil(per / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This shard's sample ids for the current epoch, in iteration order."""
        if self._own is not None:
            return self._own_indices()
        n = self.num_samples
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

    def _own_indices(self) -> torch.Tensor:
        own = self._own
        assert own is not None
        if self.shuffle:
            g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.shard_index, 4))
            own = own[torch.randperm(len(own), generator=g)]
        per = self._per_rank
        return own.repeat(math.ceil(per / max(len(own), 1)))[:per]

    def __iter__(self) -> Iterator[torch.Tensor]:
        idx = self.indices()
        for b in range(self.start_batch, len(self)):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]


def sample_inputs(samples: Split | SampleDataset, ids: torch.Tensor) -> torch.Tensor:
    """The un-augmented inputs of samples `ids`: one indexing op in memory, else sample by sample."""
    if isinstance(samples, Split):
        return samples.x[ids]
    return torch.stack([torch.as_tensor(samples[int(i)][INPUTS]) for i in ids])


class _Batches(abc.ABC):
    """What both loaders share: the sampler, the augmentation, and the epoch/batch bookkeeping."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        augment: str,
        crop_padding: int,
        fill: Sequence[float] | None,
        seed: int,
        num_shards: int,
        shard_index: int,
        mixing: str = "none",
        mixing_alpha: float = 1.0,
        groups: Sequence[torch.Tensor] | None = None,
        augmenter: Augmenter | None = None,
        views: int | None = None,
    ) -> None:
        if mixing not in MIXINGS:
            raise ConfigError(unknown_name_message("mixing", mixing, MIXINGS))
        if augmenter is None:
            spec = AugmentSpec(parse_ops(augment), crop_padding, mixing=mixing, mixing_alpha=mixing_alpha)
            augmenter = Augmenter(spec, seed=seed, num_samples=num_samples)
            augmenter.fill = tuple(fill) if fill is not None else None
        if views is not None and views < 1:
            raise ConfigError(f"views must be >= 1 (or None: a new draw every epoch), got {views}.")
        self.augmenter = augmenter
        self.mixing = augmenter.spec.mixing
        # V cached views per sample: epoch e replays view v(e, id) instead of drawing anew.
        self.views = views if augmenter.is_random else None
        self.sampler = EpochSampler(
            num_samples,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            num_shards=num_shards,
            shard_index=shard_index,
            groups=groups,
        )
        self.batch_size = batch_size
        self.augment = "+".join(augmenter.spec.ops) or "none"
        self.seed = seed
        self.num_shards = num_shards
        self.shard_index = shard_index

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch whose order (and augmentation) the next iteration produces.

        Args:
            epoch: 0-based epoch.
            start_batch: skip the first batches of the epoch without reading them (resume).
        """
        self.sampler.set_epoch(epoch, start_batch)

    @property
    def samples_per_shard(self) -> int:
        return self.sampler.samples_per_shard

    def __len__(self) -> int:
        return len(self.sampler)

    def indices(self) -> torch.Tensor:
        """This shard's sample ids for the current epoch, in iteration order."""
        return self.sampler.indices()

    @abc.abstractmethod
    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        """The un-augmented inputs of samples `index` (mixing partners)."""

    def _batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch dict: each sample augmented (and mixed) by the draw of (seed, its id, epoch or view).

        A function of the sample ids alone, not of the batch's position or what ran before: a resumed
        epoch, another rank count and the views cache all see the same pixels.
        """
        if not self.augmenter.is_random:
            return {INPUTS: x, LABELS: y, INDEX: index}
        keys = view_of(self.seed, index, self.epoch, self.views) if self.views else self.epoch
        x = self.augmenter(x, index, keys, fetch=self.fetch)
        if self.mixing != "none":
            # A mixed sample has no one class: no label, so only teacher-matching terms train on it.
            y = torch.full_like(y, IGNORE_INDEX)
        batch = {INPUTS: x, LABELS: y, INDEX: index}
        if self.views:
            batch[VIEW] = keys  # type: ignore[assignment]  # with index, the views cache's row
        return batch


class TensorLoader(_Batches):
    """Iterate an in-memory Split as dicts {"inputs", "labels", "index"} (index: int64 ids in the split).

    The order of an epoch is a function of (seed, epoch) only, and each batch's augmentation of
    (seed, epoch, shard_index, batch number), so runs are reproducible and resume exactly from
    `set_epoch(epoch, start_batch)`. Sharding across ranks: see :class:`EpochSampler`.

    Args:
        split: the data.
        batch_size: samples per batch.
        shuffle: draw a new permutation every epoch.
        drop_last: drop the final incomplete batch (and the uneven tail across shards).
        augment: "none", "crop", "crop_flip" or operations joined by "+" (`distil.data.augment.OPS`).
        crop_padding: padding for random crops.
        fill: per-channel padding value (use `zero_fill(bundle.mean, bundle.std)`).
        seed: base seed of shuffles and augmentation.
        num_shards: number of data-parallel ranks.
        shard_index: this rank, in [0, num_shards).
        mixing: "none", "mixup" or "cutmix" after the augmentation (`distil.data.augment.mix_batch`);
            mixed batches carry IGNORE_INDEX labels.
        mixing_alpha: Beta(alpha, alpha) of the mixing weights.
        augmenter: the augmentation (`distil.data.augment.Augmenter`, e.g. with colour ops); replaces
            augment, crop_padding, fill and mixing when given.
        views: replay V fixed views per sample (`distil.data.augment.view_of`) instead of a new draw
            every epoch; batches then carry "view" (the teacher's views cache reads its row by it).
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
        mixing: str = "none",
        mixing_alpha: float = 1.0,
        augmenter: Augmenter | None = None,
        views: int | None = None,
    ) -> None:
        super().__init__(
            len(split),
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            augment=augment,
            crop_padding=crop_padding,
            fill=fill,
            seed=seed,
            num_shards=num_shards,
            shard_index=shard_index,
            mixing=mixing,
            mixing_alpha=mixing_alpha,
            augmenter=augmenter,
            views=views,
        )
        if self.augmenter.spec.ops and split.x.dim() != 4:
            # Crops and flips are image operations; on feature vectors they have no meaning.
            raise ConfigError(
                f"augment {augment!r} needs images (N, C, H, W), but this data holds feature vectors of shape "
                f"{tuple(split.x.shape[1:])}; set augment: none (or auto) in teacher_train and student_train."
            )
        self.split = split

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch_idx in self.sampler:
            yield self._batch(self.split.x[batch_idx], self.split.y[batch_idx], batch_idx)

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        return sample_inputs(self.split, index)


class _WithIndex:
    """Wraps a map-style dataset so each sample travels with its id through the worker processes."""

    def __init__(self, dataset: SampleDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any]]:
        return int(index), self.dataset[int(index)]

    def __getitems__(self, indices: list[int]) -> Any:
        # A dataset that reads a whole batch in one go (token blocks: one gather from the memory-mapped
        # stream) gives the collated batch directly; `collate_samples` passes it through.
        read = getattr(self.dataset, "read_batch", None)
        if read is not None:
            index = torch.as_tensor(indices, dtype=torch.int64)
            inputs, labels = read(index)
            return {INPUTS: inputs, LABELS: labels, INDEX: index}
        return [self[i] for i in indices]


def collate_samples(
    samples: list[tuple[int, dict[str, Any]]] | dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Stack `(id, {"inputs", "labels"})` samples into one batch dict {"inputs", "labels", "index"}.

    Labels are class ids (int or 0-d tensors, giving (B,)) or per-token tensors (T,) (giving (B, T)). A
    batch a dataset read whole (a dict, from `read_batch`) is returned as it is.
    """
    if isinstance(samples, dict):
        return samples
    index = torch.tensor([i for i, _ in samples], dtype=torch.int64)
    x = torch.stack([torch.as_tensor(s[INPUTS]) for _, s in samples])
    labels = [torch.as_tensor(s[LABELS], dtype=torch.int64) for _, s in samples]
    y = torch.stack(labels) if labels and labels[0].dim() else torch.as_tensor([int(v) for v in labels])
    return {INPUTS: x, LABELS: y, INDEX: index}


class DatasetLoader(_Batches):
    """Iterate a map-style dataset (e.g. files on disk) with `torch.utils.data.DataLoader` workers.

    The batches are those of :class:`TensorLoader` on the same samples: same ids, same order, same
    augmentation (applied to the collated batch in the main process, seeded per batch), so the two
    paths train bit-identically; only where the samples come from differs. Resume with
    `set_epoch(epoch, start_batch)`: the skipped batches are never read.

    Args:
        dataset: a map-style dataset whose `dataset[i]` is ``{"inputs": tensor, "labels": label}``.
        batch_size, shuffle, drop_last, augment, crop_padding, fill, seed, num_shards, shard_index,
        mixing, mixing_alpha, augmenter, views: as in :class:`TensorLoader`.
        num_workers: worker processes that read samples (0 = in the main process).
        pin_memory: page-locked batches for faster host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
        prefetch_factor: batches each worker reads ahead (None = torch's default; needs workers).
    """

    def __init__(
        self,
        dataset: SampleDataset,
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
        mixing: str = "none",
        mixing_alpha: float = 1.0,
        augmenter: Augmenter | None = None,
        views: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
    ) -> None:
        super().__init__(
            len(dataset),
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            augment=augment,
            crop_padding=crop_padding,
            fill=fill,
            seed=seed,
            num_shards=num_shards,
            shard_index=shard_index,
            mixing=mixing,
            mixing_alpha=mixing_alpha,
            # Data in file shards (distil.data.shards): each rank reads its own shards.
            groups=getattr(dataset, "shard_groups", None),
            augmenter=augmenter,
            views=views,
        )
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}.")
        if num_workers == 0 and (persistent_workers or prefetch_factor is not None):
            raise ConfigError(
                "persistent_workers and prefetch_factor need worker processes: set num_workers >= 1 "
                "or leave them at their defaults."
            )
        self.dataset = dataset
        self._loader: DataLoader[Any] = DataLoader(
            _WithIndex(dataset),  # type: ignore[arg-type]
            batch_sampler=self.sampler,  # type: ignore[arg-type]
            collate_fn=collate_samples,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            # Its own generator: otherwise every epoch's iterator draws its workers' base seed from the
            # global torch RNG, shifting dropout (and anything else seeded globally) off the in-memory path.
            generator=torch.Generator().manual_seed(_seed(seed, shard_index, 2)),
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # The sampler runs in this process (workers only read samples), so set_epoch reaches it.
        for batch in self._loader:
            yield self._batch(batch[INPUTS], batch[LABELS], batch[INDEX])

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        return sample_inputs(self.dataset, index)
