from __future__ import annotations

import pytest
import torch

from distil.data import load_dataset


def test_digits_shapes_classes_and_metadata() -> None:
    b = load_dataset("digits")
    assert b.input_shape == (1, 8, 8)
    assert b.class_names == [str(i) for i in range(10)]
    assert b.augment == "none" and b.source == "scikit-learn load_digits"
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert len(b.test) == round(1797 * 0.2)
    assert torch.bincount(b.test.y, minlength=10).min() >= 35  # stratified: ~36 per class
    # Pixels were 0..16 scaled to [0, 1], so the raw mean lies in (0, 1).
    assert 0.0 < b.mean[0] < 1.0 and b.std[0] > 0.0


def test_digits_test_split_ignores_seed() -> None:
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=7)
    # Normalization depends on the train split (seed-dependent), so compare un-normalized pixels.
    raw_a = a.test.x * a.std[0] + a.mean[0]
    raw_b = b.test.x * b.std[0] + b.mean[0]
    assert torch.equal(a.test.y, b.test.y)
    assert torch.allclose(raw_a, raw_b, atol=1e-5)
    assert not torch.equal(a.val.y, b.val.y) or not torch.equal(a.val.x, b.val.x)


def test_digits_limit() -> None:
    b = load_dataset("digits", limit=50, val_fraction=0.2)
    assert len(b.train) + len(b.val) == 50 and len(b.val) == 10
    assert len(b.test) == 10


@pytest.mark.slow  # importing scikit-learn takes seconds
def test_fast_path_matches_load_digits() -> None:
    from sklearn.datasets import load_digits

    from distil.data.digits import _load_digits_arrays

    images, target = _load_digits_arrays()
    ref = load_digits()
    assert (images == ref.data).all() and (target == ref.target).all()
