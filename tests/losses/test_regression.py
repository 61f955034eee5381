"""Regression terms (issue 26.3): the distances against the formulas written out, and the defaults."""

from __future__ import annotations

import math

import pytest
import torch

from distil.config import KDConfig
from distil.errors import ConfigError
from distil.losses import LOSSES, resolve_terms, supervised_loss
from distil.losses.registry import TermContext, TermInputs, build_term
from distil.losses.regression import regression_distance


def test_distances_match_their_formulas() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 3) * 3, torch.randn(6, 3) * 3
    e = (s - t).double()
    assert math.isclose(float(regression_distance(s, t, "mse")), float(e.square().mean()), rel_tol=1e-6)
    assert math.isclose(float(regression_distance(s, t, "l1")), float(e.abs().mean()), rel_tol=1e-6)
    delta = 1.5
    huber = torch.where(e.abs() <= delta, 0.5 * e.square(), delta * (e.abs() - 0.5 * delta))
    got = regression_distance(s, t, "huber", delta=delta)
    assert math.isclose(float(got), float(huber.mean()), rel_tol=1e-6)


def test_one_column_targets_and_masks() -> None:
    s, y = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 0.0, 0.0])
    assert float(regression_distance(s, y)) == pytest.approx((0 + 4 + 16) / 3)
    mask = torch.tensor([True, True, False])
    assert float(regression_distance(s, y, mask=mask)) == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="num_classes=D"):
        regression_distance(torch.randn(3, 2), torch.randn(3))


def test_the_terms_take_their_options_and_ignore_the_temperature() -> None:
    term = build_term("reg_kd", TermContext(), {"loss": "l1"})
    s, t = torch.zeros(2, 2), torch.ones(2, 2)
    for temperature in (1.0, 4.0):
        value = term(TermInputs(s, t, torch.zeros(2, 2), temperature=temperature))
        assert float(value) == 1.0
    with pytest.raises(ConfigError, match="option loss must be one of"):
        build_term("reg_label", TermContext(), {"loss": "mape"})
    assert not LOSSES.get("reg_label").needs_teacher


def test_regression_defaults_to_its_own_terms_and_refuses_softmax_ones() -> None:
    assert resolve_terms(KDConfig(), "regression") == {"reg_kd": 0.9, "reg_label": 0.1}
    with pytest.raises(ConfigError, match="do not fit regression"):
        resolve_terms(KDConfig(terms={"kd": 1.0}), "regression")
    out = supervised_loss("regression")(torch.zeros(2, 1), None, {"labels": torch.ones(2)})
    assert set(out) == {"loss", "reg_label"} and float(out["loss"]) == 1.0
