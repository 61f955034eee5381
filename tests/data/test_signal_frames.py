"""1-D signal frames (N, 1024) through npz / npy-dir: no image assumptions, and `data.normalize: none`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.errors import ConfigError, DataError


def _frames(n: int, seed: int = 0) -> np.ndarray:
    """Sine frames of random pitch and level, float32 (n, 1024), like CREPE's 16 kHz audio frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(1024) / 16000
    f0 = rng.uniform(50, 1000, (n, 1))
    return (rng.uniform(0.1, 1, (n, 1)) * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def _write(tmp_path: Path, kind: str) -> Path:
    x, x_test = _frames(40), _frames(12, seed=1)
    y, y_test = np.arange(40) % 360, np.arange(12) % 360
    names = np.asarray([f"bin{b}" for b in range(360)])
    if kind == "npz":
        path = tmp_path / "frames.npz"
        np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, class_names=names)
        return path
    folder = tmp_path / "frames"
    folder.mkdir()
    for key, value in {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test}.items():
        np.save(folder / f"{key}.npy", value)
    (folder / "class_names.json").write_text('["' + '", "'.join(str(n) for n in names) + '"]')
    return folder


def _all_inputs(split) -> torch.Tensor:
    return torch.cat([b["inputs"] for b in split.batches(16)])


@pytest.mark.parametrize("kind", ["npz", "npy-dir"])
def test_normalize_none_keeps_the_frames_exactly_and_is_recorded(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path, kind)
    data = load_dataset(kind, path, val_fraction=0.0, options={"normalize": "none"})
    assert data.input_shape == (1024,) and data.is_tabular and data.num_classes == 360
    torch.testing.assert_close(_all_inputs(data.train), torch.from_numpy(_frames(40)), atol=0, rtol=0)
    torch.testing.assert_close(_all_inputs(data.test), torch.from_numpy(_frames(12, seed=1)), atol=0, rtol=0)
    assert (data.mean, data.std) == ((0.0,), (1.0,))
    assert data.describe()["options"] == {"normalize": "none"}  # the sidecar says so; eval reuses it


@pytest.mark.parametrize("kind", ["npz", "npy-dir"])
def test_default_still_standardizes_each_position_and_records_nothing(tmp_path: Path, kind: str) -> None:
    data = load_dataset(kind, _write(tmp_path, kind), val_fraction=0.0)
    assert len(data.mean) == 1024 and "options" not in data.describe()
    x = _all_inputs(data.train)
    torch.testing.assert_close(x.mean(0), torch.zeros(1024), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["npz", "npy-dir"])
def test_an_unknown_mode_names_the_valid_ones(tmp_path: Path, kind: str) -> None:
    with pytest.raises(DataError, match="valid: auto, none"):
        load_dataset(kind, _write(tmp_path, kind), options={"normalize": "per-frame"})


def test_normalize_on_a_dataset_whose_reader_has_no_such_option_says_which_readers_do() -> None:
    with pytest.raises(ConfigError, match=r"array readers \(npz, npy-dir"):
        load_dataset("digits", options={"normalize": "none"})


def test_frames_are_never_augmented_or_read_as_images(tmp_path: Path) -> None:
    # (N, 1, 1024) is the same frames with a channel axis: still 1024 values per sample, not a 1 x 1024 image.
    path = tmp_path / "c.npz"
    np.savez(
        path,
        x=_frames(40)[:, None, :],
        y=np.arange(40) % 4,
        x_test=_frames(8)[:, None, :],
        y_test=np.arange(8) % 4,
    )
    data = load_dataset("npz", path, val_fraction=0.0, options={"normalize": "none"})
    assert data.input_shape == (1024,) and data.augment == "none"
