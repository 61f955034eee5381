"""Feature capture by module path, layer listing, pair proposals and adapters."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from distil.cli.app import app
from distil.errors import ConfigError
from distil.features import (
    FeatureCapture,
    feature_shapes,
    layer_shapes,
    make_adapter,
    make_regressor,
    propose_pairs,
    resolve_module,
)
from distil.models import create_model


def small() -> nn.Module:
    torch.manual_seed(0)
    return create_model("smallnet", num_classes=10, in_channels=1, image_size=8)


def test_capture_holds_the_latest_forward_and_removes_cleanly() -> None:
    model = small()
    x1, x2 = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    with FeatureCapture(model, ["conv1", "fc1"]) as cap:
        model(x1)
        model(x2)
        conv1, fc1 = cap.features()
        torch.testing.assert_close(conv1, model.conv1(x2))
        assert fc1.shape == (2, 64) and conv1.requires_grad
        with pytest.raises(RuntimeError, match="no model feature captured"):
            cap.features()
    assert not model.conv1._forward_hooks and not model.fc1._forward_hooks


def test_detached_capture_keeps_no_graph() -> None:
    model = small()
    with FeatureCapture(model, ["conv2"], detach=True, role="teacher") as cap:
        model(torch.randn(2, 1, 8, 8))
        (f,) = cap.features()
    assert not f.requires_grad


def test_unknown_path_lists_valid_paths_and_closest() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown module path 'fc_1' in the student.*Did you mean 'fc1'.*conv1, relu1"
    ):
        resolve_module(small(), "fc_1", "student")


def test_layer_shapes_and_feature_shapes() -> None:
    model = small()
    x = torch.randn(2, 1, 8, 8)
    layers = {r.path: r for r in layer_shapes(model, x)}
    assert layers["conv1"].shape == (16, 8, 8) and layers["pool2"].shape == (32, 2, 2)
    assert layers["fc2"].shape == (10,) and layers["conv1"].params == 16 * 9 + 16
    assert feature_shapes(model, ["relu2", "fc1"], x) == [(32, 4, 4), (64,)]
    assert model.training  # the probe restores the mode


def test_propose_pairs_by_stage_for_cifar_resnets() -> None:
    teacher = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    student = create_model("resnet8", num_classes=10, in_channels=3, image_size=32)
    pairs = propose_pairs(teacher, student, torch.randn(2, 3, 32, 32))
    assert pairs == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3"), ("flatten", "flatten")]


def test_adapters() -> None:
    assert isinstance(make_adapter((8, 4, 4), (8, 4, 4)), nn.Identity)
    conv = make_adapter((8, 4, 4), (16, 4, 4))
    assert conv(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)
    assert make_adapter((5,), (7,))(torch.randn(2, 5)).shape == (2, 7)
    with pytest.raises(ConfigError, match=r"\(8, 4, 4\).*\(16, 2, 2\)"):
        make_adapter((8, 4, 4), (16, 2, 2))


def test_fitnet_regressor_is_conv_bn_relu_for_any_channels() -> None:
    for c_s, c_t in ((8, 8), (8, 16)):
        reg = make_regressor((c_s, 4, 4), (c_t, 4, 4))
        assert [type(m) for m in reg] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert reg(torch.randn(2, c_s, 4, 4)).shape == (2, c_t, 4, 4)
    assert make_regressor((5,), (5,))(torch.randn(2, 5)).shape == (2, 5)
    with pytest.raises(ConfigError, match=r"\(8, 4, 4\).*\(16, 2, 2\)"):
        make_regressor((8, 4, 4), (16, 2, 2))


def test_layers_command_prints_shapes_and_pairs() -> None:
    result = CliRunner().invoke(
        app, ["layers", "smallnet", "--teacher", "largenet", "--input-shape", "1,8,8"]
    )
    assert result.exit_code == 0, result.output
    assert "conv1" in result.output and "16x8x8" in result.output
    assert "[relu2, relu2]" in result.output
    bad = CliRunner().invoke(app, ["layers", "smalnet"])
    assert bad.exit_code == 2 and "Did you mean 'smallnet'" in bad.output


def test_layers_command_takes_a_feature_vector_shape() -> None:
    result = CliRunner().invoke(
        app, ["layers", "mlp", "--input-shape", "13", "--num-classes", "3", "--teacher", "mlp"]
    )
    assert result.exit_code == 0, result.output
    assert "3,584" in result.output  # fc1: 13 * 256 + 256
    bad = CliRunner().invoke(app, ["layers", "mlp", "--input-shape", "3,4"])
    assert bad.exit_code == 2 and "or F for feature vectors" in bad.output
