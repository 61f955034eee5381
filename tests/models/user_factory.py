"""A user-defined model factory, loaded by tests as 'tests.models.user_factory:make'."""

from __future__ import annotations

from torch import nn


def make(num_classes: int, in_channels: int, hidden: int = 8) -> nn.Module:
    """A factory that does not take image_size: create_model must not pass it."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def make_conv(*, num_classes: int, in_channels: int, image_size: int, **kwargs: object) -> nn.Module:
    """A factory with **kwargs, which receives every size argument and option."""
    make_conv.last_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return nn.Sequential(
        nn.Conv2d(in_channels, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * image_size**2, num_classes)
    )


def needs_depth(*, num_classes: int, depth: int) -> nn.Module:
    """A factory with a required option."""
    return nn.Linear(depth, num_classes)


def not_a_model(*, num_classes: int) -> str:
    """A broken factory."""
    return "oops"


NOT_CALLABLE = 3
