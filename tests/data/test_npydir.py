"""npy-dir: samples stay on disk (memory-mapped), yet read exactly as the same arrays in memory."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import TrainConfig
from distil.data import (
    ArraySplit,
    DatasetLoader,
    SampleSplit,
    Split,
    TensorLoader,
    export_npy_dir,
    load_dataset,
)
from distil.data.npydir import digest
from distil.errors import DataError
from distil.measure import predict, predict_split
from distil.train.engine import make_accelerator, train_loader


def _inputs(split: SampleSplit, batch_size: int = 37) -> torch.Tensor:
    return torch.cat([split.head(0), *(b["inputs"] for b in split.batches(batch_size))])


def _assert_same(memory, disk) -> None:
    assert memory.mean == disk.mean and memory.std == disk.std
    assert memory.describe()["sizes"] == disk.describe()["sizes"]
    assert memory.input_shape == disk.input_shape and memory.class_names == disk.class_names
    for name in ("train", "val", "test"):
        m, d = getattr(memory, name), getattr(disk, name)
        assert isinstance(m, Split) and isinstance(d, ArraySplit)
        assert torch.equal(m.x, _inputs(d)), name
        assert torch.equal(m.y, d.labels), name
        assert digest(m) == digest(d), name


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_npy_dir("digits", tmp_path_factory.mktemp("digits-npy"))


@pytest.mark.parametrize(("limit", "val_fraction"), [(None, 0.1), (400, 0.2), (300, 0.0)])
def test_an_exported_folder_reads_bit_identically_to_the_dataset(digits_dir, limit, val_fraction) -> None:
    memory = load_dataset("digits", limit=limit, val_fraction=val_fraction, seed=3)
    disk = load_dataset("npy-dir", digits_dir, limit=limit, val_fraction=val_fraction, seed=3)
    _assert_same(memory, disk)


def _uint8_images(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8), rng.integers(0, 3, n).astype(np.int64)


@pytest.mark.parametrize("with_test", [True, False])
def test_uint8_images_on_disk_equal_the_same_npz(tmp_path: Path, with_test: bool) -> None:
    x, y = _uint8_images()
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "x_train.npy", x[:70] if with_test else x)
    np.save(folder / "y_train.npy", y[:70] if with_test else y)
    arrays = {"x": x[:70], "y": y[:70]} if with_test else {"x": x, "y": y}
    if with_test:
        np.save(folder / "x_test.npy", x[70:])
        np.save(folder / "y_test.npy", y[70:])
        arrays |= {"x_test": x[70:], "y_test": y[70:]}
    np.savez(tmp_path / "d.npz", **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the carved test split's notice
        memory = load_dataset("npz", tmp_path / "d.npz", seed=1)
        disk = load_dataset("npy-dir", folder, seed=1)
    assert disk.input_shape == (3, 6, 6)
    _assert_same(memory, disk)
    assert ("test_split" in disk.extra) == (not with_test)


def test_splits_are_index_views_of_a_memory_map_and_pickle_without_the_data(digits_dir) -> None:
    disk = load_dataset("npy-dir", digits_dir, limit=500)
    train = disk.train
    assert isinstance(train, ArraySplit) and isinstance(train.array, np.memmap)
    assert train.path == disk.val.path  # the val carve-out reads the same file
    blob = pickle.dumps(train)
    assert len(blob) < 20_000  # labels and ids, not the 450 x 64 float32 samples
    clone = pickle.loads(blob)
    assert torch.equal(clone.head(5), train.head(5))
    sub = train.take(torch.tensor([4, 1]))
    assert torch.equal(sub.head(2), train.head(5)[[4, 1]])
    assert torch.equal(train[3]["inputs"], train.head(4)[3]) and int(train[3]["labels"]) == int(
        train.labels[3]
    )


def test_the_loop_reads_disk_through_the_dataloader_and_memory_through_tensors(digits_dir) -> None:
    acc = make_accelerator("cpu")
    cfg = TrainConfig(batch_size=32, seed=5)
    memory, disk = load_dataset("digits", limit=300), load_dataset("npy-dir", digits_dir, limit=300)
    fast, slow = train_loader(memory, cfg, acc), train_loader(disk, cfg, acc)
    assert isinstance(fast, TensorLoader) and isinstance(slow, DatasetLoader)
    assert slow._loader.pin_memory is False  # default: pinned only when the run uses CUDA
    for epoch in (0, 1):
        fast.set_epoch(epoch, start_batch=2)
        slow.set_epoch(epoch, start_batch=2)
        for a, b in zip(fast, slow, strict=True):
            assert all(torch.equal(a[k], b[k]) for k in ("inputs", "labels", "index"))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    assert torch.equal(predict(model, memory.test.x, 16), predict_split(model, disk.test, 16))
    assert torch.equal(
        predict_split(model, memory.test, 16, 3, 40), predict_split(model, disk.test, 16, 3, 40)
    )
    workers = TrainConfig(
        loader={"num_workers": 2, "persistent_workers": True, "prefetch_factor": 2, "pin_memory": False}
    )
    assert train_loader(disk, workers, acc)._loader.num_workers == 2


def test_missing_or_inconsistent_folders_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="distil data export"):
        load_dataset("npy-dir", tmp_path)
    x, y = _uint8_images(10)
    np.save(tmp_path / "x_train.npy", x)
    np.save(tmp_path / "y_train.npy", y[:9])
    with pytest.raises(DataError, match=r"10 samples but y_train\.npy 9"):
        load_dataset("npy-dir", tmp_path)
    np.save(tmp_path / "y_train.npy", y)
    np.save(tmp_path / "x_test.npy", x)
    with pytest.raises(DataError, match="only one of"):
        load_dataset("npy-dir", tmp_path)
    np.save(tmp_path / "y_test.npy", y + 5)
    (tmp_path / "class_names.json").write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(DataError, match="labels range over"):
        load_dataset("npy-dir", tmp_path)
    bad = x.astype(np.float32)
    bad[4, 0, 0, 0] = np.nan
    np.save(tmp_path / "x_test.npy", bad)
    np.save(tmp_path / "y_test.npy", y)
    with pytest.raises(DataError, match="NaN"):
        load_dataset("npy-dir", tmp_path)


def test_cli_data_export_writes_a_folder_the_recipes_can_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "export", "digits", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "class_names.json",
        "dataset.json",
        "x_test.npy",
        "x_train.npy",
        "y_test.npy",
        "y_train.npy",
    ]
    result = CliRunner().invoke(app, ["data", "export", "nope", str(tmp_path / "x")])
    assert result.exit_code != 0 and "unknown dataset" in result.output.lower()


def test_images_get_one_canonical_layout_however_they_were_stored() -> None:
    # Odd strides on the size-1 channel made conv kernels take another algorithm: same data, other weights.
    from distil.data.raw import to_nchw_float

    for arr in (np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 4, 4), np.float32)[:, None]):
        assert to_nchw_float(arr, "x").stride() == (16, 16, 4, 1)


def test_a_teacher_cache_of_an_on_disk_split_equals_the_in_memory_one(digits_dir, tmp_path: Path) -> None:
    from distil.teachers.cache import CachedTeacher, build_cache

    memory, disk = load_dataset("digits", limit=300), load_dataset("npy-dir", digits_dir, limit=300)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    a = CachedTeacher(build_cache(teacher, memory.train, tmp_path / "m", key="m", batch_size=64))
    b = CachedTeacher(build_cache(teacher, disk.train, tmp_path / "d", key="d", batch_size=64))
    assert torch.equal(a.values, b.values) and a.values.shape[0] == len(disk.train)
