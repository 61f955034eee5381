"""A user's own BatchNorm teacher, loaded by tests as 'tests.synth.bn_factory:make'."""

from __future__ import annotations

from torch import nn


def make(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """conv(C->4) -> BatchNorm -> ReLU -> avg-pool 2x2 -> fc: a tiny teacher DeepInversion can invert."""
    del image_size  # adaptive pooling: any size
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def make_fixed(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A teacher of fixed sizes (1x8x8 inputs, 10 classes) whatever it is asked for: its weights always
    load, so only a forward on the asked shape shows that the shape or the class count is wrong."""
    del num_classes, in_channels, image_size
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(128, 10))
