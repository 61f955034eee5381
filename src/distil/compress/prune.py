"""Structured pruning: remove whole channels and units so the model really gets smaller and faster.

Built on Torch-Pruning's dependency graph (DepGraph), which finds every layer that must shrink together
when one channel goes (a conv's filters, the next conv's input channels, a flattened fc's columns...).
The pruned model is an ordinary ``nn.Module`` with smaller layers. It is saved as a ``"pruned"`` spec
(the base architecture plus the new size of each resized layer) with safetensors weights, and rebuilt by
:func:`build_pruned` without Torch-Pruning and without unpickling anything.

Example:
    >>> result = prune_structured(model, torch.zeros(1, 1, 28, 28), macs_reduction=2.0)
    >>> result.model, result.spec  # smaller model, and the spec to save it with
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distil.errors import ConfigError, DistilError, ModelError
from distil.registry import Registry, closest

__all__ = [
    "CRITERIA",
    "PRUNED",
    "PruneResult",
    "build_pruned",
    "default_ignored",
    "is_torch_pruning_available",
    "prune_structured",
    "pruned_spec",
]

PRUNED = "pruned"
_INSTALL_HINT = "pip install 'distil[compress]' (or pip install torch-pruning)"

# Layers whose size is fully described by a few constructor arguments, so a pruned model can be
# rebuilt from its spec. Anything else that holds parameters must be left out of pruning.
_RESIZABLE: dict[type[nn.Module], tuple[str, ...]] = {
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


def is_torch_pruning_available() -> bool:
    """Whether torch-pruning can be imported (the ``compress`` extra)."""
    import importlib.util

    return importlib.util.find_spec("torch_pruning") is not None


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise DistilError(
            f"structured pruning needs torch-pruning, which is not installed: {_INSTALL_HINT}"
        ) from None
    return torch_pruning


# --------------------------------------------------------------------------------------------
# importance criteria


def _magnitude() -> Any:
    return _tp().importance.GroupMagnitudeImportance(p=2)


def _taylor() -> Any:
    return _tp().importance.GroupTaylorImportance()


def _bn_scale() -> Any:
    return _tp().importance.BNScaleImportance()


CRITERIA: Registry[Callable[[], Any]] = Registry("pruning criterion", error=ConfigError)
CRITERIA.register("magnitude")(_magnitude)
CRITERIA.register("taylor")(_taylor)
CRITERIA.register("bn-scale")(_bn_scale)


# --------------------------------------------------------------------------------------------
# checks


def default_ignored(model: nn.Module) -> list[str]:
    """The layers left untouched by default: the last Linear (its outputs are the classes)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def _resolve_ignored(model: nn.Module, ignore: Sequence[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    found: list[nn.Module] = []
    for path in ignore:
        if path not in modules:
            names = [n for n in modules if n]
            hint = closest(path, names)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ConfigError(
                f"layer {path!r} to keep unpruned is not in the model.{did_you_mean} "
                f"Module paths: {', '.join(names)}."
            )
        found.append(modules[path])
    return found


def _ignored_paths(model: nn.Module, ignore: Sequence[str]) -> set[str]:
    """Every module path under an ignored path (ignoring a block ignores its children)."""
    prefixes = tuple(ignore)
    return {
        name
        for name, _ in model.named_modules()
        if any(name == p or name.startswith(p + ".") for p in prefixes)
    }


def check_prunable(model: nn.Module, ignore: Sequence[str]) -> None:
    """Fail clearly on layers that hold parameters but cannot be pruned and rebuilt.

    Raises:
        ConfigError: naming the first such module, its type, and the two ways out.
    """
    skipped = _ignored_paths(model, ignore)
    for name, module in model.named_modules():
        if name in skipped:
            continue
        own = [p for p, _ in module.named_parameters(recurse=False)]
        if own and type(module) not in _RESIZABLE:
            supported = ", ".join(sorted(t.__name__ for t in _RESIZABLE))
            raise ConfigError(
                f"module {name or '<root>'!r} ({type(module).__name__}, parameters {own}) cannot be pruned "
                f"structurally: a pruned model must be rebuildable from its spec, and only {supported} can be. "
                f"Fix: keep it unpruned (prune.ignore: [{name!r}] / --ignore {name}), or use unstructured "
                "magnitude pruning (`distil prune --method unstructured`), which works on any layer."
            )


# --------------------------------------------------------------------------------------------
# pruning


@dataclass
class PruneResult:
    """A structurally pruned model and what pruning changed.

    Attributes:
        model: The pruned model (smaller layers, same class).
        spec: Its ``"pruned"`` architecture spec, for :func:`distil.train.save_checkpoint`.
        pruning_ratio: The per-layer channel ratio that was applied.
        base_macs, macs: MACs per sample before and after.
        base_params, params: Parameters before and after.
    """

    model: nn.Module
    spec: dict[str, Any]
    pruning_ratio: float
    base_macs: int
    macs: int
    base_params: int
    params: int

    @property
    def macs_reduction(self) -> float:
        return self.base_macs / max(self.macs, 1)


def _count(model: nn.Module, example: Tensor) -> tuple[int, int]:
    from distil.measure import count_macs, count_parameters

    return count_macs(model, tuple(example.shape[1:])), count_parameters(model)


def _fast_macs(model: nn.Module, example: Tensor) -> int:
    """MACs of Conv and Linear layers per sample, from forward hooks.

    The same quantity as :func:`distil.measure.count_macs` for nets whose compute is in these layers,
    but without FlopCounterMode's dispatch overhead (about 1 s a call), so the bisection stays fast.
    """
    total = 0

    def hook(module: nn.Module, _inputs: Any, output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.modules.conv._ConvNd):
            k = module.in_channels // module.groups
            for size in module.kernel_size:
                k *= size
            total += output[:1].numel() * k
        elif isinstance(module, nn.Linear):
            total += output[:1].numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example[:1])
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total


def _prune_copy(
    model: nn.Module,
    example: Tensor,
    ratio: float,
    criterion: str,
    global_pruning: bool,
    ignore: Sequence[str],
    calibration: tuple[Tensor, Tensor] | None,
) -> nn.Module:
    """A pruned deep copy of `model` (the original is never touched)."""
    tp = _tp()
    pruned = copy.deepcopy(model).cpu()
    importance = CRITERIA.get(criterion)()
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=importance,
        global_pruning=global_pruning,
        pruning_ratio=ratio,
        # Global pruning may empty one layer entirely; keep at least one channel in every layer.
        max_pruning_ratio=0.95,
        ignored_layers=_resolve_ignored(pruned, ignore),
    )
    if criterion == "taylor":
        if calibration is None:
            raise ConfigError(
                "the 'taylor' criterion needs gradients: pass labelled samples (calibration=(x, y)), or use "
                "criterion='magnitude'."
            )
        x, y = calibration
        pruned.zero_grad()
        was_training = pruned.training
        pruned.eval()
        nn.functional.cross_entropy(pruned(x), y).backward()
        pruned.train(was_training)
    pruner.step()
    pruned.zero_grad(set_to_none=True)
    return pruned


