"""Candidate students derived from the teacher: narrower and shallower versions of its own architecture.

A *family* knows an architecture's knobs and proposes specs of smaller versions of it:

* seed nets (``largenet``, ``smallnet``): the ``width`` multiplier;
* CIFAR ResNets (``resnet8`` ... ``resnet110``, ``resnet8x4``, ``cifar-resnet``): blocks per stage
  (depth) and per-stage width multipliers, as ``cifar-resnet`` specs;
* anything else (a user's ``pkg.module:factory``, torchvision): no knobs; its candidates are copies of
  the teacher pruned structurally until they meet the measured latency (:mod:`distil.shrink.search`).

Every candidate is initialised from the teacher by parameter transfer (weight selection for narrower
layers, evenly spaced blocks for shallower stages), never from random weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from distil.models import build_from_spec, model_spec
from distil.models.resnet_cifar import CifarResNet

__all__ = ["DEFAULT_WIDTHS", "FAMILIES", "Candidate", "architecture_candidates", "build_candidate"]

# Enough rungs that a 25x latency cut is reachable on LargeNet, close enough that one of them sits near
# any budget in between.
DEFAULT_WIDTHS = (0.75, 0.5, 0.35, 0.25, 0.18, 0.125, 0.09, 0.06)
# SmallNet has LargeNet's layout with convs at 1/4 and the hidden layer at 1/8 of its widths: the same
# teacher's second, per-layer ratio of widths (narrower head), transferred by the same layer names.
_SMALLNET_OF_LARGENET = (2.0, 1.5, 1.0, 0.75, 0.5)


@dataclass
class Candidate:
    """One student the search may deliver.

    Attributes:
        name: Unique label, e.g. ``"width-0.25"``, ``"d14-w0.5"``, ``"pruned-0.41"``.
        kind: ``"width"``, ``"depth"``, ``"depth+width"`` or ``"pruned"``.
        spec: Its architecture spec (``"pruned"`` specs for pruned teacher copies).
        note: How it was derived, for the report.
        model: A pruned candidate's model (already holding the teacher's weights); None for the others,
            which are built from `spec` and initialised by transfer.
    """

    name: str
    kind: str
    spec: dict[str, Any]
    note: str
    model: nn.Module | None = field(default=None, repr=False)


def _seed_candidates(spec: Mapping[str, Any], teacher: nn.Module, widths: Sequence[float]) -> list[Candidate]:
    base = float(spec.get("kwargs", {}).get("width", 1.0))
    out = []
    for w in widths:
        kwargs = {**spec.get("kwargs", {}), "width": round(base * w, 6)}
        s = model_spec(spec["name"], spec["num_classes"], spec["in_channels"], spec["image_size"], **kwargs)
        out.append(Candidate(f"width-{w:g}", "width", s, f"{spec['name']} width {base:g} x {w:g}"))
    if spec["name"] == "largenet":
        for w in _SMALLNET_OF_LARGENET:
            if 0.25 * w <= base:  # never wider than the teacher
                kwargs = {**spec.get("kwargs", {}), "width": w}
                s = model_spec(
                    "smallnet", spec["num_classes"], spec["in_channels"], spec["image_size"], **kwargs
                )
                note = f"convs x{0.25 * w / base:g}, hidden x{0.125 * w / base:g} of the teacher (smallnet width {w:g})"
                out.append(Candidate(f"small-{w:g}", "width", s, note))
    return out


def _resnet_knobs(model: CifarResNet) -> tuple[int, tuple[int, int, int, int]]:
    blocks = len(model.layer1)

    def width(stage: nn.Sequential) -> int:
        return int(stage[-1].conv2.out_channels)  # type: ignore[union-attr,arg-type]

    filters = (model.conv1.out_channels, width(model.layer1), width(model.layer2), width(model.layer3))
    return 6 * blocks + 2, filters


def _resnet_candidates(
    spec: Mapping[str, Any], teacher: nn.Module, widths: Sequence[float]
) -> list[Candidate]:
    assert isinstance(teacher, CifarResNet)
    depth, f = _resnet_knobs(teacher)
    n = (depth - 2) // 6
    block_options = sorted({n, max(1, n // 2), max(1, n // 4), 1}, reverse=True)
    stage_widths: list[tuple[float, float, float]] = [(w, w, w) for w in (1.0, *widths[:4])]
    # Per-stage multipliers: cheap early stages (high resolution) and a full-width last stage, and back.
    stage_widths += [(0.5, 0.5, 1.0), (0.5, 1.0, 1.0), (1.0, 0.5, 0.5)]
    out = []
    for blocks in block_options:
        for m in dict.fromkeys(stage_widths):
            if blocks == n and m == (1.0, 1.0, 1.0):
                continue  # the teacher itself
            # The stem feeds stage 1 through identity shortcuts, so they keep one width.
            filters = [max(1, round(f[0] * m[0])), max(1, round(f[1] * m[0]))]
            filters += [max(1, round(f[2] * m[1])), max(1, round(f[3] * m[2]))]
            d = 6 * blocks + 2
            s = model_spec(
                "cifar-resnet",
                spec["num_classes"],
                spec["in_channels"],
                spec["image_size"],
                depth=d,
                num_filters=filters,
            )
            kind = "depth" if m == (1.0, 1.0, 1.0) else ("width" if blocks == n else "depth+width")
            label = f"d{d}-w{'/'.join(f'{v:g}' for v in dict.fromkeys(m))}"
            out.append(
                Candidate(label, kind, s, f"resnet depth {depth}->{d}, stage widths {f}->{tuple(filters)}")
            )
    return out


# name predicate -> candidate builder; checked in order.
FAMILIES: list[tuple[Callable[[Mapping[str, Any], nn.Module], bool], Callable[..., list[Candidate]], str]] = [
    (lambda s, m: s.get("name") in ("largenet", "smallnet"), _seed_candidates, "seed net width"),
    (lambda s, m: isinstance(m, CifarResNet), _resnet_candidates, "CIFAR ResNet depth x stage widths"),
]


def architecture_candidates(
    spec: Mapping[str, Any], teacher: nn.Module, widths: Sequence[float] | None = None
) -> tuple[list[Candidate], str | None]:
    """The teacher family's narrower/shallower specs, and the family's name (None: no known knobs)."""
    for matches, build, family in FAMILIES:
        if spec.get("name") != "pruned" and matches(spec, teacher):
            return build(spec, teacher, tuple(widths or DEFAULT_WIDTHS)), family
    return [], None


def build_candidate(
    cand: Candidate, teacher: nn.Module, example: torch.Tensor, selection: str = "l1"
) -> tuple[nn.Module, dict[str, int]]:
    """The candidate's model, initialised from the teacher; and the transfer's counts per method."""
    from distil.transfer import transfer_parameters

    if cand.model is not None:
        import copy

        return copy.deepcopy(cand.model), {"pruned-from-teacher": 1}
    student = build_from_spec(cand.spec)
    report = transfer_parameters(teacher, student, selection=selection, example_inputs=example, strict=False)
    return student, report.counts()
