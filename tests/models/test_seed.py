from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.errors import ModelError
from distil.models import MLP, LargeNet, SmallNet, create_model
from distil.models.seed import pooled_size


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def largenet_formula(c: int, h: int, classes: int) -> int:
    side = h // 4
    return (
        (c * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (128 * side * side * 512 + 512) + (512 * classes + classes)
    )


def test_largenet_param_count_matches_formula_28x28x1() -> None:
    model = create_model("largenet", num_classes=10, in_channels=1, image_size=28)
    assert n_params(model) == largenet_formula(1, 28, 10) == 3_291_402


@pytest.mark.parametrize(("c", "h"), [(1, 28), (3, 32)])
def test_smallnet_is_at_least_25x_smaller(c: int, h: int) -> None:
    large = n_params(create_model("largenet", num_classes=10, in_channels=c, image_size=h))
    small = n_params(create_model("smallnet", num_classes=10, in_channels=c, image_size=h))
    assert large / small >= 25


def test_documented_smallnet_counts() -> None:
    assert n_params(SmallNet(10, 1, 28)) == 105_866
    assert n_params(SmallNet(10, 3, 32)) == 136_874
    assert n_params(LargeNet(10, 3, 32)) == 4_275_594


@pytest.mark.parametrize("cls", [LargeNet, SmallNet])
@pytest.mark.parametrize("size", [4, 7, 8, 13, 28, 30, 32])
def test_flatten_size_formula_matches_a_forward_pass(cls: type[nn.Module], size: int) -> None:
    model = cls(3, 2, size)
    feats = model.pool2(
        model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(torch.zeros(1, 2, size, size))))))
    )
    assert feats.flatten(1).shape[1] == model.fc1.in_features
    assert feats.shape[-1] == pooled_size(size)
    assert model(torch.zeros(2, 2, size, size)).shape == (2, 3)


def test_digits_8x8_pools_to_2x2() -> None:
    model = LargeNet(10, 1, 8)
    assert model.fc1.in_features == 128 * 2 * 2


@pytest.mark.parametrize("name", ["largenet", "smallnet"])
def test_shared_attribute_names(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1, image_size=28)
    for attr in ("conv1", "conv2", "fc1", "fc2", "dropout"):
        assert hasattr(model, attr)
    assert isinstance(model.dropout, nn.Dropout)


def test_largenet_width_scales_channels() -> None:
    model = create_model("largenet", num_classes=10, in_channels=1, image_size=28, width=0.5)
    assert isinstance(model, LargeNet)
    assert (model.conv1.out_channels, model.conv2.out_channels, model.fc1.out_features) == (32, 64, 256)
    quarter = create_model("largenet", num_classes=10, in_channels=1, image_size=28, width=0.25)
    assert quarter.conv1.out_channels == 16


def test_largenet_dropout_is_applied() -> None:
    model = create_model("largenet", num_classes=10, in_channels=1, image_size=8, dropout=0.3)
    assert model.dropout.p == pytest.approx(0.3)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_image_too_small_for_two_pools(size: int) -> None:
    with pytest.raises(ModelError, match="too small"):
        create_model("largenet", num_classes=10, in_channels=1, image_size=size)


@pytest.mark.parametrize(("kwargs", "match"), [({"width": 0}, "width"), ({"dropout": 1.0}, "dropout")])
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        create_model("smallnet", num_classes=10, in_channels=1, image_size=28, **kwargs)


def test_mlp_hidden_layers() -> None:
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[32, 16, 8])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 8), (8, 10)]
    assert [n for n, m in model.named_children() if isinstance(m, nn.Linear)] == ["fc1", "fc2", "fc3", "fc4"]


def test_mlp_default_and_int_hidden() -> None:
    default = MLP(10, 1, 28)
    assert [m.out_features for m in default.modules() if isinstance(m, nn.Linear)] == [256, 128, 10]
    single = create_model("mlp", num_classes=5, in_channels=3, image_size=4, hidden=7)
    assert single(torch.zeros(2, 3, 4, 4)).shape == (2, 5)
    linear = create_model("mlp", num_classes=5, in_channels=1, image_size=4, hidden=[])
    assert n_params(linear) == 16 * 5 + 5


def test_mlp_takes_feature_vectors_and_non_square_inputs() -> None:
    # Feature vectors are sized as F channels of a 1x1 image (DataBundle.in_channels / image_size).
    vectors = create_model("mlp", num_classes=3, in_channels=13, image_size=1, hidden=[8])
    assert vectors(torch.zeros(4, 13)).shape == (4, 3)
    wide = create_model("mlp", num_classes=2, in_channels=1, image_size=4, in_features=1 * 4 * 6)
    assert wide(torch.zeros(2, 1, 4, 6)).shape == (2, 2)
    with pytest.raises(ModelError, match="in_features"):
        create_model("mlp", num_classes=2, in_channels=1, image_size=4, in_features=0)


def test_mlp_rejects_bad_hidden() -> None:
    with pytest.raises(ModelError, match="hidden"):
        create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[0])


def test_tiny_cnn_any_size() -> None:
    model = create_model("tiny-cnn", num_classes=3, in_channels=2, image_size=5)
    assert n_params(model) < 500
    for size in (1, 5, 64):
        assert model(torch.zeros(1, 2, size, size)).shape == (1, 3)
