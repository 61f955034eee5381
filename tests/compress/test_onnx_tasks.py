"""Issue 26.5: deployed (ONNX) rows and the compression commands measure the data's task, not accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score

from distil.compress.export import export_onnx, measure_onnx
from distil.config import ShrinkConfig
from distil.data.bundle import DataBundle, Split
from distil.errors import ConfigError
from distil.shrink.search import shrink_model


def test_an_onnx_row_of_multilabel_data_holds_map(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).eval()
    x = torch.randn(40, 5)
    y = (torch.rand(40, 3) < 0.5).float()
    y[0] = 1.0
    path = export_onnx(model, tmp_path / "m", (5,))
    row = measure_onnx("m", path, x, y, (5,), macs=15, latency=False, task="multilabel")
    logits = model(x).detach()
    assert row.task == "multilabel" and {"mAP", "micro_f1", "macro_f1"} <= set(row.extra)
    # Binned scores: close to sklearn's (exact where every score has its own bin).
    assert row.accuracy == pytest.approx(average_precision_score(y.numpy(), logits.numpy()), abs=0.02)


def test_shrink_refuses_data_it_cannot_rank(tmp_path: Path) -> None:
    split = Split(torch.randn(8, 4), (torch.rand(8, 2) < 0.5).float())
    data = DataBundle("npz", split, split, split, ["0", "1"], (0.0,) * 4, (1.0,) * 4, task="multilabel")
    with pytest.raises(ConfigError, match="distil shrink ranks candidates by classification accuracy"):
        shrink_model(torch.nn.Linear(4, 2), {}, data, ShrinkConfig(target_size_bytes=1000), tmp_path)
