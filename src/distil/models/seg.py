"""Dense (per-pixel) prediction nets: ``tiny-segnet``, a few 3x3 convolutions that keep H x W.

Outputs are ``(B, K, H, W)`` logits, one class distribution per pixel (``data.task=dense``). The net is
tiny on purpose (tests, the docs' example); a teacher and a thinner student differ by ``width``.
"""

from __future__ import annotations

from torch import Tensor, nn

from distil.errors import ModelError
from distil.models.registry import register_model


class TinySegNet(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv1x1 to K classes; padding keeps H x W.

    Args:
        num_classes: K, classes per pixel.
        in_channels: input channels.
        width: channels of the hidden convolutions.
    """

    def __init__(self, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        if width < 1:
            raise ModelError(f"tiny-segnet: width must be >= 1, got {width}.")
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, K, H, W) per-pixel logits."""
        return self.head(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


@register_model("tiny-segnet")
def tiny_segnet(*, num_classes: int, in_channels: int, image_size: int, width: int = 16) -> TinySegNet:
    """The tiny dense net, :class:`TinySegNet` (`image_size` accepted for the common signature: any size)."""
    del image_size  # fully convolutional
    return TinySegNet(num_classes, in_channels, width)
