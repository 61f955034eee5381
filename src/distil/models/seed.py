"""The seed document's reference nets, sized from the input: largenet, smallnet, mlp, tiny-cnn.

``largenet`` and ``smallnet`` share one layout (conv-pool-conv-pool-fc-fc) with the attribute names
``conv1``, ``conv2``, ``fc1``, ``fc2``, so weights and structure can be transferred between them by name.
Activations and pools are modules too (``relu1``, ``pool1``, ...), so forward hooks can capture any
intermediate feature by module path without editing the model.

Parameter counts with 10 classes (measured in tests/models/test_seed.py):

============  ===========  ==========  =======
input         largenet     smallnet    ratio
============  ===========  ==========  =======
28x28x1       3,291,402    105,866     31.1x
32x32x3       4,275,594    136,874     31.2x
8x8x1         342,282      13,706      25.0x
============  ===========  ==========  =======
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from distil.errors import ModelError
from distil.models.registry import register_model


def pooled_size(image_size: int, pools: int = 2) -> int:
    """Spatial size after `pools` 2x2/stride-2 max-pools (floor, as nn.MaxPool2d does)."""
    for _ in range(pools):
        image_size //= 2
    return image_size


NORMS = (None, "batch")
"""The seed conv nets' normalisation after each conv: none (the seed document's nets) or BatchNorm2d
(``norm="batch"``, e.g. a teacher that DeepInversion can invert from its running statistics)."""


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class _ConvNet(nn.Module):
    """conv(3x3) -> ReLU -> maxpool2 -> conv(3x3) -> ReLU -> maxpool2 -> fc -> ReLU -> dropout -> fc."""

    def __init__(
        self,
        *,
        name: str,
        num_classes: int,
        in_channels: int,
        image_size: int,
        channels: tuple[int, int],
        hidden: int,
        dropout: float,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        side = pooled_size(image_size)
        if side < 1:
            raise ModelError(
                f"image_size={image_size} is too small for {name}: its two 2x2 max-pools need images of at "
                f"least 4x4 pixels ({image_size} -> {image_size // 2} -> {side}). Use a larger image or a "
                "model with adaptive pooling (e.g. 'resnet8', 'tiny-cnn')."
            )
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"{name}: dropout must be in [0, 1), got {dropout!r}.")
        if norm not in NORMS:
            raise ModelError(f"{name}: norm must be one of {list(NORMS)}, got {norm!r}.")
        c1, c2 = channels
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=3, padding=1)
        if norm == "batch":
            # Added only when asked, so the default nets keep their module paths and checkpoints load.
            self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        if norm == "batch":
            self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.relu3 = nn.ReLU()
        # Always present (even at p=0) so every width/dropout setting has the same module paths.
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) for images of shape (N, C, H, W)."""
        x = self.conv1(x)
        if hasattr(self, "bn1"):
            x = self.bn1(x)
        x = self.pool1(self.relu1(x))
        x = self.conv2(x)
        if hasattr(self, "bn2"):
            x = self.bn2(x)
        x = self.pool2(self.relu2(x))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(self.dropout(x))


def _check_width(name: str, width: float) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ModelError(f"{name}: width must be a positive number (1.0 = reference size), got {width!r}.")


