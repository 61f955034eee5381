"""The teacher cache stores a sequence model's (N, T, V) outputs by sample id and position."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from distil.data import Split
from distil.errors import ConfigError
from distil.losses import kd_kl
from distil.teachers.cache import CachedTeacher, build_cache

VOCAB, LENGTH = 23, 7


class TinySequenceModel(nn.Module):
    """(B, T) token ids -> (B, T, V) logits: an embedding and a linear head, like a 0-layer LM."""

    def __init__(self, seed: int, vocab: int = VOCAB, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(ids))) * 3


def _tokens(n: int = 40) -> tuple[Split, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    mask = torch.rand(n, LENGTH, generator=g) > 0.3  # padding at random positions
    return Split(ids, ids.roll(-1, dims=1)), mask


def test_full_sequence_cache_gives_the_live_teachers_outputs_and_kd(tmp_path: Path) -> None:
    split, mask = _tokens()
    teacher, student = TinySequenceModel(0), TinySequenceModel(1)
    cached = CachedTeacher(build_cache(teacher, split, tmp_path / "c", key="k", batch_size=16))
    assert cached.positions == LENGTH and cached.num_classes == VOCAB and len(cached) == 40
    index = torch.tensor([5, 0, 39, 17, 17, 3])  # any order, repeats allowed
    batch = {"inputs": split.x[index], "labels": split.y[index], "index": index, "mask": mask[index]}
    with torch.no_grad():
        live = teacher(batch["inputs"])
    got = cached(batch)
    assert got.shape == live.shape == (6, LENGTH, VOCAB) and got.dtype == torch.float32
    torch.testing.assert_close(got, live.half().float())  # exact up to the float16 storage
    s = student(batch["inputs"])
    for m in (None, batch["mask"]):
        torch.testing.assert_close(
            kd_kl(s, got, 2.0, mask=m), kd_kl(s, live, 2.0, mask=m), rtol=2e-3, atol=1e-5
        )


def test_topk_sequence_cache_keeps_each_positions_top_probabilities_and_tail_mass(tmp_path: Path) -> None:
    split, mask = _tokens()
    teacher, student = TinySequenceModel(0), TinySequenceModel(1)
    k, temps = 5, (1.0, 2.0)
    cached = CachedTeacher(
        build_cache(teacher, split, tmp_path / "c", key="k", topk=k, temperatures=temps, batch_size=16)
    )
    index = torch.arange(40)
    with torch.no_grad():
        live = teacher(split.x).double()
        s = student(split.x)
    for t in temps:
        got = cached.lookup(index, temperature=t)
        assert got.shape == (40, LENGTH, VOCAB)
        # The documented approximation, per position: exact top-k probabilities and tail mass at T,
        # the tail spread evenly over its V - k tokens.
        p = torch.softmax(live / t, dim=-1)
        top = live.topk(k, dim=-1).indices
        in_top = torch.zeros_like(p, dtype=torch.bool).scatter(-1, top, True)
        tail = (p * ~in_top).sum(-1, keepdim=True) / (VOCAB - k)
        want = torch.where(in_top, p, tail)
        torch.testing.assert_close(torch.softmax(got.double() / t, dim=-1), want, rtol=2e-3, atol=1e-6)
        # KD from the cache equals KD from that represented distribution, over valid positions only.
        log_ps = torch.log_softmax(s.double() / t, dim=-1)
        per_position = (want * (want.log() - log_ps)).sum(-1) * t * t
        torch.testing.assert_close(
            kd_kl(s, got, t, mask=mask).double(), per_position[mask].mean(), rtol=2e-3, atol=1e-6
        )


def test_sequences_of_different_lengths_cannot_share_a_cache(tmp_path: Path) -> None:
    class Ragged(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(ids.shape[0], 3 if ids.shape[0] == 1 else 4, 5)

    split, _ = _tokens(8)
    with pytest.raises(ConfigError, match="padded to the same length"):
        build_cache(Ragged(), split, tmp_path / "c", key="k", batch_size=4)
