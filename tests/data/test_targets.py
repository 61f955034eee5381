"""The task a dataset's labels describe, and a recipe's data.task checked against them (issue 26.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.data.sampling import stratified_take
from distil.data.targets import choose_task, labels_task, to_targets
from distil.errors import DataError


def _npz(tmp_path: Path, y: np.ndarray, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    x = rng.normal(size=(n, 4)).astype(np.float32)
    np.savez(path, x=x, y=y, x_test=x[:10], y_test=y[:10])
    return path


def test_labels_tell_their_task() -> None:
    assert labels_task(to_targets(np.array([0, 2, 1]), "y")) == "classification"
    assert labels_task(to_targets(np.array([[0, 1], [1, 1]], dtype=np.float32), "y")) == "multilabel"
    assert labels_task(to_targets(np.array([0.5, 2.0], dtype=np.float32), "y")) == "regression"
    assert labels_task(to_targets(np.array([[0.5, 2.0]], dtype=np.float64), "y")) == "regression"


def test_to_targets_refuses_other_shapes_and_non_finite_values() -> None:
    with pytest.raises(DataError, match=r"expected .N,. integer class indices"):
        to_targets(np.zeros((3, 2, 2), dtype=np.float32), "y in d.npz")
    with pytest.raises(DataError, match="NaN or Inf"):
        to_targets(np.array([1.0, np.nan], dtype=np.float32), "y in d.npz")


def test_npz_multilabel_rows_read_as_multilabel_data(tmp_path: Path) -> None:
    y = (np.random.default_rng(1).random((60, 5)) < 0.4).astype(np.float32)
    data = load_dataset("npz", _npz(tmp_path, y), val_fraction=0.2)
    assert data.task == "multilabel" and data.num_classes == 5
    assert data.train.labels.shape == (48, 5) and data.train.labels.dtype == torch.float32
    assert data.describe()["task"] == "multilabel"  # recorded in checkpoint sidecars


def test_npz_float_targets_read_as_regression_and_recipe_may_name_it(tmp_path: Path) -> None:
    y = np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32)
    data = load_dataset("npz", _npz(tmp_path, y))
    assert data.task == "regression" and data.num_classes == 3
    binary = (y > 0).astype(np.float32)  # 0/1 targets a user means as real values
    assert load_dataset("npz", _npz(tmp_path, binary), task="regression").task == "regression"


def test_multilabel_recipe_with_class_labels_is_refused_with_the_conversion(tmp_path: Path) -> None:
    y = np.arange(60) % 3
    with pytest.raises(
        DataError, match=r"integer class indices.*np.eye\(L, dtype=np.float32\).take\(y, axis=0\)"
    ):
        load_dataset("npz", _npz(tmp_path, y), task="multilabel")


def test_classification_recipe_with_float_rows_is_refused(tmp_path: Path) -> None:
    y = (np.random.default_rng(1).random((60, 5)) < 0.4).astype(np.float32)
    with pytest.raises(DataError, match=r"set data\.task=multilabel"):
        load_dataset("npz", _npz(tmp_path, y), task="classification")
    with pytest.raises(DataError, match=r"data\.task=regression needs float targets"):
        load_dataset("npz", _npz(tmp_path, np.arange(60) % 3), task="regression")


def test_a_recipe_task_a_built_in_dataset_contradicts_is_refused() -> None:
    with pytest.raises(DataError, match=r"data\.task=multilabel needs .N, L. 0/1 rows"):
        load_dataset("digits", limit=50, task="multilabel")


def test_splits_of_different_tasks_are_refused() -> None:
    rows = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(DataError, match="different tasks"):
        choose_task(None, [rows, torch.tensor([0, 1])], "d.npz")


def test_float_targets_are_taken_at_random_not_stratified() -> None:
    y = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    taken, rest = stratified_take(y, 10, seed=3)
    assert len(taken) == 10 and len(rest) == 40
    assert (taken == stratified_take(y, 10, seed=3)[0]).all()  # seeded: the same every run


def test_hiding_labels_of_multilabel_data_is_refused(tmp_path: Path) -> None:
    from distil.config import UnlabeledConfig
    from distil.data.unlabeled import transfer_set
    from distil.errors import ConfigError

    y = (np.random.default_rng(1).random((60, 5)) < 0.4).astype(np.float32)
    data = load_dataset("npz", _npz(tmp_path, y))
    with pytest.raises(ConfigError, match=r"multilabel data .float label rows.. Fix: drop data.unlabeled"):
        transfer_set(data, UnlabeledConfig(keep_per_class=2))


def test_soft_multilabel_targets_are_taken_when_the_recipe_names_multilabel(tmp_path: Path) -> None:
    # CREPE's targets are Gaussian-blurred pitch bins: in [0, 1], not 0/1, so the labels alone say regression.
    y = np.random.default_rng(1).random((60, 8)).astype(np.float32)
    assert load_dataset("npz", _npz(tmp_path, y)).task == "regression"
    assert load_dataset("npz", _npz(tmp_path, y), task="multilabel").task == "multilabel"
    with pytest.raises(DataError, match=r"values outside \[0, 1\]"):
        load_dataset("npz", _npz(tmp_path, y * 2), task="multilabel")


def test_whole_number_float_labels_are_refused_until_the_recipe_says_which(tmp_path: Path) -> None:
    # Class indices saved as float64 (a pandas column) must not silently become a regression.
    y = (np.arange(60) % 3).astype(np.float64)
    with pytest.raises(
        DataError, match=r"save y.astype\(int\) for classification, or set data.task=regression"
    ):
        load_dataset("npz", _npz(tmp_path, y))
    assert load_dataset("npz", _npz(tmp_path, y), task="regression").task == "regression"


def test_embedding_is_named_by_the_recipe_and_needs_target_vectors(tmp_path: Path) -> None:
    y = np.random.default_rng(2).normal(size=(60, 6)).astype(np.float32)
    assert load_dataset("npz", _npz(tmp_path, y)).task == "regression"  # never told from the labels
    data = load_dataset("npz", _npz(tmp_path, y), task="embedding")
    assert data.task == "embedding" and data.num_classes == 6
    with pytest.raises(DataError, match=r"data.task=embedding needs \(N, D\) float target vectors"):
        load_dataset("npz", _npz(tmp_path, np.arange(60) % 3), task="embedding")
    with pytest.raises(DataError, match=r"data.task=embedding needs"):
        load_dataset("npz", _npz(tmp_path, y[:, 0]), task="embedding")


def test_student_embedding_dim_needs_embedding_data() -> None:
    from distil.config import Recipe

    with pytest.raises(ValueError, match=r"student\.embedding_dim is for embedding data"):
        Recipe.model_validate({"student": {"model": "mlp", "embedding_dim": 4}})
    with pytest.raises(ValueError, match=r"teacher\.embedding_dim is not used"):
        Recipe.model_validate(
            {"data": {"task": "embedding"}, "teacher": {"model": "mlp", "embedding_dim": 4}}
        )
    Recipe.model_validate({"data": {"task": "embedding"}, "student": {"model": "mlp", "embedding_dim": 4}})


def _dense_npz(tmp_path: Path, n: int = 20) -> Path:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 2, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=(n, 4, 4)).astype(np.uint8)
    y[:, 0, 0] = 255
    path = tmp_path / "seg.npz"
    np.savez(path, x=x, y=y, x_test=x[:5], y_test=y[:5])
    return path


def test_pixel_classes_read_as_dense_data_with_255_ignored(tmp_path: Path) -> None:
    data = load_dataset("npz", _dense_npz(tmp_path), val_fraction=0.2)
    assert data.task == "dense" and data.num_classes == 3
    assert int(data.test.labels[0, 0, 0]) == -100 and int(data.test.labels.max()) == 2
    with pytest.raises(DataError, match=r"set data\.task=dense"):
        load_dataset("npz", _dense_npz(tmp_path), task="classification")
    with pytest.raises(DataError, match=r"data.task=dense needs \(N, H, W\) integer pixel classes"):
        load_dataset("npz", _npz(tmp_path, np.arange(60) % 3), task="dense")


def test_class_label_models_on_dense_data_and_the_reverse_are_refused(tmp_path: Path) -> None:
    from distil.api import check_classes
    from distil.models import create_model

    data = load_dataset("npz", _dense_npz(tmp_path), val_fraction=0.2)
    mlp = create_model("mlp", num_classes=3, in_channels=2, image_size=4)
    with pytest.raises(DataError, match=r"a class-label model\. Fix: use a model that keeps H x W"):
        check_classes(mlp, data, "teacher")
    check_classes(create_model("tiny-segnet", num_classes=3, in_channels=2, image_size=4), data, "teacher")
    digits = load_dataset("digits", limit=50)
    seg = create_model("tiny-segnet", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(DataError, match="per-pixel logits"):
        check_classes(seg, digits, "student")


def test_augmentations_that_move_pixels_are_refused_on_dense_data() -> None:
    from distil.data.targets import refuse_moving_augment
    from distil.errors import ConfigError

    refuse_moving_augment("dense", ("jitter",), "none")
    refuse_moving_augment("classification", ("crop", "flip"), "mixup")
    with pytest.raises(ConfigError, match=r"crop\+flip moves or mixes pixels"):
        refuse_moving_augment("dense", ("crop", "flip"), "none")
    with pytest.raises(ConfigError, match="cutmix"):
        refuse_moving_augment("dense", (), "cutmix")
