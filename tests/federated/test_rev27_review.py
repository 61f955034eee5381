"""Review of issue 27 (rev27): defects found, as failing tests.

A Dirichlet split at small alpha gives some clients a single sample (`_fill_empty` even creates such
shards on purpose); a model with BatchNorm (e.g. `smallnet` with `norm: batch`, the option this issue
added) then crashes the whole simulation in round 1 with torch's raw
"Expected more than 1 value per channel when training" instead of running or refusing clearly.
"""

from __future__ import annotations

import torch
from torch import nn

from distil.config import TrainConfig
from distil.data import load_dataset
from distil.errors import DistilError
from distil.federated import FederatedConfig, federate, federated_data


def _bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def test_a_one_sample_client_with_a_batchnorm_model_runs_or_is_refused_clearly() -> None:
    data = load_dataset("digits", val_fraction=0.1, limit=400)
    cfg = FederatedConfig(clients=10, alpha=0.01, rounds=1, transfer_size=60, methods=("fedavg",), seed=1)
    assert min(len(s) for s in federated_data(data, cfg).shards) == 1  # the case under test
    try:
        federate(_bn_mlp(), data, cfg, TrainConfig(epochs=1, batch_size=16, augment="none"))
    except DistilError:
        pass  # a refusal that names the fix is acceptable; a raw torch ValueError is not
