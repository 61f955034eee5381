"""Multilabel terms (issue 26.2): the pure functions against the formulas written out, and the defaults."""

from __future__ import annotations

import math

import pytest
import torch

from distil.config import KDConfig
from distil.errors import ConfigError
from distil.losses import resolve_terms, supervised_loss
from distil.losses.multilabel import binary_cross_entropy, binary_kd


def _reference_binary_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-label Bernoulli KL with explicit sigmoids and logs, mean over all entries, times T^2."""
    p = 1 / (1 + torch.exp(-t.double() / temperature))
    q = 1 / (1 + torch.exp(-s.double() / temperature))
    kl = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    return kl.mean() * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_binary_kd_matches_the_formula(temperature: float) -> None:
    torch.manual_seed(0)
    s, t = torch.randn(8, 5) * 2, torch.randn(8, 5) * 2
    got = binary_kd(s, t, temperature)
    assert math.isclose(float(got), float(_reference_binary_kd(s, t, temperature)), rel_tol=1e-5)


def test_binary_kd_is_zero_on_agreement_and_finite_when_saturated() -> None:
    t = torch.randn(4, 3)
    assert float(binary_kd(t.clone(), t, 2.0)) == pytest.approx(0.0, abs=1e-7)
    s = torch.full((2, 3), -200.0, requires_grad=True)
    value = binary_kd(s, torch.full((2, 3), 200.0), 1.0)
    value.backward()
    assert torch.isfinite(value) and s.grad is not None and torch.isfinite(s.grad).all()


def test_binary_kd_mask_keeps_only_the_counted_samples() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    mask = torch.tensor([True, False, True, True, False, False])
    assert math.isclose(
        float(binary_kd(s, t, 2.0, mask)), float(binary_kd(s[mask], t[mask], 2.0)), rel_tol=1e-6
    )


def test_binary_cross_entropy_matches_the_formula() -> None:
    torch.manual_seed(2)
    s = torch.randn(7, 3)
    y = (torch.rand(7, 3) < 0.5).float()
    q = 1 / (1 + torch.exp(-s.double()))
    expected = -(y * torch.log(q) + (1 - y) * torch.log(1 - q)).mean()
    assert math.isclose(float(binary_cross_entropy(s, y)), float(expected), rel_tol=1e-5)


def test_class_indices_given_to_the_multilabel_terms_are_refused() -> None:
    with pytest.raises(ConfigError, match="num_classes=L"):
        binary_cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]))


def test_multilabel_defaults_to_its_own_terms_and_refuses_softmax_ones() -> None:
    assert resolve_terms(KDConfig(), "multilabel") == {"ml_kd": 0.9, "ml_bce": 0.1}
    assert resolve_terms(KDConfig(), "classification") == {"kd": 0.9, "ce": 0.1}
    with pytest.raises(
        ConfigError, match=r"terms ce, kd do not fit multilabel.*kd.terms=\{ml_kd: 0.9, ml_bce: 0.1\}"
    ):
        resolve_terms(KDConfig(terms={"kd": 0.9, "ce": 0.1}), "multilabel")
    with pytest.raises(ConfigError, match="ml_kd do not fit classification"):
        resolve_terms(KDConfig(terms={"ml_kd": 1.0}), "classification")


def test_a_multilabel_teacher_trains_on_binary_cross_entropy() -> None:
    loss = supervised_loss("multilabel")
    out = loss(torch.zeros(2, 3), None, {"labels": torch.ones(2, 3)})
    assert set(out) == {"loss", "ml_bce"} and math.isclose(float(out["loss"]), math.log(2), rel_tol=1e-6)


def test_label_smoothing_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigError, match=r"label_smoothing=0\.1"):
        supervised_loss("multilabel", label_smoothing=0.1)


@pytest.mark.parametrize("term", ["ml_bce", "reg_label"])
def test_mixing_is_refused_for_the_new_label_terms(term: str) -> None:
    # Mixed samples' labels become -100: a float label term would train on them as targets.
    from torch import nn

    from distil.api import check_mixing
    from distil.config import TrainConfig
    from distil.losses.compose import ComposedLoss
    from distil.losses.registry import TermContext, build_term

    loss = ComposedLoss({term: build_term(term, TermContext())}, {term: 1.0})
    cfg = TrainConfig.model_validate({"augment": {"mixing": "mixup"}})
    with pytest.raises(ConfigError, match=f"terms {term} read labels"):
        check_mixing(cfg, loss)
    assert isinstance(loss, nn.Module)


def test_an_ensemble_of_multilabel_teachers_is_refused() -> None:
    from torch import nn

    from distil.api import distill
    from distil.data.bundle import DataBundle, Split

    split = Split(torch.randn(8, 4), (torch.rand(8, 2) < 0.5).float())
    data = DataBundle("npz", split, split, split, ["0", "1"], (0.0,) * 4, (1.0,) * 4, task="multilabel")
    with pytest.raises(ConfigError, match="mixes their softmax distributions"):
        distill([nn.Linear(4, 2), nn.Linear(4, 2)], nn.Linear(4, 2), data)


def test_mutual_learning_on_multilabel_data_is_refused() -> None:
    from torch import nn

    from distil.api import mutual_learning
    from distil.data.bundle import DataBundle, Split

    split = Split(torch.randn(8, 4), (torch.rand(8, 2) < 0.5).float())
    data = DataBundle("npz", split, split, split, ["0", "1"], (0.0,) * 4, (1.0,) * 4, task="multilabel")
    with pytest.raises(ConfigError, match="mutual learning trains students on softmax KL"):
        mutual_learning([nn.Linear(4, 2), nn.Linear(4, 2)], data)
