"""Unlabelled transfer sets: hidden labels, added inputs, the scratch student's labelled part."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from distil.config import UnlabeledConfig, load_recipe
from distil.data import load_dataset
from distil.data.batch import IGNORE_INDEX
from distil.data.unlabeled import hide_labels, labeled_part, read_unlabeled, transfer_set, what_students_saw
from distil.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=300, val_fraction=0.1, seed=0)


def test_hide_labels_keeps_n_per_class_and_depends_only_on_the_seed() -> None:
    y = torch.arange(100) % 4
    out = hide_labels(y, keep_per_class=3, seed=1)
    kept = out[out != IGNORE_INDEX]
    assert torch.equal(torch.bincount(kept, minlength=4), torch.full((4,), 3))
    assert torch.equal(out[out != IGNORE_INDEX], y[out != IGNORE_INDEX])  # kept labels are the true ones
    assert torch.equal(out, hide_labels(y, keep_per_class=3, seed=1))
    assert not torch.equal(out, hide_labels(y, keep_per_class=3, seed=2))
    frac = hide_labels(y, keep_fraction=0.2, seed=0)
    assert torch.equal(torch.bincount(frac[frac != IGNORE_INDEX], minlength=4), torch.full((4,), 5))
    with pytest.raises(ValueError):
        hide_labels(y)


def test_recipe_refuses_both_rules_at_once() -> None:
    with pytest.raises(ConfigError, match="keep_per_class or keep_fraction"):
        load_recipe(None, ["data.unlabeled.keep_per_class=5", "data.unlabeled.keep_fraction=0.1"])
    assert load_recipe(None, ["data.unlabeled.keep_per_class=5"]).data.unlabeled == UnlabeledConfig(
        keep_per_class=5
    )


def test_transfer_set_hides_labels_and_the_scratch_part_has_as_many_samples(digits) -> None:
    kd_data = transfer_set(digits, UnlabeledConfig(keep_per_class=2))
    y = kd_data.train.labels
    assert len(kd_data.train) == len(digits.train) and int((y != IGNORE_INDEX).sum()) == 20
    assert torch.equal(kd_data.train.x, digits.train.x) and kd_data.test is digits.test
    assert digits.train.labels.min() >= 0  # the teacher's data keeps every label
    scratch = labeled_part(kd_data)
    assert len(scratch.train) == len(kd_data.train)  # equal steps per epoch
    assert scratch.train.labels.min() >= 0
    reps = len(kd_data.train) // 20  # each of the 20 labelled samples appears reps or reps + 1 times
    assert all(2 * reps <= c <= 2 * (reps + 1) for c in torch.bincount(scratch.train.labels).tolist())
    assert len(labeled_part(kd_data, equal_steps=False).train) == 20
    assert labeled_part(digits) is digits and transfer_set(digits, None) is digits
    assert "20 labels" in what_students_saw(digits, kd_data)


def _raw_like(data, n: int) -> np.ndarray:
    """n training samples of `data` back in the reader's raw scale (what a user's file would hold)."""
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (data.train.x[:n] * std + mean).numpy()


def test_unlabelled_inputs_from_a_file_are_normalized_and_appended(digits, tmp_path: Path) -> None:
    path = tmp_path / "more.npz"
    np.savez(path, x=_raw_like(digits, 7))
    x = read_unlabeled(path, digits)
    torch.testing.assert_close(x, digits.train.x[:7], atol=1e-5, rtol=0)
    kd_data = transfer_set(digits, UnlabeledConfig(root=str(path)))
    assert len(kd_data.train) == len(digits.train) + 7
    assert (kd_data.train.labels[-7:] == IGNORE_INDEX).all() and (kd_data.train.labels[:-7] >= 0).all()
    folder = tmp_path / "dir"
    folder.mkdir()
    np.save(folder / "a.npy", _raw_like(digits, 3)[:, 0])  # (N, H, W): gains its channel
    np.savez(folder / "b.npz", x=_raw_like(digits, 2))
    assert read_unlabeled(folder, digits).shape == (5, 1, 8, 8)


def test_a_transfer_set_that_does_not_fit_the_teacher_is_refused_with_the_fix(digits, tmp_path: Path) -> None:
    wrong_shape = tmp_path / "big.npz"
    np.savez(wrong_shape, x=np.zeros((4, 1, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match=r"shape \(1, 28, 28\).*\(1, 8, 8\).*Fix: resize"):
        read_unlabeled(wrong_shape, digits)
    wrong_classes = tmp_path / "classes.npz"
    np.savez(wrong_classes, x=_raw_like(digits, 2), class_names=np.array(["cat", "dog"]))
    with pytest.raises(DataError, match="teacher's classes"):
        read_unlabeled(wrong_classes, digits)
    with pytest.raises(DataError, match="does not exist"):
        read_unlabeled(tmp_path / "missing.npz", digits)


def test_any_object_with_the_rule_s_fields_makes_a_transfer_set(digits) -> None:
    # data/ does not depend on the recipe schema: a plain object reads like UnlabeledConfig.
    rule = SimpleNamespace(keep_per_class=2, keep_fraction=None, root=None, seed=0)
    plain = transfer_set(digits, rule)
    assert torch.equal(
        plain.train.labels, transfer_set(digits, UnlabeledConfig(keep_per_class=2)).train.labels
    )
