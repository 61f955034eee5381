"""The one teacher-cache store: every row format round-trips rows; one key, one meta reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import Split
from distil.losses.sparse import SparseTargets
from distil.teachers import store
from distil.teachers.store import FullLogits, Sampled, TopK


def _logits(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 3).half().float()  # float16-exact: full rows are exact


def _build(tmp_path: Path, logits: torch.Tensor, fmt: store.RowFormat) -> store.Store:
    split = Split(logits, torch.zeros(len(logits), dtype=torch.long))
    path = store.build(torch.nn.Identity(), split, tmp_path / fmt.name, fmt, key="k", batch_size=3)
    return store.open_store(path)


@pytest.mark.parametrize("shape", [(7, 10), (5, 4, 12)], ids=["classifier", "sequence"])
def test_full_rows_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    z = _logits(shape)
    opened = _build(tmp_path, z, FullLogits())
    rows = torch.tensor([4, 0, 2])
    assert torch.equal(FullLogits().dense(opened.arrays, rows, None), z[rows])


@pytest.mark.parametrize("shape", [(7, 10), (5, 4, 12)], ids=["classifier", "sequence"])
def test_topk_rows_round_trip_dense_and_sparse(tmp_path: Path, shape: tuple[int, ...]) -> None:
    z, k = _logits(shape), 3
    fmt = TopK(k, (2.0,))
    opened = _build(tmp_path, z, fmt)
    rows = torch.tensor([1, 3])
    for t in (1.0, 2.0):
        dense = fmt.dense(opened.arrays, rows, fmt.column(t), shape[-1])
        p = torch.softmax(z[rows].double() / t, -1)
        top = p.topk(k, -1)
        q = torch.softmax(dense.double() / t, -1)
        torch.testing.assert_close(q.gather(-1, top.indices), top.values, rtol=1e-5, atol=1e-7)
        sparse = fmt.sparse(opened.arrays, rows, t, shape[-1])  # the same rows, as sparse targets
        assert isinstance(sparse, SparseTargets) and torch.equal(sparse.ids, top.indices)
        torch.testing.assert_close(sparse.log_weights.double(), top.values.log(), rtol=0, atol=1e-5)
        torch.testing.assert_close(sparse.aux.double(), 1 - top.values.sum(-1), rtol=1e-4, atol=1e-6)


def test_sampled_rows_round_trip(tmp_path: Path) -> None:
    z = _logits((6, 4, 9))
    fmt = Sampled(4, temperature=1.0, seed=3)
    opened = _build(tmp_path, z, fmt)
    got = fmt.sparse(opened.arrays, torch.tensor([5, 0]), 1.0, 9)
    assert got.ids.shape == (2, 4, 4) and got.aux.shape == (2, 4)
    p = torch.softmax(z[[5, 0]].double(), -1)
    torch.testing.assert_close(got.aux.double(), (p * p.log()).sum(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        got.log_weights, torch.full_like(got.log_weights, -np.log(4)), rtol=0, atol=2e-3
    )


def test_one_meta_reader_checks_every_file_against_its_recorded_shape(tmp_path: Path) -> None:
    opened = _build(tmp_path, _logits((7, 10)), TopK(2))
    meta = json.loads((opened.path / "meta.json").read_text())
    assert meta["form"] == "topk" and meta["params"] == {"k": 2, "temperatures": [1.0]}
    assert set(meta["files"]) == {"values.f16", "ids", "fill.f32"}
    assert store.read_meta(opened.path) is not None
    with open(opened.path / "fill.f32", "r+b") as f:
        f.truncate(8)
    assert store.read_meta(opened.path) is None
    with pytest.raises(Exception, match="not a complete teacher cache"):
        store.open_store(opened.path)


def test_the_key_covers_the_format_and_its_parameters(digits_small) -> None:
    teacher = torch.nn.Flatten()
    keys = {
        store.cache_key(teacher, digits_small, fmt, augment="none")
        for fmt in (FullLogits(), TopK(3), TopK(4), TopK(3, (2.0,)), Sampled(3), Sampled(3, seed=1))
    }
    assert len(keys) == 6


@pytest.fixture(scope="module")
def digits_small():
    from distil.data import load_dataset

    return load_dataset("digits", limit=40)


def test_a_sampled_format_draws_the_same_rows_in_every_build(tmp_path: Path) -> None:
    z, fmt = _logits((6, 4, 9)), Sampled(4, seed=5)
    first = _build(tmp_path / "a", z, fmt)
    second = _build(tmp_path / "b", z, fmt)  # the same format object, built again
    assert torch.equal(first.arrays["ids"], second.arrays["ids"])


def test_a_classifier_run_reads_topk_densely_and_refuses_sampled(digits_small, tmp_path: Path) -> None:
    # One top-k: `form: topk` serves a classifier's kd term (it was a sequence-only form before).
    from distil.api import distill
    from distil.config import KDConfig, StudentTrainConfig
    from distil.errors import ConfigError
    from distil.models import create_model

    def run(form: str) -> list[dict]:
        torch.manual_seed(0)
        teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
        student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
        cache = {"form": form, "k": 3, "dir": str(tmp_path)}
        cfg = StudentTrainConfig(epochs=1, batch_size=20, augment="none", teacher_cache=cache)
        return distill(teacher, student, digits_small, cfg, KDConfig(terms={"kd": 1.0, "ce": 0.5})).history

    record = run("topk")[0]
    assert record["teacher_source"] == "cache" and record["teacher_cache"]["form"] == "topk"
    assert record["teacher_cache"]["topk"] == 3
    with pytest.raises(ConfigError, match=r"teacher_cache\.form=topk"):
        run("sampled")
