"""Hugging Face `datasets` image datasets (save_to_disk folders, parquet files) as dataset hf-datasets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distil.data import DatasetLoader, load_dataset
from distil.data.hfdatasets import HFSplit
from distil.errors import DataError

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.filterwarnings("ignore:.*test split:UserWarning")


def _split(n: int, seed: int, size: int = 6) -> tuple[object, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(n)]
    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["ant", "bee"])})
    table = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in arrays], "y": [i % 2 for i in range(n)]}, features=features
    )
    return table, arrays


def test_save_to_disk_and_parquet_read_the_pixels_labels_and_class_names(tmp_path: Path) -> None:
    train, arrays = _split(10, 0)
    test, _ = _split(4, 1)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    b = load_dataset("hf-datasets", tmp_path / "dd", val_fraction=0.0)
    assert isinstance(b.train, HFSplit) and b.class_names == ["ant", "bee"]
    assert (len(b.train), len(b.test)) == (10, 4) and b.train.labels.tolist() == [0, 1] * 5
    raw = b.train.raw(3, 4)[0, 0]
    torch.testing.assert_close(raw, torch.from_numpy(arrays[3]).float() / 255)
    # The same rows as parquet files named by split, and through DataLoader workers (pickled refs).
    (tmp_path / "pq").mkdir()
    train.to_parquet(str(tmp_path / "pq" / "train-0.parquet"))
    test.to_parquet(str(tmp_path / "pq" / "test-0.parquet"))
    p = load_dataset("hf-datasets", tmp_path / "pq", val_fraction=0.0)
    torch.testing.assert_close(p.train.head(10), b.train.head(10))
    batches = list(DatasetLoader(p.train, 4, num_workers=1))
    torch.testing.assert_close(torch.cat([x["inputs"] for x in batches]), b.train.head(10))
    assert load_dataset("hf-datasets", tmp_path / "dd", options={"image_size": 4}).input_shape == (1, 4, 4)


def test_bad_rows_and_sources_are_clear_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = [{"bytes": _png(rng), "path": None} for _ in range(6)]
    rows = [*good, {"bytes": b"\x89PNG broken", "path": None}]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    table = datasets.Dataset.from_dict({"image": rows, "label": [i % 2 for i in range(7)]}, features=features)
    table.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"train row 6 of .* is not a readable image"):
        load_dataset("hf-datasets", tmp_path / "bad")
    b = load_dataset("hf-datasets", tmp_path / "bad", options={"on_bad_sample": "skip"}, val_fraction=0.0)
    assert len(b.train) + len(b.test) == 6 and "1 unreadable" in b.describe()["extra"]["skipped"]  # type: ignore[index]
    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "cols"))
    with pytest.raises(DataError, match="one image column and one label column"):
        load_dataset("hf-datasets", tmp_path / "cols")
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError, match=r"cannot read .* as a Hugging Face dataset"):
        load_dataset("hf-datasets", tmp_path / "junk")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("hf-datasets", tmp_path / "nope")


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (5, 5), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
