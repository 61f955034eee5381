from __future__ import annotations

import pytest
import torch

from distil.data import DatasetLoader, Split, TensorLoader
from distil.errors import ConfigError


def _split(n: int = 23) -> Split:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return Split(x, torch.arange(n) % 3)


def _epoch(loader: TensorLoader) -> torch.Tensor:
    return torch.cat([b["index"] for b in loader])


def test_batches_match_index_and_cover_every_sample_once() -> None:
    split = _split()
    loader = TensorLoader(split, 5, shuffle=True, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 5 and len(batches[-1]["index"]) == 3
    for b in batches:
        assert torch.equal(b["inputs"], split.x[b["index"]]) and torch.equal(b["labels"], split.y[b["index"]])
        assert b["index"].dtype == torch.int64
    assert sorted(_epoch(loader).tolist()) == list(range(23))


def test_no_shuffle_keeps_order_and_drop_last() -> None:
    loader = TensorLoader(_split(), 5, drop_last=True)
    assert len(loader) == 4
    assert _epoch(loader).tolist() == list(range(20))


def test_set_epoch_changes_order_deterministically() -> None:
    a = TensorLoader(_split(), 4, shuffle=True, seed=7)
    b = TensorLoader(_split(), 4, shuffle=True, seed=7)
    e0 = _epoch(a)
    assert torch.equal(e0, _epoch(a))  # same epoch, same order
    a.set_epoch(1)
    e1 = _epoch(a)
    assert not torch.equal(e0, e1)
    b.set_epoch(1)  # a fresh loader resumed at epoch 1 reproduces it
    assert torch.equal(e1, _epoch(b))


def test_shards_are_disjoint_equal_and_cover() -> None:
    shards = [
        _epoch(TensorLoader(_split(24), 5, shuffle=True, seed=3, num_shards=3, shard_index=r))
        for r in range(3)
    ]
    assert all(len(s) == 8 for s in shards)
    assert sorted(torch.cat(shards).tolist()) == list(range(24))


def test_uneven_shards_wrap_to_equal_length() -> None:
    loaders = [TensorLoader(_split(23), 4, shuffle=True, num_shards=3, shard_index=r) for r in range(3)]
    shards = [_epoch(lo) for lo in loaders]
    assert {len(lo) for lo in loaders} == {2} and all(len(s) == 8 for s in shards)
    assert set(torch.cat(shards).tolist()) == set(range(23))  # one sample repeats to pad


def test_augmented_batches_reproducible_per_epoch() -> None:
    def run(epoch: int) -> torch.Tensor:
        lo = TensorLoader(
            _split(), 8, shuffle=True, augment="crop_flip", crop_padding=1, fill=(-1.0,), seed=2
        )
        lo.set_epoch(epoch)
        return torch.cat([b["inputs"] for b in lo])

    assert torch.equal(run(0), run(0))
    assert (run(0) == -1.0).any()  # padding fill shows up in crops


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        TensorLoader(_split(), 0)
    with pytest.raises(ConfigError, match="shard_index"):
        TensorLoader(_split(), 2, num_shards=2, shard_index=2)
    with pytest.raises(ConfigError, match="unknown augmentation"):
        TensorLoader(_split(), 2, augment="rotate")


# --- the DataLoader path ------------------------------------------------------------------------------


class _ReadCounting:
    """A map-style dataset over a Split that counts the samples read (like files opened on disk)."""

    def __init__(self, split: Split) -> None:
        self.split = split
        self.reads = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        self.reads += 1
        return {"inputs": self.split.x[index].clone(), "labels": int(self.split.y[index])}


def _images(n: int = 37) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(n, 2, 6, 6, generator=g), torch.randint(0, 4, (n,), generator=g))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(("num_shards", "drop_last"), [(1, False), (1, True), (3, False)])
def test_dataset_loader_is_bit_identical_to_tensor_loader(num_workers, num_shards, drop_last) -> None:
    split = _images()
    common = {
        "shuffle": True,
        "drop_last": drop_last,
        "augment": "crop_flip",
        "crop_padding": 2,
        "fill": (-1.0, 0.5),
        "seed": 5,
        "num_shards": num_shards,
    }
    for shard in range(num_shards):
        memory = TensorLoader(split, 8, shard_index=shard, **common)
        disk = DatasetLoader(_ReadCounting(split), 8, shard_index=shard, num_workers=num_workers, **common)
        for epoch in (0, 3):
            memory.set_epoch(epoch)
            disk.set_epoch(epoch)
            a, b = list(memory), list(disk)
            assert len(a) == len(b) == len(memory) == len(disk)
            for x, y in zip(a, b, strict=True):
                assert x.keys() == y.keys() == {"inputs", "labels", "index"}
                assert all(torch.equal(x[k], y[k]) for k in x), (epoch, shard)
                assert y["index"].dtype == y["labels"].dtype == torch.int64


def test_resume_mid_epoch_skips_batches_without_reading_them() -> None:
    split = _images(40)
    data = _ReadCounting(split)
    loader = DatasetLoader(data, 8, shuffle=True, augment="crop_flip", crop_padding=1, seed=1)
    loader.set_epoch(2)
    full = list(loader)
    data.reads = 0
    loader.set_epoch(2, start_batch=3)
    rest = list(loader)
    assert data.reads == 2 * 8  # batches 3 and 4 only
    assert len(rest) == 2 and all(
        torch.equal(a[k], b[k]) for a, b in zip(full[3:], rest, strict=True) for k in a
    )
    memory = TensorLoader(split, 8, shuffle=True, augment="crop_flip", crop_padding=1, seed=1)
    memory.set_epoch(2, start_batch=3)
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(memory, rest, strict=True))


def test_dataset_loader_workers_options() -> None:
    split = _images(10)
    loader = DatasetLoader(split, 4, num_workers=1, persistent_workers=True, prefetch_factor=2)
    assert [len(b["index"]) for b in loader] == [4, 4, 2]
    assert [len(b["index"]) for b in loader] == [4, 4, 2]  # a second epoch with the same workers
    with pytest.raises(ConfigError, match="num_workers"):
        DatasetLoader(split, 4, persistent_workers=True)


def test_split_is_a_map_style_dataset() -> None:
    split = _images(5)
    assert torch.equal(split[3]["inputs"], split.x[3]) and int(split[3]["labels"]) == int(split.y[3])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_the_dataset_loader_leaves_the_global_rng_alone(num_workers: int) -> None:
    # DataLoader draws its workers' base seed per epoch; from the global RNG that would shift dropout.
    loader = DatasetLoader(_split(), 4, shuffle=True, num_workers=num_workers)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for epoch in range(2):
        loader.set_epoch(epoch)
        list(loader)
    assert torch.equal(torch.rand(3), expected)
