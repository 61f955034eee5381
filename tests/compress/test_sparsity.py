"""Unstructured magnitude pruning: the smallest weights become zero, and the report is honest."""

import torch
from torch import nn

from distil.compress import fold_masks_, magnitude_prune_, sparsity_report
from distil.models import create_model


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mlp", num_classes=3, in_channels=1, image_size=4, hidden=[12, 6])


def test_global_pruning_zeros_exactly_the_smallest_weights() -> None:
    model = _model()
    weights = torch.cat([model.fc1.weight.flatten(), model.fc2.weight.flatten()]).detach().abs()
    k = round(0.6 * weights.numel())
    threshold = weights.sort().values[k - 1]  # reference: the k-th smallest magnitude
    expected = {n: (getattr(model, n).weight.detach().abs() <= threshold) for n in ("fc1", "fc2")}
    report = magnitude_prune_(model, 0.6, ignore=["fc3"])
    assert report.zeros == k and abs(report.sparsity - k / weights.numel()) < 1e-9
    for name, mask in expected.items():
        assert torch.equal(getattr(model, name).weight == 0, mask)
    assert torch.count_nonzero(model.fc3.weight) == model.fc3.weight.numel()
    assert "neither smaller on disk nor faster" in report.note
    assert set(model.state_dict()) == set(_model().state_dict())  # plain weights, no masks left


def test_layer_scope_prunes_each_layer_alike_and_masks_survive_training() -> None:
    model = _model()
    magnitude_prune_(model, 0.5, scope="layer", keep_masks=True)
    report = sparsity_report(model)
    assert all(abs(layer["sparsity"] - 0.5) < 0.05 for layer in report.layers.values())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 1, 4, 4)).sum().backward()
        opt.step()
    fold_masks_(model)
    assert abs(sparsity_report(model).sparsity - 0.5) < 0.05
