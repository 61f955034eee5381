"""tiny-segnet (issue 26.1, dense): per-pixel logits of the inputs' size, a thinner student by width."""

from __future__ import annotations

import pytest
import torch

from distil.errors import ModelError
from distil.measure.size import count_parameters
from distil.models import create_model


def test_tiny_segnet_keeps_h_and_w_and_thins_by_width() -> None:
    teacher = create_model("tiny-segnet", num_classes=5, in_channels=3, image_size=9)
    student = create_model("tiny-segnet", num_classes=5, in_channels=3, image_size=9, width=4)
    x = torch.randn(2, 3, 9, 7)  # fully convolutional: any size
    assert teacher(x).shape == student(x).shape == (2, 5, 9, 7)
    assert count_parameters(student) < count_parameters(teacher) / 5
    with pytest.raises(ModelError, match="width must be >= 1"):
        create_model("tiny-segnet", num_classes=5, in_channels=3, image_size=9, width=0)
