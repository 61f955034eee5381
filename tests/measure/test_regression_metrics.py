"""Regression metrics (issue 26.3) against scikit-learn, streamed and whole."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from distil.data.bundle import Split
from distil.errors import DataError
from distil.measure.regression import regression_finish, regression_sums
from distil.measure.tasks import MetricInputs, split_quality, task_metrics


def test_r2_mae_rmse_equal_sklearn() -> None:
    torch.manual_seed(0)
    y = torch.randn(50, 3) * torch.tensor([1.0, 5.0, 0.1])
    s = y + 0.3 * torch.randn(50, 3)
    got = regression_finish(regression_sums(s, y, None), 3)
    assert got["r2"] == pytest.approx(r2_score(y.numpy(), s.numpy()), abs=1e-6)
    assert got["accuracy"] == got["r2"]
    assert got["mae"] == pytest.approx(mean_absolute_error(y.numpy(), s.numpy()), rel=1e-6)
    assert got["rmse"] == pytest.approx(mean_squared_error(y.numpy(), s.numpy()) ** 0.5, rel=1e-6)
    assert got["agreement"] is None


def test_agreement_is_r2_to_the_teacher_outputs() -> None:
    torch.manual_seed(1)
    t, y = torch.randn(40, 2), torch.randn(40, 2)
    s = t + 0.1 * torch.randn(40, 2)
    got = regression_finish(regression_sums(s, y, t), 2)
    assert got["agreement"] == pytest.approx(r2_score(t.numpy(), s.numpy()), abs=1e-6)


def test_one_column_targets_streamed_equal_whole() -> None:
    torch.manual_seed(2)
    x = torch.randn(70, 4)
    model = torch.nn.Linear(4, 1)
    y = (x @ torch.randn(4)).detach() + 0.5 * torch.randn(70)  # (N,) targets, (N, 1) outputs
    whole = task_metrics("regression", MetricInputs(model(x).detach(), y))
    streamed = split_quality(model, Split(x, y), "regression", batch_size=9).metrics
    for name in ("r2", "mae", "rmse"):
        assert streamed[name] == pytest.approx(whole[name], rel=1e-9)
    assert whole["r2"] == pytest.approx(r2_score(y.numpy(), model(x).detach().numpy()[:, 0]), abs=1e-6)


def test_constant_targets_are_an_error() -> None:
    with pytest.raises(DataError, match="R\\^2 is undefined"):
        regression_finish(regression_sums(torch.randn(5, 1), torch.ones(5), None), 1)


def test_r2_keeps_a_varying_target_column_of_small_scale() -> None:
    # The constant-column cutoff is relative to the column's scale: targets of std 1e-7 vary, so they count
    # in the mean R^2 as sklearn's r2_score counts them (an absolute 1e-12 * N cutoff dropped them: 0.99).

    g = torch.Generator().manual_seed(0)
    y = torch.stack([torch.randn(500, generator=g), 1e-7 * torch.randn(500, generator=g)], 1)
    s = torch.stack([y[:, 0] + 0.1 * torch.randn(500, generator=g), torch.zeros(500)], 1)
    r2 = regression_finish(regression_sums(s, y, None), 2)["r2"]
    assert r2 == pytest.approx(r2_score(y.numpy(), s.numpy()), abs=1e-6)


def test_r2_still_leaves_out_a_constant_column_of_large_values() -> None:

    g = torch.Generator().manual_seed(0)
    y = torch.stack([torch.randn(500, generator=g), torch.full((500,), 2000.0)], 1)
    s = torch.stack([y[:, 0], torch.full((500,), 2001.0)], 1)
    assert regression_finish(regression_sums(s, y, None), 2)["r2"] == pytest.approx(1.0)
