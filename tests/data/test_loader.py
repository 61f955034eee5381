from __future__ import annotations

import pytest
import torch

from distil.data import Split, TensorLoader
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
        assert torch.equal(b["x"], split.x[b["index"]]) and torch.equal(b["y"], split.y[b["index"]])
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
        return torch.cat([b["x"] for b in lo])

    assert torch.equal(run(0), run(0))
    assert (run(0) == -1.0).any()  # padding fill shows up in crops


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        TensorLoader(_split(), 0)
    with pytest.raises(ConfigError, match="shard_index"):
        TensorLoader(_split(), 2, num_shards=2, shard_index=2)
    with pytest.raises(ConfigError, match="unknown augmentation"):
        TensorLoader(_split(), 2, augment="flip")
