"""Your own model code, as it might live in your project: distil only needs a factory function.

distil calls the factory with the sizes of the dataset (`num_classes`, `in_channels`, `image_size`; it
passes only the ones the factory accepts) plus any `teacher.kwargs` from the recipe, and expects an
`nn.Module` that maps (N, C, H, W) images to (N, num_classes) logits.
"""

from __future__ import annotations

from torch import nn


class MyTeacher(nn.Module):
    """A small VGG-style CNN: two conv blocks and a classifier."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * width, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x))


def make_teacher(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> nn.Module:
    """The factory distil imports as `examples.own_teacher.my_models:make_teacher`."""
    return MyTeacher(num_classes, in_channels, width)
