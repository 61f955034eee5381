"""Feature-vector (tabular) data: scikit-learn's breast-cancer and wine sets, (N, F) npz files, models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import ModelConfig
from distil.data import DATASETS, TensorLoader, load_dataset
from distil.data.tabular import _read_sklearn_csv
from distil.errors import ConfigError, DataError, ModelError
from distil.train.build import build_model


@pytest.mark.parametrize(
    ("name", "features", "classes", "total"), [("breast-cancer", 30, 2, 569), ("wine", 13, 3, 178)]
)
def test_sklearn_sets_are_feature_vectors_normalized_per_feature(
    name: str, features: int, classes: int, total: int
) -> None:
    assert name in DATASETS
    b = load_dataset(name, val_fraction=0.0)
    assert b.input_shape == (features,) and b.is_tabular
    assert (b.in_channels, b.image_size) == (features, 1)
    assert b.num_classes == classes and b.augment == "none"
    assert len(b.train) + len(b.test) == total and len(b.test) == round(total * 0.2)
    # Every feature has its own statistics: mean 0, std 1 on the train split, whatever its scale.
    assert len(b.mean) == len(b.std) == features
    assert torch.allclose(b.train.x.mean(0), torch.zeros(features), atol=1e-4)
    assert torch.allclose(b.train.x.std(0, unbiased=False), torch.ones(features), atol=1e-3)
    assert b.describe()["input_shape"] == [features]


@pytest.mark.slow  # importing scikit-learn takes seconds
@pytest.mark.parametrize("name", ["breast-cancer", "wine"])
def test_fast_csv_path_matches_the_sklearn_loader(name: str) -> None:
    import sklearn.datasets

    loader = {"breast-cancer": sklearn.datasets.load_breast_cancer, "wine": sklearn.datasets.load_wine}[name]
    ref = loader()
    x, y, class_names = _read_sklearn_csv(name)
    np.testing.assert_allclose(x, ref.data)
    np.testing.assert_array_equal(y, ref.target)
    assert class_names == list(ref.target_names)


def test_npz_feature_vectors_get_one_mean_and_std_per_feature(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Features on wildly different scales: one mean/std for all of them would leave feature 0 at ~0.
    x = rng.normal(size=(100, 3)) * np.array([0.01, 1.0, 1000.0]) + np.array([5.0, 0.0, -3000.0])
    path = tmp_path / "t.npz"
    np.savez(path, x=x, y=np.arange(100) % 2, x_test=x[:10], y_test=np.arange(10) % 2)
    b = load_dataset("npz", path, val_fraction=0.0)
    assert b.input_shape == (3,)
    np.testing.assert_allclose(b.mean, x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(b.std, x.std(0), rtol=1e-3)
    assert torch.allclose(b.train.x.std(0, unbiased=False), torch.ones(3), atol=1e-3)


def test_mlp_is_built_for_feature_vectors_and_conv_nets_are_refused_with_a_hint() -> None:
    data = load_dataset("wine", limit=60)
    model, spec = build_model(ModelConfig(model="mlp", kwargs={"hidden": [8]}), data)
    assert (spec["in_channels"], spec["image_size"]) == (13, 1)
    assert model(data.train.x[:4]).shape == (4, 3)
    with pytest.raises(DataError, match=r"feature vectors of shape \(13,\).*such as 'mlp'"):
        build_model(ModelConfig(model="tiny-cnn"), data)
    with pytest.raises(ModelError, match="such as 'mlp'"):
        build_model(ModelConfig(model="largenet"), data)


def test_augmentation_is_refused_for_feature_vectors() -> None:
    data = load_dataset("wine")
    assert len(list(TensorLoader(data.train, 32))) > 0
    with pytest.raises(ConfigError, match=r"augment 'crop' needs images.*augment: none"):
        TensorLoader(data.train, 32, augment="crop")


def test_tabular_recipe_trains_a_teacher_and_a_kd_student_that_beat_chance(tmp_path: Path) -> None:
    # Before per-feature normalisation and a vector MLP, wine's KD student sat at chance (~33-40%).
    sets = ["teacher_train.epochs=30", "student_train.epochs=30"]
    args = ["run", "tabular-wine", "--out", str(tmp_path), "--quiet", "--no-latency"]
    r = CliRunner().invoke(app, [*args, *(a for s in sets for a in ("--set", s))])
    assert r.exit_code == 0, r.output
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = {m["name"]: m["accuracy"] for m in json.loads((run / "summary.json").read_text())["metrics"]}
    assert rows["teacher"] > 0.85 and rows["student_kd"] > 0.85, rows


def test_image_augmentation_in_a_tabular_recipe_is_refused_before_the_run_directory(tmp_path: Path) -> None:
    args = ["run", "tabular-wine", "--out", str(tmp_path / "runs"), "--quiet", "--no-latency"]
    r = CliRunner().invoke(app, [*args, "--set", "student_train.augment=crop_flip"])
    assert r.exit_code == 2
    assert "student_train.augment=crop_flip: crops and flips are for images" in r.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("layout", [(1, 4), (4, 1), (1, 1, 4), (4, 1, 1)])
def test_vectors_saved_as_degenerate_images_are_read_as_feature_vectors(
    tmp_path: Path, layout: tuple
) -> None:
    # (N, 1, F), (N, F, 1), ... used to become one image channel sharing one mean/std.
    x = np.random.default_rng(0).normal(size=(40, 4)) * np.array([1.0, 10.0, 100.0, 1000.0])
    path = tmp_path / "v.npz"
    np.savez(
        path,
        x=x.reshape(40, *layout),
        y=np.arange(40) % 2,
        x_test=x[:8].reshape(8, *layout),
        y_test=np.arange(8) % 2,
    )
    b = load_dataset("npz", path, val_fraction=0.0)
    assert b.input_shape == (4,)
    assert torch.allclose(b.train.x.std(0, unbiased=False), torch.ones(4), atol=1e-3)
