"""Int8: ORT static quantization with calibration checks, and fake-quant for QAT."""

from pathlib import Path

import pytest
import torch
from torch import nn

from distil.compress import check_calibration, export_onnx, fake_quantize_, onnx_predict
from distil.compress.quantize import quantize_onnx
from distil.errors import ConfigError, DataError
from distil.models import create_model

pytest.importorskip("onnxruntime")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("smallnet", num_classes=4, in_channels=1, image_size=8).eval()


def test_static_int8_is_smaller_and_agrees_with_fp32(tmp_path: Path) -> None:
    model = _model()
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", (1, 8, 8))
    x = torch.randn(64, 1, 8, 8)
    result = quantize_onnx(fp32, tmp_path / "int8.onnx", x, (1, 8, 8), min_run_time=0.05)
    assert len(result.candidates) == 4  # 2 formats x per-tensor/per-channel, all measured
    kept = min(result.candidates, key=lambda c: c["latency_b1_ms"])
    assert (kept["format"], kept["per_channel"]) == (result.fmt, result.per_channel)
    assert result.float_nodes == []
    assert result.path.stat().st_size < 0.5 * fp32.stat().st_size
    ref, q = model(x), onnx_predict(result.path, x)
    # int8 rounding perturbs the logits but must keep them strongly correlated with fp32.
    corr = torch.corrcoef(torch.stack([ref.flatten(), q.flatten()]))[0, 1]
    assert corr > 0.98
    assert (ref.argmax(1) == q.argmax(1)).float().mean() >= 0.9


def test_bad_calibration_sets_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        check_calibration(torch.empty(0, 1, 8, 8), (1, 8, 8))
    with pytest.raises(DataError, match=r"\(3, 8, 8\) per sample but the model takes \(1, 8, 8\)"):
        check_calibration(torch.randn(4, 3, 8, 8), (1, 8, 8))
    fp32 = export_onnx(_model(), tmp_path / "fp32.onnx", (1, 8, 8))
    with pytest.raises(DataError, match="empty"):
        quantize_onnx(fp32, tmp_path / "q.onnx", torch.empty(0, 1, 8, 8), (1, 8, 8))
    with pytest.raises(ConfigError, match="no node"):
        quantize_onnx(fp32, tmp_path / "q.onnx", torch.randn(4, 1, 8, 8), (1, 8, 8), exclude=["nope"])


def test_fake_quant_rounds_weights_to_int8_and_is_removable() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = fake_quantize_(model)
    model.train()
    model(torch.randn(8, 1, 8, 8))  # observers see data
    w = model.conv2.weight.detach()  # the fake-quantized view
    for row in w.flatten(1):
        assert row.unique().numel() <= 255  # at most 255 levels per output channel ([-127, 127])
    assert not torch.equal(w, before["conv2.weight"])
    handle.remove()
    assert set(model.state_dict()) == set(before)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_layers_qat_cannot_model_are_named_with_the_way_out() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Embedding(3, 4))
    with pytest.raises(ConfigError, match=r"'1' \(Embedding\).*exclude.*static"):
        fake_quantize_(model)
    fake_quantize_(model, exclude=["1"]).remove()
    with pytest.raises(ConfigError, match="not in the model"):
        fake_quantize_(model, exclude=["2"])


def test_the_quantize_verb_takes_a_module_or_an_onnx_file_and_its_config(tmp_path: Path) -> None:
    from distil.compress import quantize
    from distil.config import QuantizeConfig

    model, x = _model(), torch.randn(64, 1, 8, 8)
    cfg = QuantizeConfig(format="qdq", per_channel=False, calibration_size=16)
    from_module = quantize(model, cfg, calibration=x, out=tmp_path / "a" / "int8.onnx", min_run_time=0.05)
    assert (from_module.fmt, from_module.per_channel, len(from_module.candidates)) == ("qdq", False, 1)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["int8.onnx"]  # the fp32 export is removed
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", (1, 8, 8))
    qat = QuantizeConfig(mode="qat", format="qdq")  # QAT weights: per channel unless told otherwise
    from_file = quantize(fp32, qat, calibration=x, out=tmp_path / "b.onnx", min_run_time=0.05)
    assert from_file.per_channel is True and fp32.is_file()
