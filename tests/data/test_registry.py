from __future__ import annotations

import pytest
import torch

from distil.data import DATASETS, load_dataset
from distil.errors import ConfigError, DataError

FAKE = "tests.data.fake_dataset"


def test_builtin_names_are_registered() -> None:
    assert {"digits", "fashion-mnist", "mnist", "kmnist", "cifar10", "cifar100", "npz"} <= set(
        DATASETS.names()
    )


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(DataError, match=r"Did you mean 'digits'\?.*Valid datasets:"):
        load_dataset("digitz")


def test_user_callable_dict_is_normalized_and_split() -> None:
    b = load_dataset(f"{FAKE}:tiny_arrays", val_fraction=0.25, seed=1)
    assert b.class_names == ["a", "b", "c", "d"]
    assert b.input_shape == (3, 6, 6)  # NHWC transposed to NCHW
    assert (len(b.train), len(b.val), len(b.test)) == (30, 10, 10)
    counts = torch.bincount(b.val.y, minlength=4)
    assert counts.min() >= 2 and counts.max() <= 3  # stratified: 2.5 per class
    # Normalization uses train statistics: train is centred with unit std per channel.
    assert torch.allclose(b.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(b.train.x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert b.train.x.dtype == torch.float32
    assert b.train.y.dtype == torch.int64


def test_val_fraction_zero_gives_empty_val_with_shape() -> None:
    b = load_dataset(f"{FAKE}:tiny_arrays", val_fraction=0.0)
    assert len(b.val) == 0 and tuple(b.val.x.shape) == (0, 3, 6, 6)
    assert len(b.train) == 40


def test_same_seed_same_split_other_seed_differs() -> None:
    a = load_dataset(f"{FAKE}:tiny_arrays", seed=3, val_fraction=0.5)
    b = load_dataset(f"{FAKE}:tiny_arrays", seed=3, val_fraction=0.5)
    c = load_dataset(f"{FAKE}:tiny_arrays", seed=4, val_fraction=0.5)
    assert torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.val.x, c.val.x)


def test_limit_keeps_at_most_limit_train_and_a_fifth_test() -> None:
    b = load_dataset(f"{FAKE}:tiny_arrays", limit=20, val_fraction=0.0)
    assert len(b.train) == 20 and len(b.test) == 4
    assert torch.bincount(b.train.y).tolist() == [5, 5, 5, 5]  # stratified


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_val_fraction_is_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", val_fraction=fraction)


def test_bad_limit_is_config_error() -> None:
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=0)


def test_user_bundle_used_as_is() -> None:
    b = load_dataset(f"{FAKE}:tiny_bundle")
    assert b.name == "mine" and len(b.train) == 20 and b.class_names == ["no", "yes"]


def test_nan_pixels_name_the_split() -> None:
    with pytest.raises(DataError, match=r"test split: 1 image\(s\) contain NaN"):
        load_dataset(f"{FAKE}:nan_pixels")


def test_labels_out_of_range() -> None:
    with pytest.raises(DataError, match=r"labels range over \[0, 4\] but there are 2 classes"):
        load_dataset(f"{FAKE}:bad_labels")


def test_user_callable_errors() -> None:
    with pytest.raises(DataError, match="expected a DataBundle or a dict"):
        load_dataset(f"{FAKE}:not_data")
    with pytest.raises(DataError, match="no callable 'missing'"):
        load_dataset(f"{FAKE}:missing")
    with pytest.raises(DataError, match="cannot import module"):
        load_dataset("tests.data.no_such_module:fn")
