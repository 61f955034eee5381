"""Sequence teacher caches: full / top-k / sampled forms, keyed, atomic, memory-mapped, wired to the kd term."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from distil.api import distill_loss
from distil.config import KDConfig, TrainConfig
from distil.data import DataBundle
from distil.data.text import load_text
from distil.errors import ConfigError
from distil.losses.functional import kd_kl
from distil.losses.sparse import SparseTargets, sparse_kd
from distil.teachers.cache import CachedTeacher
from distil.teachers.seqcache import (
    SparseCachedTeacher,
    bytes_per_token,
    open_or_build_sequence,
    open_run_cache,
    resolve_form,
    sparse_cache_blocker,
    sparse_rows,
    vocab_size,
)
from distil.train.engine import TrainLoop, fit

TEXT = "The quick brown fox jumps over the lazy dog. " * 30


class ByteLM(nn.Module):
    """(B, T) byte ids -> (B, T, 259) logits: an embedding and a head, a 0-layer LM."""

    def __init__(self, seed: int = 0, vocab: int = 259) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.head = nn.Embedding(vocab, 8), nn.Linear(8, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(ids))) * 3


@pytest.fixture
def text(tmp_path: Path) -> DataBundle:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(TEXT)
    return load_text(tmp_path / "corpus", block_size=16, split_by="blocks", cache_dir=tmp_path / "tok")


def _batch(data: DataBundle, index: torch.Tensor) -> dict[str, torch.Tensor]:
    b = next(iter(data.train.take(index).batches(len(index))))
    return {"inputs": b["inputs"], "labels": b["labels"], "index": index}


def test_bytes_per_token_and_the_auto_form() -> None:
    assert bytes_per_token("full", 259) == 518
    assert bytes_per_token("topk", 259, 16) == 16 * 4 + 4
    assert bytes_per_token("sampled", 259, 16) == 16 * 3 + 4  # ids + one-byte counts
    assert bytes_per_token("sampled", 259, 16, proposal_temperature=2.0) == 16 * 5 + 4  # + fp16 log p/r
    assert bytes_per_token("sampled", 100_000, 16) == 16 * 5 + 4  # int32 ids above 65536
    assert resolve_form("auto", 259) == "full" and resolve_form("auto", 32_000) == "sampled"
    with pytest.raises(ConfigError, match=r"teacher_cache\.form"):
        resolve_form("topq", 10)


@pytest.mark.parametrize("form", ["topk", "sampled"])
def test_sparse_cache_holds_the_teachers_targets_by_sample_id(
    text: DataBundle, tmp_path: Path, form: str
) -> None:
    teacher, k = ByteLM(), 6
    cached, info = open_or_build_sequence(
        teacher, text, form=form, k=k, cache_dir=tmp_path / "c", batch_size=4
    )
    assert isinstance(cached, SparseCachedTeacher) and not info.hit
    want = {"topk": 28, "sampled": 22}[form]  # k (2 + 2) + 4; k (2 + 1) + 4: one-byte counts
    assert info.form == form and info.bytes_per_token == bytes_per_token(form, 259, k) == want
    meta = json.loads((Path(info.path) / "meta.json").read_text())
    assert meta["form"] == form and meta["k"] == k and meta["bytes_per_token"] == want
    assert meta["build"]["batch_size"] == 4 and info.build == meta["build"]
    index = torch.tensor([3, 0, 3, len(text.train) - 1])
    batch = _batch(text, index)
    got = cached(batch)
    assert isinstance(got, SparseTargets) and got.ids.shape == (4, 16, k) and got.aux.shape == (4, 16)
    with torch.no_grad():
        live = teacher(batch["inputs"])
    if form == "topk":
        ids, logw, aux = sparse_rows(live, "topk", k)
        assert torch.equal(got.ids, ids)
        # Derived from the float16 top-k logits and the tail fill (the one top-k layout): log p_T to
        # float16 precision of the logits, the tail mass to float32 arithmetic.
        torch.testing.assert_close(got.log_weights, logw, rtol=0, atol=1e-2)
        torch.testing.assert_close(got.aux, aux, rtol=1e-2, atol=1e-4)
    else:  # draws of each position's own distribution: weights count / k, summing to 1; negentropy exact
        w = got.log_weights.exp()
        torch.testing.assert_close(w.sum(-1), torch.ones(4, 16), rtol=0, atol=1e-6)
        assert set((w * k).round().unique().tolist()) <= set(range(k + 1))
        p = torch.softmax(live.double(), -1)
        torch.testing.assert_close(got.aux.double(), (p * p.log()).sum(-1), rtol=1e-5, atol=1e-5)
        assert torch.equal(got.ids[0], got.ids[2])  # the same sample gives the same stored draws
    s = torch.randn(4, 16, 259)
    assert torch.isfinite(sparse_kd(s, got, 1.0))


def test_the_key_covers_form_k_temperature_and_seed_and_a_rerun_hits(
    text: DataBundle, tmp_path: Path
) -> None:
    teacher, root = ByteLM(), tmp_path / "c"
    _, first = open_or_build_sequence(teacher, text, form="sampled", k=4, cache_dir=root)
    _, again = open_or_build_sequence(ByteLM(), text, form="sampled", k=4, cache_dir=root)
    assert again.hit and again.fingerprint == first.fingerprint
    others = [
        open_or_build_sequence(teacher, text, form="topk", k=4, cache_dir=root)[1],
        open_or_build_sequence(teacher, text, form="sampled", k=5, cache_dir=root)[1],
        open_or_build_sequence(teacher, text, form="sampled", k=4, temperature=2.0, cache_dir=root)[1],
        open_or_build_sequence(teacher, text, form="sampled", k=4, seed=1, cache_dir=root)[1],
        open_or_build_sequence(ByteLM(seed=1), text, form="sampled", k=4, cache_dir=root)[1],
    ]
    assert len({first.fingerprint, *(o.fingerprint for o in others)}) == 6
    assert not any(o.hit for o in others)
    assert not list(root.glob("*.partial"))  # built under a temporary name, renamed into place


def test_a_damaged_sparse_cache_is_rebuilt(text: DataBundle, tmp_path: Path) -> None:
    teacher = ByteLM()
    _, info = open_or_build_sequence(teacher, text, form="topk", k=3, cache_dir=tmp_path)
    with open(Path(info.path) / "values.f16", "r+b") as f:
        f.truncate(10)
    with pytest.raises(ConfigError, match="not a complete sparse teacher cache"):
        SparseCachedTeacher(info.path)
    cached, rebuilt = open_or_build_sequence(teacher, text, form="topk", k=3, cache_dir=tmp_path)
    assert not rebuilt.hit and len(cached) == len(text.train)


def test_full_form_is_the_dense_logit_cache(text: DataBundle, tmp_path: Path) -> None:
    teacher = ByteLM()
    cached, info = open_or_build_sequence(teacher, text, form="auto", cache_dir=tmp_path)  # V=259: full
    assert isinstance(cached, CachedTeacher) and info.form == "full" and info.bytes_per_token == 518
    batch = _batch(text, torch.arange(3))
    with torch.no_grad():
        live = teacher(batch["inputs"])
    torch.testing.assert_close(cached(batch), live.half().float())


def test_a_classifier_teacher_is_refused(text: DataBundle, tmp_path: Path) -> None:
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = ByteLM()

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.lm(ids).mean(1)

    with pytest.raises(ConfigError, match=r"\(B, T, V\)"):
        open_or_build_sequence(Pooled(), text, form="sampled", k=3, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"teacher_cache\.k must be in \[1, 259\]"):
        open_or_build_sequence(ByteLM(), text, form="topk", k=300, cache_dir=tmp_path)


@pytest.mark.slow
def test_a_student_trained_from_each_cache_learns_the_teacher(text: DataBundle, tmp_path: Path) -> None:
    """A direct loop over cached targets: the full KL to the teacher falls with full and sampled targets;
    renormalised top-k (k=8 of 259 broad distributions) teaches the student to leave the tail empty, so
    the true KL ends higher than with the same bytes of samples: the bias the sampled form removes."""
    teacher = ByteLM(seed=0)
    assert vocab_size(text) == 259
    final = {}
    for form in ("full", "topk", "sampled"):
        cached, _ = open_or_build_sequence(teacher, text, form=form, k=8, cache_dir=tmp_path)
        student = ByteLM(seed=1)
        opt = torch.optim.Adam(student.parameters(), lr=0.05)
        index = torch.arange(16)
        batch = _batch(text, index)
        with torch.no_grad():
            live = teacher(batch["inputs"])
        before = kd_kl(student(batch["inputs"]), live, 1.0).item()
        for _ in range(25):
            target = cached(batch)
            out = student(batch["inputs"])
            loss = (
                kd_kl(out, target, 1.0) if isinstance(target, torch.Tensor) else sparse_kd(out, target, 1.0)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        final[form] = kd_kl(student(batch["inputs"]), live, 1.0).item()
        assert final[form] < 0.75 * before or form == "topk", (form, before, final[form])
    assert final["topk"] > 1.5 * final["sampled"], final


def _loss(kd: KDConfig, data: DataBundle) -> Any:
    return distill_loss(kd, teacher=ByteLM(), student=ByteLM(1), data=data, cfg=TrainConfig(epochs=2))


@pytest.mark.slow
def test_a_run_picks_the_form_and_trains_through_the_one_loop(
    text: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Per-epoch evaluation of language models is not part of this module (accuracy of (B, T) outputs
    # belongs to the LM evaluation); the training steps, the cache and the kd dispatch are under test.
    monkeypatch.setattr(TrainLoop, "evaluate", lambda self: {"eval_accuracy": 0.0})
    cfg = TrainConfig(epochs=2, batch_size=8, optimizer="adam", lr=0.01)
    for form, want in (("sampled", "sampled"), ("topk", "topk"), ("auto", "full")):
        teacher, student = ByteLM(0), ByteLM(1)
        loss = distill_loss(
            KDConfig(terms={"kd": 1.0, "ce": 0.1}, temperature=1.0),
            teacher=teacher,
            student=student,
            data=text,
            cfg=cfg,
        )
        cached, info = open_run_cache(teacher, text, loss, form=form, k=4, cache_dir=tmp_path)
        assert info.form == want
        history = fit(student, text, cfg, loss, teacher=cached).history
        assert history[-1]["train_kd"] < history[0]["train_kd"], (form, history)


def test_sparse_forms_refuse_losses_they_cannot_serve(text: DataBundle, tmp_path: Path) -> None:
    assert sparse_cache_blocker(_loss(KDConfig(terms={"kd": 1.0, "ce": 0.5}, temperature=2.0), text)) is None
    rkl = _loss(KDConfig(terms={"kd": 1.0, "rkl": 1.0}), text)
    assert "rkl" in str(sparse_cache_blocker(rkl))
    annealed = _loss(KDConfig(terms={"kd": 1.0}, temperature=4.0, temperature_final=1.0), text)
    assert "schedule" in str(sparse_cache_blocker(annealed))
    with pytest.raises(ConfigError, match=r"teacher_cache\.form=sampled cannot serve this loss"):
        open_run_cache(ByteLM(), text, rkl, form="sampled", k=4, cache_dir=tmp_path)


def test_a_runs_cache_build_takes_its_batch_from_the_recipe(
    text: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distil.api import distill
    from distil.config import StudentTrainConfig

    monkeypatch.setattr(TrainLoop, "evaluate", lambda self: {"eval_accuracy": 0.0})
    cfg = StudentTrainConfig(
        epochs=1, batch_size=5, teacher_cache={"form": "sampled", "k": 4, "dir": str(tmp_path)}
    )
    history = distill(ByteLM(0), ByteLM(1), text, cfg, KDConfig(terms={"kd": 1.0}, temperature=1.0)).history
    built = history[-1]["teacher_cache"]["build"]
    assert built["batch_size"] == 5 and built["peak_rss_bytes"] > 0
