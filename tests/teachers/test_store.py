"""The one teacher-cache store: every row format round-trips rows; one key, one meta reader."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from distil.data import Split
from distil.errors import ConfigError
from distil.losses.functional import kd_kl
from distil.losses.sparse import SparseTargets, sparse_kd
from distil.teachers import store
from distil.teachers.seqcache import sparse_rows
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
    counts = opened.arrays["counts.u8"][[5, 0]].long()
    assert torch.equal(counts.sum(-1), torch.full((2, 4), 4))  # k draws per position
    torch.testing.assert_close(got.log_weights.exp(), counts / 4.0, rtol=0, atol=1e-7)


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


def _zipf_logits(rows: int, positions: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Zipf-like teacher logits: log(1 / rank) over a random permutation of the vocabulary, jittered."""
    g = torch.Generator().manual_seed(seed)
    base = -torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
    perm = torch.stack([torch.randperm(vocab, generator=g) for _ in range(rows * positions)])
    z = base[perm] + 0.3 * torch.randn(rows * positions, vocab, generator=g)
    return z.reshape(rows, positions, vocab)


def test_a_teacher_with_minus_inf_logits_builds_a_valid_cache(tmp_path: Path) -> None:
    # A masked vocabulary: -inf logits; top-k with k beyond the finite support of some rows.
    z = _logits((4, 3, 10))
    z[..., 6:] = -float("inf")
    z[0, 0, 2:] = -float("inf")  # two finite logits, k = 4
    s = torch.randn(4, 3, 10)
    for fmt in (Sampled(4, temperature=2.0, seed=1), Sampled(4, 2.0, 3.0), TopK(4, (2.0,))):
        opened = _build(tmp_path / f"{fmt.name}{id(fmt)}", z, fmt)
        got = fmt.sparse(opened.arrays, torch.arange(4), 2.0, 10)  # type: ignore[attr-defined]
        assert torch.isfinite(got.aux).all(), fmt
        p = torch.softmax(z.double() / 2.0, -1)
        if fmt.name == "sampled":
            torch.testing.assert_close(
                got.aux.double(), torch.special.xlogy(p, p).sum(-1), rtol=1e-5, atol=1e-6
            )
            assert bool((got.ids < 6).all())  # never a masked token
        for tail in ("renormalize", "bucket"):
            loss = sparse_kd(s.requires_grad_(True), got, 2.0, tail=tail)
            (g,) = torch.autograd.grad(loss, s)
            assert torch.isfinite(loss) and torch.isfinite(g).all(), (fmt, tail)


def test_a_row_without_a_finite_logit_is_refused_with_its_position(tmp_path: Path) -> None:
    for bad in ("all -inf", "nan", "+inf"):
        z = _logits((4, 3, 10))
        if bad == "all -inf":
            z[2, 1, :] = -float("inf")
        else:
            z[2, 1, 4] = float(bad)
        with pytest.raises(ConfigError, match=r"sample 2, position 1"):
            _build(tmp_path / str(bad), z, Sampled(2))
        assert not (tmp_path / str(bad) / "sampled").exists()  # nothing half-written


def test_sampled_weights_sum_to_one_and_the_loss_estimates_the_kl(tmp_path: Path) -> None:
    # The kind of example: T = 4, k = 16, a Zipf-like teacher; a student close to uniform, so
    # log q varies little between draws and a weight-sum bias of 1e-3 (fp16 log 1/k) is ~10 standard
    # errors of the mean over 2048 positions.
    t, k, v = 4.0, 16, 512
    z = _zipf_logits(64, 32, v) * 8  # sharp at T = 1, Zipf-like at T = 4
    s = 0.4 * torch.randn(z.shape, generator=torch.Generator().manual_seed(9))
    fmt = Sampled(k, temperature=t, seed=0)
    opened = _build(tmp_path, z, fmt)
    got = fmt.sparse(opened.arrays, torch.arange(64), t, v)
    w = got.log_weights.exp()
    # Per-position estimates minus the true per-position KL (its formula written out): mean 0 within 4
    # standard errors of the 2048 positions' sampling noise.
    per_row = torch.stack(
        [sparse_kd(s[i : i + 1, j : j + 1], _row(got, i, j), t) for i in range(64) for j in range(32)]
    )
    p, log_q = torch.softmax(z.double() / t, -1), torch.log_softmax(s.double() / t, -1)
    true = (t * t * (torch.special.xlogy(p, p) - p * log_q).sum(-1)).reshape(-1)
    torch.testing.assert_close(true.mean().float(), kd_kl(s, z, t), rtol=1e-5, atol=0)
    error = per_row.double() - true
    se = error.std() / error.numel() ** 0.5
    assert abs(error.mean()) < 4 * se, (float(error.mean()), float(se))
    torch.testing.assert_close(w.sum(-1), torch.ones(64, 32), rtol=0, atol=2e-7)  # float32 rounding


