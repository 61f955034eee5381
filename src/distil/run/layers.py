"""`model_layers`: a model's modules with output shapes, and teacher/student feature pairs by stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from distil.run.options import setting

if TYPE_CHECKING:
    from distil.features import LayerInfo


@dataclass(frozen=True)
class LayersOptions:
    """What `distil layers` shows: which model (and teacher), for which input."""

    model: str = setting("", "Registered model name (see `distil models`).")
    teacher: str | None = setting(None, "A teacher model name: also propose (student, teacher) pairs.")
    input_shape: tuple[int, ...] = setting((3, 32, 32), "C,H,W of one input, or F for a feature vector.")
    num_classes: int = setting(10, "Classes the models predict.")


@dataclass(frozen=True)
class LayersOutcome:
    """What `model_layers` found.

    Attributes:
        layers: every module of the model with its output shape, in execution order.
        pairs: (student path, teacher path) feature pairs by stage; empty without a teacher, or when
            the two models share no feature resolution.
    """

    layers: list[LayerInfo]
    pairs: list[tuple[str, str]]


def model_layers(options: LayersOptions) -> LayersOutcome:
    """Build the model (and teacher) for one input of `options.input_shape` and list its modules.

    Raises:
        ConfigError: an input shape that is neither C,H,W nor F, or a positive size.
        DistilError: an unknown model name (with the valid ones).
    """
    from distil.errors import ConfigError
    from distil.features import layer_shapes, propose_pairs, sample_input
    from distil.models import create_model

    shape = options.input_shape
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ConfigError(
            f"input shape must be C,H,W (e.g. 3,32,32) or F for feature vectors (e.g. 13), got {shape!r}"
        )
    # A feature vector of F values is sized as F channels of a 1x1 image, as for tabular datasets.
    c, h = (shape[0], 1) if len(shape) == 1 else (shape[0], shape[1])
    student = create_model(options.model, num_classes=options.num_classes, in_channels=c, image_size=h)
    x = sample_input(student, shape if len(shape) == 1 else (c, h, h))
    rows = layer_shapes(student, x)
    if not options.teacher:
        return LayersOutcome(rows, [])
    t = create_model(options.teacher, num_classes=options.num_classes, in_channels=c, image_size=h)
    return LayersOutcome(rows, propose_pairs(t, student, x))
