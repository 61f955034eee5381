"""The seed conv nets' `norm` option: BatchNorm when asked, the seed document's nets unchanged otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.errors import ModelError
from distil.models import create_model
from distil.models.seed import LargeNet, SmallNet

SEED_KEYS = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
]


@pytest.mark.parametrize("cls", [LargeNet, SmallNet])
def test_the_default_has_no_batchnorm_and_the_seed_module_paths(cls: type[nn.Module]) -> None:
    net = cls(10, 1, 28)
    assert list(net.state_dict()) == SEED_KEYS  # existing checkpoints keep loading
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert [n for n, _ in net.named_children()][:3] == ["conv1", "relu1", "pool1"]


def test_norm_batch_adds_bn_after_each_conv_and_is_a_registry_kwarg() -> None:
    net = create_model("largenet", num_classes=10, in_channels=1, image_size=28, norm="batch")
    assert [n for n, _ in net.named_children()][:6] == ["conv1", "bn1", "relu1", "pool1", "conv2", "bn2"]
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    plain = LargeNet(10, 1, 28)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain.parameters()) + 2 * (
        64 + 128
    )


def test_an_unknown_norm_is_refused_with_the_choices() -> None:
    with pytest.raises(ModelError, match="batch"):
        SmallNet(10, 1, 28, norm="layer")