def prune_structured(
    model: nn.Module,
    example_input: Tensor,
    spec: Mapping[str, Any],
    *,
    ratio: float | None = None,
    macs_reduction: float | None = None,
    criterion: str = "magnitude",
    global_pruning: bool = False,
    ignore: Sequence[str] | None = None,
    calibration: tuple[Tensor, Tensor] | None = None,
    tolerance: float = 0.03,
) -> PruneResult:
    """Remove whole channels/units from `model` by a channel ratio or to a MACs-reduction target.

    Args:
        model: The trained model; it is not modified (a pruned copy is returned).
        example_input: One batch of inputs, e.g. ``torch.zeros(1, 1, 28, 28)``, to trace the model.
        spec: The model's architecture spec (a plain or an already ``"pruned"`` spec).
        ratio: Fraction of channels removed from each prunable layer (uniform), or of all channels
            (global), in (0, 1).
        macs_reduction: Instead of a ratio: prune until MACs fall by this factor (e.g. 2.0 = half the
            MACs); the ratio is found by bisection.
        criterion: ``"magnitude"`` (L2 of the weights), ``"taylor"`` (first-order loss change; needs
            `calibration`) or ``"bn-scale"`` (BatchNorm gammas; needs BatchNorm layers).
        global_pruning: Rank channels across layers instead of pruning each layer by the same ratio.
        ignore: Module paths kept untouched; default: the classifier (last Linear).
        calibration: ``(x, y)`` labelled samples for the Taylor criterion.
        tolerance: Relative slack on the MACs target for the bisection.

    Returns:
        PruneResult with the pruned model, its spec and the MACs/params before and after.

    Raises:
        ConfigError: Neither or both of ratio/macs_reduction, values out of range, an unknown criterion,
            an ignored path not in the model, a layer that cannot be pruned, or an unreachable target.
        DistilError: torch-pruning is not installed.
    """
    if (ratio is None) == (macs_reduction is None):
        raise ConfigError(
            "give exactly one pruning target: ratio (fraction of channels removed, e.g. 0.3) or "
            "macs_reduction (e.g. 2.0 for half the MACs)."
        )
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise ConfigError(
            f"pruning ratio must be in (0, 1), got {ratio!r}; e.g. 0.3 removes 30% of channels."
        )
    if macs_reduction is not None and macs_reduction <= 1.0:
        raise ConfigError(f"macs_reduction must be > 1 (2.0 = half the MACs), got {macs_reduction!r}.")
    CRITERIA.get(criterion)  # unknown names fail before any work
    ignore = list(default_ignored(model) if ignore is None else ignore)
    _resolve_ignored(model, ignore)
    check_prunable(model, ignore)
    if criterion == "bn-scale" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise ConfigError(
            "criterion 'bn-scale' ranks channels by BatchNorm scales, but this model has no BatchNorm layer. "
            "Use criterion 'magnitude' or 'taylor'."
        )
    example = example_input.detach().cpu()
    base_macs, base_params = _count(model, example)

    if ratio is not None:
        pruned = _prune_copy(model, example, ratio, criterion, global_pruning, ignore, calibration)
        chosen = ratio
    else:
        assert macs_reduction is not None
        fast_base = _fast_macs(model, example)
        target = fast_base / macs_reduction
        lo, hi = 0.0, 0.95
        best: tuple[nn.Module, float] | None = None
        for _ in range(10):  # MACs fall monotonically with the ratio: bisect on it
            mid = (lo + hi) / 2
            cand = _prune_copy(model, example, mid, criterion, global_pruning, ignore, calibration)
            fast = _fast_macs(cand, example)
            if fast <= target * (1 + tolerance):
                best = (cand, mid)
                hi = mid
                if fast >= target * (1 - tolerance):
                    break
            else:
                lo = mid
        if best is None:
            raise ConfigError(
                f"cannot reach {macs_reduction}x fewer MACs (base {base_macs:,}) with the layers allowed to "
                f"shrink (ignored: {ignore}); ask for a smaller reduction or ignore fewer layers."
            )
        pruned, chosen = best
    macs, params = _count(pruned, example)
    return PruneResult(
        model=pruned,
        spec=pruned_spec(spec, pruned),
        pruning_ratio=chosen,
        base_macs=base_macs,
        macs=macs,
        base_params=base_params,
        params=params,
    )


# --------------------------------------------------------------------------------------------
# save / rebuild without torch-pruning


def _base_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    return dict(spec["kwargs"]["base"]) if spec.get("name") == PRUNED else dict(spec)


def _sizes(module: nn.Module) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr in _RESIZABLE[type(module)]:
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
    from distil.models import build_from_spec

    base = _base_of(spec)
    # The caller built `model` from this spec already, so rebuilding its base imports nothing new.
    reference = dict(build_from_spec(base, trusted=True).named_modules())
    layers: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if type(module) in _RESIZABLE:
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
    from distil.models import build_from_spec

    kwargs = spec.get("kwargs")
    if not isinstance(kwargs, Mapping) or not isinstance(kwargs.get("base"), Mapping):
        raise ModelError(
            "a 'pruned' spec needs kwargs {'base': <model spec>, 'layers': {path: sizes}}; create it with "
            "distil.compress.pruned_spec(base_spec, model)."
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
