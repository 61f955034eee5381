"""CIFAR ResNets of the distillation literature (the teacher/student zoo of CRD, Tian et al. 2020).

Depth ``6n + 2``: a 3x3 stem, three stages of ``n`` BasicBlocks (the 2nd and 3rd halve the resolution),
global average pooling and a linear classifier.

* ``resnet8`` .. ``resnet110``: stem 16 channels, stages 16, 32, 64.
* ``resnet8x4``, ``resnet32x4``: 4x wider, stem 32 channels, stages 64, 128, 256.

Module paths: ``conv1``, ``bn1``, ``relu`` (stem), ``layer1``, ``layer2``, ``layer3`` (stages of
:class:`BasicBlock`, each with ``conv1``, ``bn1``, ``conv2``, ``bn2`` and an optional ``downsample``),
``avgpool``, ``fc``. Pooling is adaptive, so any image size works (the stem never downsamples, so
8x8 digits become 8 -> 4 -> 2 pixels before pooling).

Parameter counts (measured in tests/models/test_resnet_cifar.py), 100 classes:
resnet20 0.28M (0.27M with 10 classes), resnet56 0.86M, resnet110 1.74M, resnet8x4 1.23M, resnet32x4 7.43M.
"""

from __future__ import annotations

import torch
from torch import nn

from distil.errors import ModelError
from distil.models.registry import register_model

_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the input, then ReLU; a 1x1 conv-BN shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output of shape (N, planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """A CIFAR-style ResNet of depth ``6n + 2``.

    Args:
        depth: Total number of conv/fc layers on the main path; must be ``6n + 2`` (8, 14, 20, 32, ...).
        num_filters: Stem channels followed by the three stage widths, e.g. ``(16, 16, 32, 64)``.
        num_classes: Number of output logits.
        in_channels: Input channels.

    Raises:
        ModelError: If the depth is not ``6n + 2`` or ``num_filters`` does not have four entries.
    """

    def __init__(
        self,
        depth: int,
        num_filters: tuple[int, int, int, int] = _THIN,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}."
            )
        if len(num_filters) != 4:
            raise ModelError(f"num_filters must be (stem, stage1, stage2, stage3), got {num_filters!r}.")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, num_filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(num_filters[0], num_filters[1], blocks, stride=1)
        self.layer2 = self._stage(num_filters[1], num_filters[2], blocks, stride=2)
        self.layer3 = self._stage(num_filters[2], num_filters[3], blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(num_filters[3], num_classes)
        self._init_weights()

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # He init for ReLU nets keeps activation variance stable through the deep residual stacks.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) for images of shape (N, C, H, W)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def _resnet(
    depth: int, filters: tuple[int, int, int, int], num_classes: int, in_channels: int
) -> CifarResNet:
    return CifarResNet(depth, filters, num_classes=num_classes, in_channels=in_channels)


# image_size is part of the common factory signature; adaptive pooling makes every size work.
@register_model("resnet8")
def resnet8(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-8 (n=1), channels 16/32/64."""
    return _resnet(8, _THIN, num_classes, in_channels)


@register_model("resnet14")
def resnet14(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-14 (n=2), channels 16/32/64."""
    return _resnet(14, _THIN, num_classes, in_channels)


@register_model("resnet20")
def resnet20(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-20 (n=3), channels 16/32/64."""
    return _resnet(20, _THIN, num_classes, in_channels)


@register_model("resnet32")
def resnet32(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-32 (n=5), channels 16/32/64."""
    return _resnet(32, _THIN, num_classes, in_channels)


@register_model("resnet44")
def resnet44(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-44 (n=7), channels 16/32/64."""
    return _resnet(44, _THIN, num_classes, in_channels)


@register_model("resnet56")
def resnet56(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-56 (n=9), channels 16/32/64."""
    return _resnet(56, _THIN, num_classes, in_channels)


@register_model("resnet110")
def resnet110(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-110 (n=18), channels 16/32/64."""
    return _resnet(110, _THIN, num_classes, in_channels)


@register_model("resnet8x4")
def resnet8x4(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-8x4 (n=1), stem 32, channels 64/128/256."""
    return _resnet(8, _WIDE, num_classes, in_channels)


@register_model("resnet32x4")
def resnet32x4(*, num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """ResNet-32x4 (n=5), stem 32, channels 64/128/256."""
    return _resnet(32, _WIDE, num_classes, in_channels)


@register_model("cifar-resnet")
def cifar_resnet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    depth: int = 20,
    num_filters: tuple[int, int, int, int] | list[int] = _THIN,
) -> CifarResNet:
    """Any depth (6n+2) and stage widths: the knobs `distil shrink` turns to build smaller ResNets."""
    return CifarResNet(depth, tuple(num_filters), num_classes=num_classes, in_channels=in_channels)  # type: ignore[arg-type]
