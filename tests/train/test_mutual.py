"""Deep mutual learning, multi-teacher ensembles and composed losses through the public API."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.api import distill, mutual_learning
from distil.config import KDConfig, TrainConfig
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.losses import cross_entropy, kd_kl
from distil.models import create_model
from distil.train.ensemble import EnsembleTeacher
from distil.train.mutual import mutual_losses

CFG = TrainConfig(epochs=1, batch_size=32, augment="none", teacher_cache="off")


def net(name: str = "smallnet", seed: int = 0, **kw: float) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_channels=1, image_size=8, **kw)


def test_mutual_losses_detach_peers_and_match_the_formula() -> None:
    a = torch.randn(4, 10, requires_grad=True)
    b = torch.randn(4, 10, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    la, _ = mutual_losses([a, b], y, temperature=2.0, kd_weight=0.5, ce_weight=1.0)
    torch.testing.assert_close(la["loss"], cross_entropy(a, y) + 0.5 * kd_kl(a, b.detach(), 2.0))
    la["loss"].backward()
    assert a.grad is not None and b.grad is None  # a's loss never moves its peer


def test_mutual_learning_trains_every_student() -> None:
    data = load_dataset("digits", limit=200)
    students = [net(seed=0), net(seed=1)]
    before = [s.fc2.weight.detach().clone() for s in students]
    result = mutual_learning(students, data, CFG)
    assert len(result.models) == 2 and len(result.final_accuracies) == 2
    rec = result.history[-1]
    assert {"train_s0_ce", "train_s0_kd", "train_s1_loss", "s1_eval_accuracy"} <= set(rec)
    for m, w in zip(result.models, before, strict=True):
        assert not torch.equal(m.fc2.weight, w)
    with pytest.raises(ConfigError, match="at least two"):
        mutual_learning(students[:1], data, CFG)


def test_ensemble_teacher_mixes_softened_distributions() -> None:
    t1, t2 = net("largenet", 0), net("largenet", 1, width=0.5)
    x = torch.randn(3, 1, 8, 8)
    ens = EnsembleTeacher([t1, t2], [1.0, 3.0], temperature=2.0)
    out = ens({"inputs": x})
    with torch.no_grad():
        ref = 0.25 * torch.softmax(t1(x) / 2, 1) + 0.75 * torch.softmax(t2(x) / 2, 1)
    torch.testing.assert_close(torch.softmax(out / 2, 1), ref, rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in t1.parameters())
    with pytest.raises(ConfigError, match="2 non-negative weights"):
        EnsembleTeacher([t1, t2], [1.0])


def test_distill_with_two_teachers_and_with_feature_terms_leaves_no_hooks() -> None:
    data = load_dataset("digits", limit=200)
    t1, t2 = net("largenet", 0), net("largenet", 1, width=0.5)
    r = distill([t1, t2], net(), data, CFG, KDConfig(), teacher_weights=[0.5, 0.5])
    assert r.history[-1]["teacher_source"] == "live"
    kd = KDConfig(terms={"ce": 1.0, "kd": 0.5, "at": 100.0}, warmup={"at": 2})
    student = net()
    r = distill(t1, student, data, CFG.model_copy(update={"epochs": 2}), kd)
    rec = r.history[-1]
    assert {"train_loss", "train_ce", "train_kd", "train_at"} <= set(rec)
    assert not any(m._forward_hooks for m in student.modules())
    assert not any(m._forward_hooks for m in t1.modules())
