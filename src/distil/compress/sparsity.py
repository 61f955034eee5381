"""Unstructured magnitude pruning: zero the smallest weights, and report the sparsity honestly.

Zeros in a dense tensor make nothing smaller or faster: the safetensors file keeps every zero and
dense CPU kernels (oneDNN, MLAS) multiply them all. Unstructured sparsity only pays off with sparse
storage or kernels (or as a step towards structured pruning), and the report says so. For a real
speed-up use :func:`distil.compress.prune_structured`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from distil.errors import ConfigError

__all__ = ["NO_SPEEDUP_NOTE", "SparsityReport", "fold_masks_", "magnitude_prune_", "sparsity_report"]

NO_SPEEDUP_NOTE = (
    "unstructured sparsity: zeros are stored densely and dense CPU kernels compute them, so this model is "
    "neither smaller on disk nor faster; use structured pruning for real gains"
)

_PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass
class SparsityReport:
    """Zero counts of the prunable weights.

    Attributes:
        total: Number of weights in prunable layers.
        zeros: How many of them are exactly zero.
        layers: Per layer path: ``{"weights", "zeros", "sparsity"}``.
        note: What the sparsity does (not) buy on dense kernels.
    """

    total: int
    zeros: int
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = NO_SPEEDUP_NOTE

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "zeros": self.zeros,
            "sparsity": self.sparsity,
            "layers": self.layers,
            "note": self.note,
        }


def _targets(model: nn.Module, ignore: Sequence[str]) -> list[tuple[str, nn.Module]]:
    names = {n for n, _ in model.named_modules()}
    for path in ignore:
        if path not in names:
            from distil.registry import closest

            hint = closest(path, [n for n in names if n])
            raise ConfigError(
                f"layer {path!r} to keep unpruned is not in the model."
                + (f" Did you mean {hint!r}?" if hint else "")
            )
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _PRUNABLE) and n not in ignore]


def sparsity_report(model: nn.Module, ignore: Sequence[str] = ()) -> SparsityReport:
    """Count exact zeros in the weights of every Conv/Linear layer not in `ignore`."""
    layers: dict[str, dict[str, float]] = {}
    total = zeros = 0
    for name, module in _targets(model, ignore):
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        weight = weight.detach()
        n, z = weight.numel(), int((weight == 0).sum())
        layers[name] = {"weights": n, "zeros": z, "sparsity": z / n}
        total += n
        zeros += z
    return SparsityReport(total=total, zeros=zeros, layers=layers)


def magnitude_prune_(
    model: nn.Module,
    amount: float,
    *,
    scope: str = "global",
    ignore: Sequence[str] = (),
    keep_masks: bool = False,
) -> SparsityReport:
    """Zero the `amount` fraction of smallest-magnitude Conv/Linear weights, in place.

    By default the pruning masks are folded into the weights (``prune.remove``), so the model stays a
    plain module with a plain state_dict. With ``keep_masks=True`` the masks stay attached, so
    fine-tuning keeps the zeros at zero; call :func:`fold_masks_` afterwards.

    Args:
        model: The model, modified in place.
        amount: Fraction of weights to zero, in (0, 1).
        scope: ``"global"`` ranks all layers' weights together; ``"layer"`` zeros `amount` in each layer.
        ignore: Module paths left dense (e.g. the classifier).
        keep_masks: Leave the masks on for fine-tuning.

    Returns:
        The resulting sparsity report.

    Raises:
        ConfigError: `amount` out of range, an unknown scope, or an ignored path not in the model.
    """
    if not 0.0 < amount < 1.0:
        raise ConfigError(f"amount must be in (0, 1), got {amount!r}; e.g. 0.5 zeros half the weights.")
    if scope not in ("global", "layer"):
        raise ConfigError(f"scope must be 'global' or 'layer', got {scope!r}.")
    targets = _targets(model, ignore)
    if not targets:
        raise ConfigError("the model has no Conv/Linear layer left to prune (all ignored?).")
    params = [(m, "weight") for _, m in targets]
    with torch.no_grad():
        if scope == "global":
            torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
        else:
            for module, attr in params:
                torch_prune.l1_unstructured(module, attr, amount=amount)
    if not keep_masks:
        fold_masks_(model)
    return sparsity_report(model, ignore)


def fold_masks_(model: nn.Module) -> nn.Module:
    """Make pruning masks permanent (zeros in plain weights) and drop the mask buffers, in place."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model
