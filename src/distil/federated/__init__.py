"""Federated distillation: FedAvg and FedDF over Dirichlet non-IID client shards, in one process or with
the clients shared among torchrun's processes (`distil.federated.ranks`)."""

from distil.federated.averaging import average_states
from distil.federated.config import FederatedConfig
from distil.federated.rounds import FederatedResult, FederatedRun, federate, federated_data, local_seed
from distil.federated.split import dirichlet_split, label_skew

__all__ = [
    "FederatedConfig",
    "FederatedResult",
    "FederatedRun",
    "average_states",
    "dirichlet_split",
    "federate",
    "federated_data",
    "label_skew",
    "local_seed",
]
