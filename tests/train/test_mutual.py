"""Deep mutual learning, multi-teacher ensembles and composed losses through the public API."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.api import distill, mutual_learning
from distil.config import KDConfig, StudentTrainConfig, TrainConfig
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.losses import cross_entropy, kd_kl
from distil.models import create_model
from distil.teachers.ensemble import EnsembleTeacher
from distil.train.engine import make_accelerator, train_loader
from distil.train.mutual import mutual_losses
from distil.train.optim import build_optimizer, build_scheduler

CFG = StudentTrainConfig(epochs=1, batch_size=32, augment="none", teacher_cache="off")


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


def _reference_dml(students: list[nn.Module], data, cfg: TrainConfig, temperature: float, kd_weight: float):
    """Deep mutual learning written out as a plain loop: one optimizer per student, each student's
    gradient norm clipped on its own (what the second loop, fit_mutual, did before it was removed)."""
    torch.manual_seed(cfg.seed)
    loader = train_loader(data, cfg, make_accelerator("cpu"))
    optimizers = [build_optimizer(s, cfg) for s in students]
    schedulers = [build_scheduler(o, cfg, len(loader)) for o in optimizers]
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        for s in students:
            s.train()
        for batch in loader:
            logits = [s(batch["inputs"]) for s in students]
            total = torch.zeros(())
            for i, z in enumerate(logits):
                peers = [p.detach() for j, p in enumerate(logits) if j != i]
                kd = torch.stack([kd_kl(z, p, temperature) for p in peers]).mean()
                total = total + cross_entropy(z, batch["labels"]) + kd_weight * kd
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            total.backward()
            for s, o, sch in zip(students, optimizers, schedulers, strict=True):
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(s.parameters(), cfg.grad_clip)
                o.step()
                sch.step()
    return students


@pytest.mark.parametrize(("optimizer", "grad_clip", "dropout"), [("sgd", None, 0.0), ("adam", 0.5, 0.3)])
def test_mutual_learning_through_the_one_loop_equals_the_plain_dml_loop(
    optimizer: str, grad_clip: float | None, dropout: float
) -> None:
    data = load_dataset("digits", limit=200)
    cfg = CFG.model_copy(update={"epochs": 2, "optimizer": optimizer, "lr": 0.01, "grad_clip": grad_clip})
    torch.manual_seed(5)
    result = mutual_learning(
        [net(seed=0, dropout=dropout), net(seed=1, dropout=dropout)],
        data,
        cfg,
        temperature=2.0,
        kd_weight=0.7,
    )
    torch.manual_seed(5)
    expected = _reference_dml(
        [net(seed=0, dropout=dropout), net(seed=1, dropout=dropout)], data, cfg, 2.0, 0.7
    )
    for got, want in zip(result.models, expected, strict=True):
        for (k, a), b in zip(got.state_dict().items(), want.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    rec = result.history[-1]
    assert rec["eval_accuracy"] == rec["s0_eval_accuracy"] == rec["val_accuracy"]
    assert rec["train_loss"] == pytest.approx(rec["train_s0_loss"] + rec["train_s1_loss"], rel=1e-5)


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
