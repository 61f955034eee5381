"""Pruned models as specs: the base architecture plus the new size of each resized layer.

A structurally pruned model (see :mod:`distil.compress.prune`) is an ordinary ``nn.Module`` with smaller
layers. It is saved as a ``"pruned"`` spec, plain JSON, and rebuilt here by :func:`build_pruned` without
Torch-Pruning and without unpickling anything: the layer map only resizes layers the base model already
has. :func:`distil.models.build_from_spec` builds ``"pruned"`` specs through this module (which registers
:func:`build_pruned` with it), so loading a pruned checkpoint needs nothing from :mod:`distil.compress`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from torch import nn

from distil.errors import ModelError
from distil.models.registry import build_from_spec, register_spec_builder

__all__ = ["PRUNED", "RESIZABLE", "build_pruned", "pruned_spec"]

PRUNED = "pruned"

# Layers whose size is fully described by a few constructor arguments, so a pruned model can be
# rebuilt from its spec. Anything else that holds parameters must be left out of pruning.
RESIZABLE: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv1d: ("in_channels", "out_channels", "groups"),
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Conv3d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm1d: ("num_features",),
    nn.BatchNorm2d: ("num_features",),
    nn.BatchNorm3d: ("num_features",),
    nn.GroupNorm: ("num_groups", "num_channels"),
    nn.LayerNorm: ("normalized_shape",),
    nn.PReLU: ("num_parameters",),
}


def _base_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    return dict(spec["kwargs"]["base"]) if spec.get("name") == PRUNED else dict(spec)


def _sizes(module: nn.Module) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr in RESIZABLE[type(module)]:
        value = getattr(module, attr)
        values[attr] = list(value) if isinstance(value, tuple) else value
    return values


def pruned_spec(spec: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """The ``"pruned"`` spec of `model`: its base spec plus every layer whose size differs from the base.

    Args:
        spec: The spec the model was built from (plain, or ``"pruned"`` for a model pruned again).
        model: The pruned model.

    Returns:
        ``{"name": "pruned", num_classes, in_channels, image_size, "kwargs": {"base": ..., "layers": ...}}``,
        plain JSON, accepted by :func:`distil.models.build_from_spec`.
    """
    base = _base_of(spec)
    # The caller built `model` from this spec already, so rebuilding its base imports nothing new.
    reference = dict(build_from_spec(base, trusted=True).named_modules())
    layers: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if type(module) in RESIZABLE:
            sizes = _sizes(module)
            ref = reference.get(name)
            if ref is None or type(ref) is not type(module):
                raise ModelError(
                    f"pruned layer {name!r} ({type(module).__name__}) has no counterpart in the base model "
                    f"{base['name']!r}; the model must be the base architecture with resized layers."
                )
            if _sizes(ref) != sizes:
                layers[name] = {"type": type(module).__name__, **sizes}
    return {
        "name": PRUNED,
        "num_classes": base["num_classes"],
        "in_channels": base["in_channels"],
        "image_size": base["image_size"],
        "kwargs": {"base": base, "layers": layers},
    }


def _resized(module: nn.Module, sizes: Mapping[str, Any]) -> nn.Module:
    """A fresh module like `module` with the sizes in `sizes` (weights are loaded afterwards)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        conv_cls: Any = type(module)  # Conv1d/2d/3d share this constructor
        return conv_cls(
            sizes["in_channels"],
            sizes["out_channels"],
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            groups=sizes["groups"],
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    if isinstance(module, nn.Linear):
        return nn.Linear(sizes["in_features"], sizes["out_features"], bias=module.bias is not None)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        bn_cls: type[nn.modules.batchnorm._BatchNorm] = type(module)
        return bn_cls(
            sizes["num_features"],
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
    if isinstance(module, nn.GroupNorm):
        return nn.GroupNorm(sizes["num_groups"], sizes["num_channels"], eps=module.eps, affine=module.affine)
    if isinstance(module, nn.LayerNorm):
        return nn.LayerNorm(
            tuple(sizes["normalized_shape"]), eps=module.eps, elementwise_affine=module.elementwise_affine
        )
    if isinstance(module, nn.PReLU):
        return nn.PReLU(sizes["num_parameters"])
    raise ModelError(f"cannot resize a {type(module).__name__}")


@register_spec_builder(PRUNED)
def build_pruned(spec: Mapping[str, Any], *, trusted: Collection[str] | bool = ()) -> nn.Module:
    """Rebuild a pruned model from its spec: the base model with the listed layers resized.

    Needs neither Torch-Pruning nor pickled code; load the safetensors weights afterwards. The layer map
    only resizes layers the base model already has (paths are looked up, never imported or created).

    Args:
        spec: The ``"pruned"`` spec.
        trusted: As for :func:`distil.models.build_from_spec`: the user factories the base may name.

    Raises:
        ModelError: A malformed spec, or a layer path/type that does not match the base model.
        UntrustedCodeError: The base names a user factory that is not trusted (nothing was imported).
    """
    kwargs = spec.get("kwargs")
    if not isinstance(kwargs, Mapping) or not isinstance(kwargs.get("base"), Mapping):
        raise ModelError(
            "a 'pruned' spec needs kwargs {'base': <model spec>, 'layers': {path: sizes}}; create it with "
            "distil.models.pruned_spec(base_spec, model)."
        )
    model = build_from_spec(kwargs["base"], trusted=trusted)
    modules = dict(model.named_modules())
    layers = kwargs.get("layers", {})
    if not isinstance(layers, Mapping) or not all(isinstance(v, Mapping) for v in layers.values()):
        raise ModelError("a 'pruned' spec's kwargs.layers must map layer paths to {type, sizes...} mappings.")
    for path, sizes in layers.items():
        old = modules.get(path)
        if old is None or type(old).__name__ != sizes.get("type"):
            raise ModelError(
                f"pruned spec resizes {path!r} ({sizes.get('type')}) but the base model "
                f"{kwargs['base'].get('name')!r} has {type(old).__name__ if old is not None else 'no such layer'} "
                "there; the spec does not belong to this base model."
            )
        parent_path, _, attr = path.rpartition(".")
        parent = modules[parent_path] if parent_path else model
        setattr(parent, attr, _resized(old, sizes))
    return model
