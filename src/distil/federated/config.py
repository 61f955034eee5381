"""The settings of a federated simulation (`distil federate`'s options; `federate(..., cfg)` in Python)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["fedavg", "feddf"]
METHODS: tuple[Method, ...] = ("fedavg", "feddf")


class FederatedConfig(BaseModel):
    """Clients, rounds and the server's fusion step.

    Each round the server sends the global model to `clients_per_round` clients (the same ones for
    every method), each trains `local_epochs` on its shard with the local recipe, and the server
    averages their weights by shard size (FedAvg). FedDF (Lin et al. 2020) then distills the clients'
    ensemble into that average on the unlabelled transfer set for `server_steps` steps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: int = Field(default=10, ge=1, description="how many clients the training data is split among")
    alpha: float = Field(
        default=1.0, gt=0, description="Dirichlet concentration of the label split (small: non-IID)"
    )
    rounds: int = Field(default=20, ge=1, description="communication rounds")
    clients_per_round: int | None = Field(
        default=None, ge=1, description="clients sampled per round (None: all of them)"
    )
    local_epochs: int = Field(default=1, ge=1, description="epochs each sampled client trains per round")
    transfer_size: int = Field(
        default=5000,
        ge=0,
        description="training samples held out from the clients, labels dropped: the server's transfer set",
    )
    server_steps: int = Field(default=100, ge=1, description="FedDF: distillation steps per round")
    server_batch_size: int = Field(default=64, ge=1, description="FedDF: transfer-set batch size")
    server_lr: float = Field(
        default=1e-3, gt=0, description="FedDF: Adam learning rate (cosine over the steps)"
    )
    temperature: float = Field(default=1.0, gt=0, description="FedDF: KD temperature of the ensemble")
    ensemble: Literal["logits", "probs"] = Field(
        default="logits",
        description="FedDF: how the clients' ensemble is formed: logits = their averaged logits (the "
        "paper); probs = the mixture of their softened distributions (distil's multi-teacher default)",
    )
    keep_best: bool = Field(
        default=True,
        description="FedDF: keep the averaged model when distillation lowers the server validation accuracy",
    )
    methods: tuple[Method, ...] = Field(
        default=METHODS, min_length=1, description="fusions to run side by side"
    )
    seed: int = Field(default=0, description="the label split, client sampling and local training seeds")
