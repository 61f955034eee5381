"""Structured pruning: real channel removal, targets, rebuild without torch-pruning, clear errors."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from distil.compress.prune import prune_structured
from distil.errors import ConfigError
from distil.measure import count_macs, count_parameters
from distil.models import build_from_spec, build_pruned, model_spec
from distil.train.checkpoint import load_checkpoint, save_checkpoint

pytest.importorskip("torch_pruning")

X = torch.zeros(1, 1, 8, 8)


def _largenet() -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    spec = model_spec("largenet", num_classes=10, in_channels=1, image_size=8, width=0.25)
    return build_from_spec(spec), spec


def _mlp() -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    spec = model_spec("mlp", num_classes=3, in_channels=1, image_size=2, hidden=[8])
    return build_from_spec(spec), spec


def test_pruned_mlp_equals_the_original_with_the_removed_units_zeroed() -> None:
    model, spec = _mlp()
    result = prune_structured(model, torch.zeros(1, 1, 2, 2), spec, ratio=0.5)
    pruned = result.model
    assert pruned.fc1.out_features == 4 and pruned.fc2.in_features == 4
    # Reference: which original hidden units survived (rows are copied, not changed)...
    kept = [
        next(i for i in range(8) if torch.equal(model.fc1.weight[i], row))
        for row in pruned.fc1.weight.detach()
    ]
    removed = sorted(set(range(8)) - set(kept))
    # ...and the original net with those units silenced must compute exactly the same logits.
    reference = build_from_spec(spec)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference.fc1.weight[removed] = 0
        reference.fc1.bias[removed] = 0
    x = torch.randn(16, 1, 2, 2)
    torch.testing.assert_close(pruned(x), reference(x))
    assert model.fc1.out_features == 8  # the input model is left untouched


def test_a_frozen_model_is_pruned_too_and_keeps_its_flags() -> None:
    # Torch-Pruning traces autograd: a frozen (distilled, or teacher) model used to prune nothing.
    model, spec = _largenet()
    model.requires_grad_(False)
    model.fc2.requires_grad_(True)
    result = prune_structured(model, X, spec, ratio=0.5)
    assert result.model.conv1.out_channels < model.conv1.out_channels
    flags = {n: p.requires_grad for n, p in result.model.named_parameters()}
    assert flags == {n: n.startswith("fc2.") for n in flags}


def test_macs_target_halves_the_macs_and_really_shrinks_the_layers() -> None:
    model, spec = _largenet()
    base = count_macs(model, (1, 8, 8))
    result = prune_structured(model, X, spec, macs_reduction=2.0)
    macs = count_macs(result.model, (1, 8, 8))
    assert result.macs == macs and result.base_macs == base
    assert 1.9 <= base / macs <= 2.1
    assert count_parameters(result.model) < count_parameters(model)
    assert result.model.conv1.out_channels < model.conv1.out_channels
    assert result.model.fc2.out_features == 10  # the classifier is kept by default
    assert result.model(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_pruned_checkpoint_loads_without_torch_pruning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, spec = _largenet()
    result = prune_structured(model, X, spec, ratio=0.4, global_pruning=True)
    save_checkpoint(tmp_path / "p", result.model, result.spec, {})
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # any import of it now fails
    loaded, meta = load_checkpoint(tmp_path / "p")
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), result.model.eval()(x))
    assert meta["spec"]["name"] == "pruned"
    assert meta["spec"]["kwargs"]["base"] == spec


def test_pruning_a_pruned_model_keeps_one_base_spec() -> None:
    model, spec = _largenet()
    first = prune_structured(model, X, spec, ratio=0.3)
    second = prune_structured(first.model, X, first.spec, ratio=0.3)
    assert second.spec["kwargs"]["base"] == spec
    rebuilt = build_pruned(second.spec)
    rebuilt.load_state_dict(second.model.state_dict())
    assert second.params < first.params


@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
def test_criteria_and_ignored_layers(criterion: str) -> None:
    model, spec = _largenet()
    calib = (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    result = prune_structured(
        model, X, spec, ratio=0.5, criterion=criterion, ignore=["conv1", "fc2"], calibration=calib
    )
    assert result.model.conv1.out_channels == model.conv1.out_channels
    assert result.model.conv2.out_channels < model.conv2.out_channels


def test_bad_targets_and_names_are_clear() -> None:
    model, spec = _largenet()
    with pytest.raises(ConfigError, match="exactly one pruning target"):
        prune_structured(model, X, spec)
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        prune_structured(model, X, spec, ratio=1.5)
    with pytest.raises(ConfigError, match="Did you mean 'magnitude'"):
        prune_structured(model, X, spec, ratio=0.3, criterion="magnitud")
    with pytest.raises(ConfigError, match="Did you mean 'conv1'"):
        prune_structured(model, X, spec, ratio=0.3, ignore=["conv_1"])
    with pytest.raises(ConfigError, match="no BatchNorm"):
        prune_structured(model, X, spec, ratio=0.3, criterion="bn-scale")
    with pytest.raises(ConfigError, match="needs gradients"):
        prune_structured(model, X, spec, ratio=0.3, criterion="taylor")


class _WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.rnn = nn.LSTM(4, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.fc(x).unsqueeze(1))
        return self.head(out[:, -1])


def test_unsupported_layer_is_named_with_the_way_out() -> None:
    model = _WithLSTM()
    spec = {"name": "x", "num_classes": 2, "in_channels": 1, "image_size": 2, "kwargs": {}}
    with pytest.raises(ConfigError, match=r"'rnn' \(LSTM.*ignore.*unstructured"):
        prune_structured(model, torch.zeros(1, 4), spec, ratio=0.3)


def test_the_prune_verb_dispatches_on_its_config() -> None:
    """`prune(model, PruneConfig)` is prune_structured for "structured", masked zeros for "unstructured"."""
    from distil.compress import finish_pruning_, prune
    from distil.compress.sparsity import sparsity_report
    from distil.config import PruneConfig

    model, spec = _largenet()
    direct = prune_structured(model, X, spec, ratio=0.3)
    verb = prune(model, PruneConfig(ratio=0.3), spec=spec, example_inputs=X)
    assert verb.spec == direct.spec and verb.details["method"] == "structured"
    assert verb.details["macs_after"] == direct.macs and verb.sparsity is None

    cfg = PruneConfig(method="unstructured", ratio=0.5)
    zeroed = prune(model, cfg, spec=spec, example_inputs=X)
    assert zeroed.spec == spec and zeroed.macs == zeroed.base_macs
    assert zeroed.sparsity is not None and zeroed.details["method"] == "unstructured"
    assert sparsity_report(model).zeros == 0  # the input model is left untouched
    finish_pruning_(zeroed.model, zeroed)
    assert not any(n.endswith("_mask") for n, _ in zeroed.model.named_buffers())
    assert sparsity_report(zeroed.model, ["fc2"]).sparsity == pytest.approx(0.5, abs=0.01)
