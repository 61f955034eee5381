from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.errors import DataError


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_nhwc_uint8_with_test_and_names(tmp_path: Path) -> None:
    x = np.full((10, 5, 7, 3), 255, np.uint8)
    x[:, :, :, 1] = 0
    path = _save(
        tmp_path / "d.npz",
        x=x,
        y=np.arange(10) % 2,
        x_test=x[:4],
        y_test=np.array([0, 1, 0, 1]),
        class_names=np.array(["cat", "dog"]),
    )
    b = load_dataset("npz", path, val_fraction=0.0)
    assert b.input_shape == (3, 5, 7)
    assert b.class_names == ["cat", "dog"]
    assert b.mean == pytest.approx((1.0, 0.0, 1.0))  # uint8 scaled to [0, 1], channel order kept
    assert len(b.test) == 4 and b.source == str(path)


def test_nhw_gets_channel_and_float_kept(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, (30, 4, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="carved"):
        b = load_dataset("npz", _save(tmp_path / "d.npz", x=x, y=np.arange(30) % 3), val_fraction=0.0)
    assert b.input_shape == (1, 4, 4)
    assert b.mean[0] == pytest.approx(float(x.mean()), rel=0.05)  # float pixels are not rescaled
    assert b.num_classes == 3
    assert torch.isfinite(b.train.x).all()


def test_missing_keys_listed(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", images=np.zeros((2, 3, 3)), labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"lacks array\(s\) \['x', 'y'\]; found keys \['images', 'labels'\]"):
        load_dataset("npz", path)


def test_object_arrays_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x=np.zeros((2, 3, 3)), y=np.array([0, None], dtype=object))
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", path)


def test_missing_file_and_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", tmp_path / "nope.npz")
    with pytest.raises(DataError, match="needs the file path"):
        load_dataset("npz")


def test_labels_out_of_range_say_how_to_fix_the_npz_file(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "d.npz", x=np.zeros((6, 4, 4), np.uint8), y=np.arange(6), class_names=np.array(["a", "b"])
    )
    with pytest.raises(DataError, match="Save a class_names array covering every label"):
        load_dataset("npz", path)


def test_without_a_test_split_one_is_carved_and_recorded(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(50, 4, 4)).astype(np.float32)
    path = _save(tmp_path / "d.npz", x=x, y=np.arange(50) % 5)
    with pytest.warns(UserWarning, match="test split carved: 10 of 50"):
        b = load_dataset("npz", path, val_fraction=0.0)
    assert (len(b.train), len(b.test)) == (40, 10)
    assert sorted(b.test.y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # stratified
    assert "no x_test/y_test" in b.describe()["extra"]["test_split"]  # type: ignore[index]
    with pytest.warns(UserWarning):
        again = load_dataset("npz", path, val_fraction=0.0, seed=5)
    assert torch.equal(again.test.y, b.test.y)  # the test split does not move with the seed
    tiny = _save(tmp_path / "t.npz", x=x[:2], y=np.arange(2))
    with pytest.raises(DataError, match="too few to hold out a test split"):
        load_dataset("npz", tiny)


def test_a_run_on_an_npz_without_test_split_measures_on_the_carved_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from distil.cli.app import app

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (rng.integers(0, 60, (60, 6, 6)) + 60 * y[:, None, None]).astype(np.uint8)
    path = _save(tmp_path / "d.npz", x=x, y=y)
    sets = ["data.name=npz", f"data.root={path}", "teacher.model=tiny-cnn", "student.model=tiny-cnn"]
    sets += ["teacher_train.epochs=1", "student_train.epochs=1"]
    args = ["run", "digits", "--out", str(tmp_path / "runs"), "--quiet", "--no-latency"]
    r = CliRunner().invoke(app, [*args, *(a for s in sets for a in ("--set", s))])
    assert r.exit_code == 0, r.output
    assert "got 0 samples" not in r.output
