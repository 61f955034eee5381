"""ONNX export: dynamic batch, verified against PyTorch with ONNX Runtime."""

from pathlib import Path

import pytest
import torch

from distil.compress import export_onnx, onnx_parameter_count, onnx_predict, verify_onnx
from distil.errors import DataError
from distil.measure import count_parameters
from distil.models import create_model

pytest.importorskip("onnxruntime")


def test_export_matches_pytorch_at_any_batch_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("smallnet", num_classes=4, in_channels=1, image_size=8)
    model.train()  # export must not depend on (or change) the caller's mode
    path = export_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    assert model.training
    x = torch.randn(7, 1, 8, 8)
    check = verify_onnx(path, model, x, batch_size=3)  # batches of 3 and 1: the batch axis is dynamic
    assert check.samples == 7 and check.top1_agreement == 1.0 and check.max_abs_diff < 1e-5
    torch.testing.assert_close(onnx_predict(path, x), model.eval()(x), atol=1e-5, rtol=1e-4)
    assert onnx_parameter_count(path) == count_parameters(model)


def test_verify_on_no_data_is_a_clear_error(tmp_path: Path) -> None:
    model = create_model("tiny-cnn", num_classes=2, in_channels=1, image_size=4)
    path = export_onnx(model, tmp_path / "m.onnx", (1, 4, 4))
    with pytest.raises(DataError, match="0 samples"):
        verify_onnx(path, model, torch.empty(0, 1, 4, 4))
    with pytest.raises(DataError, match="rejected inputs"):
        onnx_predict(path, torch.randn(2, 3, 4, 4))


def test_an_onnx_row_carries_its_latency_spread_and_reliability(tmp_path: Path) -> None:
    # Regression (review): ONNX rows were timed in rounds but kept no spread, so a noisy ONNX latency
    # was never marked in the report the way a PyTorch one is.
    from distil.compress.export import measure_onnx

    model = create_model("smallnet", num_classes=10, in_channels=1, image_size=8).eval()
    path = export_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    row = measure_onnx("m", path, x, y, (1, 8, 8), macs=1, min_run_time=0.05)
    assert row.latency_b1_ms is not None and row.latency_b1_spread is not None
    assert row.latency_reliable is (row.latency_b1_spread <= 0.5)
