"""ONNX sessions come from one factory and are timed by the one loop, like PyTorch models."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from distil.compress.export import export_onnx, is_onnx_available
from distil.compress.export import onnx_session as export_session
from distil.errors import DistilError
from distil.measure import LATENCY_ROUNDS, measure_onnx_latency
from distil.measure.onnxrt import onnx_session

pytestmark = pytest.mark.skipif(not is_onnx_available(), reason="needs onnx and onnxruntime")


def test_every_onnx_session_has_the_same_settings(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = export_onnx(nn.Linear(6, 3), tmp_path / "m.onnx", (6,))
    assert export_session is onnx_session  # compress.export and the probe use this one factory
    for threads in (None, 2):
        options = onnx_session(path, threads).get_session_options()
        assert options.inter_op_num_threads == 1
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert options.intra_op_num_threads == (threads or 0)
    with pytest.raises(DistilError, match="positive"):
        onnx_session(path, 0)
    with pytest.raises(DistilError, match="not found"):
        onnx_session(tmp_path / "missing.onnx")


def test_onnx_latency_is_timed_in_rounds_with_a_spread(tmp_path: Path) -> None:
    path = export_onnx(nn.Linear(6, 3), tmp_path / "m.onnx", (6,))
    result = measure_onnx_latency(path, (6,), min_run_time=0.02, threads=1)
    assert len(result.samples_ms) >= LATENCY_ROUNDS and result.spread >= 0
    assert min(result.samples_ms) <= result.median_ms <= max(result.samples_ms)
    assert result.threads == 1
