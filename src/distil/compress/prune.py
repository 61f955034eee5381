"""Structured pruning: remove whole channels and units so the model really gets smaller and faster.

Built on Torch-Pruning's dependency graph (DepGraph), which finds every layer that must shrink together
when one channel goes (a conv's filters, the next conv's input channels, a flattened fc's columns...).
The pruned model is an ordinary ``nn.Module`` with smaller layers. It is saved as a ``"pruned"`` spec
(the base architecture plus the new size of each resized layer) with safetensors weights, and rebuilt by
:func:`distil.models.pruned.build_pruned` without Torch-Pruning and without unpickling anything.

Example:
    >>> cfg = PruneConfig(macs_reduction=2.0)
    >>> result = prune(model, cfg, spec=spec, example_inputs=torch.zeros(1, 1, 28, 28))
    >>> result.model, result.spec  # smaller model, and the spec to save it with
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from distil.compress.sparsity import NO_SPEEDUP_NOTE, SparsityReport, fold_masks_, magnitude_prune_
from distil.config import PruneConfig
from distil.errors import ConfigError, DistilError
from distil.models.pruned import RESIZABLE, pruned_spec
from distil.registry import Registry, closest

__all__ = [
    "CRITERIA",
    "PruneResult",
    "default_ignored",
    "finish_pruning_",
    "is_torch_pruning_available",
    "prune",
    "prune_structured",
]

_INSTALL_HINT = "pip install 'distil[compress]' (or pip install torch-pruning)"


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
        if own and type(module) not in RESIZABLE:
            supported = ", ".join(sorted(t.__name__ for t in RESIZABLE))
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
    """A pruned model and what pruning changed.

    Attributes:
        model: The pruned model (structured: smaller layers, same class; unstructured: the same layers
            with zeros, masks still attached for fine-tuning until :func:`finish_pruning_`).
        spec: Its architecture spec, for :func:`distil.train.save_checkpoint` (structured: ``"pruned"``).
        pruning_ratio: The per-layer channel ratio (structured) or weight fraction (unstructured) applied.
        base_macs, macs: MACs per sample before and after.
        base_params, params: Parameters before and after.
        sparsity: Unstructured only: the zero counts of the prunable weights.
        details: What a report records of this pruning (method, criterion, sizes, sparsity).
    """

    model: nn.Module
    spec: dict[str, Any]
    pruning_ratio: float
    base_macs: int
    macs: int
    base_params: int
    params: int
    sparsity: SparsityReport | None = None
    details: dict[str, Any] = field(default_factory=dict)

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
    # Torch-Pruning traces the autograd graph: a frozen model (requires_grad off, as a teacher or any
    # distilled model is) has none, and would silently prune nothing. Trace with gradients on, then
    # give every parameter its own flag back.
    frozen = {name for name, p in pruned.named_parameters() if not p.requires_grad}
    pruned.requires_grad_(True)
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
    for name, p in pruned.named_parameters():
        p.requires_grad_(name not in frozen)
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


def prune(
    model: nn.Module,
    cfg: PruneConfig,
    *,
    spec: Mapping[str, Any],
    example_inputs: Tensor,
    calibration: tuple[Tensor, Tensor] | None = None,
) -> PruneResult:
    """Prune `model` as `cfg` says: structured (whole channels) or unstructured (magnitude zeros).

    Structured pruning removes channels by ``cfg.ratio`` or, without a ratio, until MACs fall
    ``cfg.macs_reduction`` times (:func:`prune_structured`). Unstructured pruning zeros the ``cfg.ratio``
    fraction of smallest weights (:func:`distil.compress.magnitude_prune_`) and keeps the masks on, so a
    fine-tune keeps the zeros at zero; call :func:`finish_pruning_` on the fine-tuned model.

    Args:
        model: The trained model; it is not modified (a pruned copy is returned).
        cfg: What to prune and how.
        spec: The model's architecture spec (a plain or an already ``"pruned"`` spec).
        example_inputs: One batch of inputs, e.g. ``torch.zeros(1, 1, 28, 28)``, to trace the model.
        calibration: ``(x, y)`` labelled samples; used by the ``"taylor"`` criterion only.

    Returns:
        PruneResult with the pruned model, its spec, the MACs/params before and after and ``details``.

    Raises:
        ConfigError: No target, values out of range, an ignored path not in the model, a layer that
            cannot be pruned, or an unreachable MACs target.
        DistilError: torch-pruning is not installed (structured pruning).
    """
    if cfg.method == "unstructured":
        if cfg.ratio is None:
            raise ConfigError("unstructured pruning needs a ratio (the fraction of weights zeroed).")
        pruned = copy.deepcopy(model)
        ignore = cfg.ignore if cfg.ignore is not None else default_ignored(pruned)
        report = magnitude_prune_(pruned, cfg.ratio, ignore=ignore, keep_masks=True)
        # Zeros are stored and computed densely: MACs and parameters are what they were.
        example = example_inputs.detach().cpu()
        macs, params = _fast_macs(model, example), sum(p.numel() for p in model.parameters())
        return PruneResult(
            model=pruned,
            spec=dict(spec),
            pruning_ratio=cfg.ratio,
            base_macs=macs,
            macs=macs,
            base_params=params,
            params=params,
            sparsity=report,
            details={"method": "unstructured", **report.to_dict()},
        )
    result = prune_structured(
        model,
        example_inputs,
        spec,
        ratio=cfg.ratio,
        macs_reduction=None if cfg.ratio is not None else cfg.macs_reduction,
        criterion=cfg.criterion,
        global_pruning=cfg.global_pruning,
        ignore=cfg.ignore,
        calibration=calibration if cfg.criterion == "taylor" else None,
    )
    result.details = {
        "method": "structured",
        "criterion": cfg.criterion,
        "global": cfg.global_pruning,
        "ratio": result.pruning_ratio,
        "macs_before": result.base_macs,
        "macs_after": result.macs,
        "macs_reduction": result.macs_reduction,
        "params_before": result.base_params,
        "params_after": result.params,
        "layers": result.spec["kwargs"]["layers"],
    }
    return result


def finish_pruning_(model: nn.Module, result: PruneResult) -> nn.Module:
    """After fine-tuning an unstructured `result`: fold its masks into the weights (in place).

    Structured results need nothing; returns `model` for chaining.
    """
    if result.sparsity is not None:
        fold_masks_(model)
        result.details["note"] = NO_SPEEDUP_NOTE
    return model
