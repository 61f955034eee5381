"""Review of issue 26 (rev26): edge cases the merged task code gets wrong. Each test fails on main at 08f02ed."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.errors import ConfigError
from distil.losses.registry import check_term_tasks

runner = CliRunner()

SIGMOID_TAGGER = """
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):
        return torch.sigmoid(self.fc(x.flatten(1)))  # a published model with its probability head


def tagger(num_classes, in_channels, image_size):
    return Tagger(num_classes, in_channels, image_size)
"""


@pytest.mark.parametrize("term", ["deit", "deit_soft"])
@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_deit_terms_are_refused_on_non_softmax_tasks(term: str, task: str) -> None:
    # deit/deit_soft take CE on (B,) class labels and the argmax of a softmax teacher; they declare no
    # `tasks`, so check_term_tasks lets them through and the run dies later in a gather()/shape error.
    with pytest.raises(ConfigError):
        check_term_tasks([term], task)


def test_eval_refuses_a_sigmoid_model_on_multilabel_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # distil distill refuses a sigmoid-ending teacher (NotLogitsError); distil eval of the same model
    # thresholds its probabilities at logit >= 0 (every label "on") and prints F1 and mAP without a word.
    module = f"sigmoidtagger_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(SIGMOID_TAGGER)
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "tagger.pt"
    torch.save({"fc.weight": torch.randn(6, 12), "fc.bias": torch.zeros(6)}, weights)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    y = (x @ rng.normal(size=(12, 6)) > 0.5).astype(np.float32)
    data = tmp_path / "tags.npz"
    np.savez(data, x=x[:200], y=y[:200], x_test=x[200:], y_test=y[200:])
    r = runner.invoke(
        app,
        ["eval", str(weights), "--model", f"{module}:tagger", "--data", "npz", "--data-root", str(data), "--no-latency"],
    )
    assert r.exit_code != 0 and "probabilities" in " ".join(r.output.split()), r.output


def test_r2_keeps_a_varying_target_column_of_small_scale() -> None:
    # `_r2` calls a column constant when its sum of squares around the mean is below 1e-12 * N: an absolute
    # threshold, so targets in units of 1e-7 (std 1e-7) count as constant. With a second column they are
    # dropped from the mean without a word (distil 0.99 where sklearn's r2_score gives 0.50); alone, the
    # split is refused as "every target column is constant".
    from sklearn.metrics import r2_score

    from distil.measure.regression import regression_finish, regression_sums

    g = torch.Generator().manual_seed(0)
    y = torch.stack([torch.randn(500, generator=g), 1e-7 * torch.randn(500, generator=g)], 1)
    s = torch.stack([y[:, 0] + 0.1 * torch.randn(500, generator=g), torch.zeros(500)], 1)
    r2 = regression_finish(regression_sums(s, y, None), 2)["r2"]
    assert r2 == pytest.approx(r2_score(y.numpy(), s.numpy()), abs=1e-6)


def test_the_full_cache_keeps_a_regression_teachers_variation() -> None:
    # Regression teachers are cached by default in the `full` format, float16: outputs of 2000 +- 1 (a
    # year, a temperature in kelvin, a price) are rounded to whole numbers, so the cached teacher explains
    # only ~92% of the live teacher's variance and reg_kd learns the rounding, silently. Logit caches
    # tolerate float16; regression values need float32 (D values a row: the cost is nothing) or a refusal.
    from distil.measure.regression import regression_finish, regression_sums
    from distil.teachers.store import FullLogits

    g = torch.Generator().manual_seed(0)
    live = 2000 + torch.randn(2000, 1, generator=g)
    cached = torch.from_numpy(FullLogits().encode(live)["values.f16"]).float()
    assert regression_finish(regression_sums(cached, live, None), 1)["r2"] > 0.999
