"""`distil eval` refuses a model whose outputs are probabilities (the check `distill` runs on its teachers),
unless told the outputs are logits (--outputs logits)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app

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


def _eval_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
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
    return ["eval", str(weights), "--model", f"{module}:tagger", "--data", "npz", "--data-root", str(data)]


def test_eval_refuses_a_sigmoid_model_on_multilabel_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scored as logits, its probabilities are all >= 0: every label "on", F1 and mAP printed without a word.
    r = runner.invoke(app, [*_eval_args(tmp_path, monkeypatch), "--no-latency"])
    text = " ".join(r.output.split())
    assert r.exit_code != 0 and "probabilities" in text and "--outputs logits" in text, r.output


def test_eval_measures_outputs_declared_logits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = runner.invoke(app, [*_eval_args(tmp_path, monkeypatch), "--no-latency", "--outputs", "logits"])
    assert r.exit_code == 0, r.output