class LargeNet(_ConvNet):
    """The seed document's teacher: conv(C->64) -> conv(64->128) -> fc(128*(H/4)*(W/4) -> 512) -> fc.

    Args:
        num_classes: Number of output logits.
        in_channels: Input channels.
        image_size: Input height (= width); pooled sizes use floor, so 30 -> 15 -> 7.
        width: Multiplier of the 64/128/512 widths; ``width=0.5`` is a thinner student of the same layout.
        dropout: Dropout probability before ``fc2``.
        norm: None (the seed net) or ``"batch"``: BatchNorm2d (``bn1``, ``bn2``) after each conv.

    Raises:
        ModelError: If the image is smaller than 4x4, or width/dropout/norm are out of range.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        width: float = 1.0,
        dropout: float = 0.0,
        norm: str | None = None,
    ) -> None:
        _check_width("largenet", width)
        super().__init__(
            name="largenet",
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            channels=(_scaled(64, width), _scaled(128, width)),
            hidden=_scaled(512, width),
            dropout=dropout,
            norm=norm,
        )


class SmallNet(_ConvNet):
    """The proportionally smaller student: conv(C->16) -> conv(16->32) -> fc(32*(H/4)*(W/4) -> 64) -> fc.

    Conv widths are a quarter of :class:`LargeNet`'s and the hidden fc an eighth, which makes it over 25x
    smaller: 105,866 vs 3,291,402 parameters on 28x28x1 (31.1x), 136,874 vs 4,275,594 on 32x32x3 (31.2x),
    13,706 vs 342,282 on 8x8x1 (25.0x), all with 10 classes.

    Args:
        num_classes: Number of output logits.
        in_channels: Input channels.
        image_size: Input height (= width).
        width: Multiplier of the 16/32/64 widths.
        dropout: Dropout probability before ``fc2``.
        norm: None (the seed net) or ``"batch"``: BatchNorm2d (``bn1``, ``bn2``) after each conv.

    Raises:
        ModelError: If the image is smaller than 4x4, or width/dropout/norm are out of range.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        width: float = 1.0,
        dropout: float = 0.0,
        norm: str | None = None,
    ) -> None:
        _check_width("smallnet", width)
        super().__init__(
            name="smallnet",
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            channels=(_scaled(16, width), _scaled(32, width)),
            hidden=_scaled(64, width),
            dropout=dropout,
            norm=norm,
        )


class MLP(nn.Sequential):
    """flatten -> fc1 -> ReLU -> ... -> fcN, with layers named ``fc1``..``fcN`` for transfer by name.

    It takes samples of any shape: (F,) feature vectors (tabular data, which distil sizes as
    ``in_channels=F, image_size=1``), square (C, H, H) images, or anything else with ``in_features`` set.

    Args:
        num_classes: Number of output logits.
        in_channels: Input channels (F for feature vectors).
        image_size: Input height (= width); 1 for feature vectors.
        hidden: Hidden layer widths; an int means one hidden layer, empty means a linear classifier.
        in_features: Values per sample, when they are not ``in_channels * image_size**2`` (e.g. a
            non-square image); None derives them from the sizes.

    Raises:
        ModelError: If a hidden width or ``in_features`` is not a positive integer.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        hidden: Sequence[int] | int = (256, 128),
        in_features: int | None = None,
    ) -> None:
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ModelError(f"mlp: hidden must be positive integers, got {hidden!r}.")
        if in_features is not None and (
            isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1
        ):
            raise ModelError(f"mlp: in_features must be a positive integer or None, got {in_features!r}.")
        fan_in = in_features if in_features is not None else in_channels * image_size * image_size
        sizes = [fan_in, *widths, num_classes]
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), start=1):
            layers[f"fc{i}"] = nn.Linear(fan_in, fan_out)
            if i < len(sizes) - 1:
                layers[f"relu{i}"] = nn.ReLU()
        super().__init__(layers)


class TinyCNN(nn.Module):
    """A ~200-parameter net for fast tests: conv(C->4, 3x3) -> ReLU -> adaptive avg-pool 2x2 -> fc.

    Adaptive pooling makes it accept any image size, so tests can use 1x1 to 64x64 inputs.
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) for images of shape (N, C, H, W)."""
        return self.fc(self.flatten(self.pool(self.relu1(self.conv1(x)))))


@register_model("largenet")
def largenet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: float = 1.0,
    dropout: float = 0.0,
    norm: str | None = None,
) -> LargeNet:
    """The seed teacher, :class:`LargeNet`."""
    return LargeNet(num_classes, in_channels, image_size, width=width, dropout=dropout, norm=norm)


@register_model("smallnet")
def smallnet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: float = 1.0,
    dropout: float = 0.0,
    norm: str | None = None,
) -> SmallNet:
    """The seed student, :class:`SmallNet`."""
    return SmallNet(num_classes, in_channels, image_size, width=width, dropout=dropout, norm=norm)


@register_model("mlp")
def mlp(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    hidden: Sequence[int] | int = (256, 128),
    in_features: int | None = None,
) -> MLP:
    """A fully connected net, :class:`MLP`: feature vectors (tabular data) or images of any shape."""
    return MLP(num_classes, in_channels, image_size, hidden=hidden, in_features=in_features)


@register_model("tiny-cnn")
def tiny_cnn(*, num_classes: int, in_channels: int, image_size: int) -> TinyCNN:
    """The tiny test net, :class:`TinyCNN` (`image_size` is accepted for the common signature, unused)."""
    del image_size  # adaptive pooling: any size works
    return TinyCNN(num_classes, in_channels)