def _row(targets: SparseTargets, i: int, j: int) -> SparseTargets:
    return dataclasses.replace(
        targets,
        ids=targets.ids[i : i + 1, j : j + 1],
        log_weights=targets.log_weights[i : i + 1, j : j + 1],
        aux=targets.aux[i : i + 1, j : j + 1],
    )


def test_sampled_rows_store_distinct_ids_with_counts_and_the_loss_of_the_draws(tmp_path: Path) -> None:
    z, k, t = _zipf_logits(8, 16, 300, seed=2) * 2, 16, 1.0
    fmt = Sampled(k, temperature=t, seed=4)
    opened = _build(tmp_path, z, fmt)
    counts, ids = opened.arrays["counts.u8"].long(), opened.arrays["ids"].long()
    assert torch.equal(counts.sum(-1), torch.full((8, 16), k))
    used = counts > 0
    assert bool((ids[~used] == 0).all())  # unused slots: id 0, count 0
    flat_ids, flat_used = ids.reshape(-1, k), used.reshape(-1, k)
    for r in range(flat_ids.shape[0]):
        kept = flat_ids[r][flat_used[r]]
        assert kept.unique().numel() == kept.numel()  # each id once
    # The same draws one by one (the reference sparse_rows, same seed): the same loss and gradient.
    ref_ids, ref_logw, ref_aux = sparse_rows(z, "sampled", k, t, generator=torch.Generator().manual_seed(4))
    ref = SparseTargets("sampled", ref_ids, ref_logw, ref_aux, t, 300)
    mine = fmt.sparse(opened.arrays, torch.arange(8), t, 300)
    assert torch.equal(
        torch.bincount(ref_ids[3, 5], minlength=300),
        torch.zeros(300, dtype=torch.long).scatter_add_(0, mine.ids[3, 5], counts[3, 5]),
    )
    s = torch.randn(8, 16, 300)
    a, ga = _loss_and_grad(s, ref, t)
    b, gb = _loss_and_grad(s, mine, t)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-8)


def _loss_and_grad(s: torch.Tensor, targets: SparseTargets, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = s.clone().requires_grad_(True)
    loss = sparse_kd(x, targets, t)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


@pytest.mark.parametrize(
    "fmt", [Sampled(4, 2.0, seed=1), Sampled(4, 2.0, 3.0), TopK(3, (2.0,)), FullLogits()]
)
def test_a_chunked_build_writes_the_same_bytes_at_any_batch(tmp_path: Path, fmt: store.RowFormat) -> None:
    z = _logits((7, 5, 33))
    split = Split(z, torch.zeros(7, dtype=torch.long))
    paths = [
        store.build(
            torch.nn.Identity(), split, tmp_path / f"{b}-{c}", fmt, key="k", batch_size=b, chunk_elements=c
        )
        for b, c in ((7, 10**9), (3, 33 * 2), (2, 1))  # whole, 2 positions, 1 position per chunk
    ]
    for name in fmt.files(33):
        first = (paths[0] / name).read_bytes()
        assert all((p / name).read_bytes() == first for p in paths[1:]), name
    built = [json.loads((p / "meta.json").read_text())["build"] for p in paths]
    assert [b["batch_size"] for b in built] == [7, 3, 2] and [b["chunk_rows"] for b in built] == [
        10**9 // 33,
        2,
        1,
    ]
    assert all(b["peak_rss_bytes"] > 0 for b in built)
