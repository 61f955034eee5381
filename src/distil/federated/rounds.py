"""The federated simulation: clients train locally, the server fuses them each round.

FedAvg (McMahan et al. 2017) fuses by averaging the clients' weights by shard size. FedDF (Lin et al.,
NeurIPS 2020) starts from that average and distills the ensemble of the clients' models into it on
unlabelled server data. Both share everything else (the split, the clients sampled each round, their
seeds, the bytes sent), so their accuracies compare at equal communication.

Nothing here is a second loop: clients train through `distil.api.train_model`, and FedDF's server
step is `distil.api.distill` with the client models as an ensemble teacher
(`distil.teachers.ensemble.EnsembleTeacher`). It runs in one process, or under torchrun with the
round's clients shared among the processes (`distil.federated.ranks`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from distil.api import check_classes, distill, train_model
from distil.config import KDConfig, TrainConfig
from distil.data import DataBundle, SampleSplit, Split
from distil.data.batch import IGNORE_INDEX
from distil.errors import ConfigError, DataError
from distil.federated.averaging import average_states
from distil.federated.config import FederatedConfig, Method
from distil.federated.ranks import (
    SimulationRanks,
    check_one_process,
    client_accelerator,
    launched_world,
    start_ranks,
)
from distil.federated.split import dirichlet_split, label_skew
from distil.measure import accuracy
from distil.measure.quality import predict_split
from distil.measure.size import state_dict_bytes

RoundCallback = Callable[[dict[str, Any]], None]
SERVER = 2**31 - 1  # the "client" number whose `local_seed` seeds the server's distillation


@dataclass(frozen=True)
class FederatedData:
    """The simulation's data: one bundle per client and the server's.

    Attributes:
        clients: each client's bundle: its shard as `train`; `val`/`test` are the dataset's (the
            server's), on which each local run reports its accuracy.
        server: the dataset with the unlabelled transfer set (labels `IGNORE_INDEX`) as `train`.
        shards: each client's positions in the training split the clients share.
        skew: the split's mean total-variation distance from the global class mix (`label_skew`).
        transfer: where the transfer set came from (for records).
    """

    clients: list[DataBundle]
    server: DataBundle
    shards: list[torch.Tensor]
    skew: float
    transfer: str


@dataclass
class FederatedRun:
    """One fusion method's result: the final global model and one record per round."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_test_accuracy(self) -> float | None:
        return self.history[-1].get("test_accuracy") if self.history else None


@dataclass
class FederatedResult:
    """Every method's run, and the facts they share (split, bytes per model)."""

    runs: dict[str, FederatedRun]
    shard_sizes: list[int]
    skew: float
    bytes_per_model: int
    transfer: str


@dataclass(frozen=True)
class ClientUpdate:
    """A client's model after its local training in one round, and its validation accuracy."""

    client: int
    model: nn.Module
    accuracy: float | None

    def portable(self) -> PortableUpdate:
        """The update as CPU tensors, to send to the other simulation ranks."""
        return PortableUpdate(client=self.client, state=_cpu_state(self.model), accuracy=self.accuracy)


@dataclass(frozen=True)
class PortableUpdate:
    """A `ClientUpdate` with its model as a state dict of CPU tensors (what the ranks gather)."""

    client: int
    state: dict[str, torch.Tensor]
    accuracy: float | None

    def rebuilt(self, like: nn.Module) -> ClientUpdate:
        """The update as a model: a copy of `like` (the global model, on its device) with this state."""
        model = copy.deepcopy(like)
        model.load_state_dict(self.state)
        return ClientUpdate(client=self.client, model=model, accuracy=self.accuracy)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def local_seed(seed: int, round_index: int, client: int) -> int:
    """The seed of `client`'s local training in round `round_index` (0-based), the same for every method."""
    return int(np.random.SeedSequence([seed, round_index, client]).generate_state(1)[0])


def sampled_clients(cfg: FederatedConfig, round_index: int) -> list[int]:
    """The clients the server contacts in round `round_index`: all, or a seeded sample (same for every method)."""
    if cfg.clients_per_round is None or cfg.clients_per_round >= cfg.clients:
        return list(range(cfg.clients))
    rng = np.random.default_rng([cfg.seed, round_index, 1])
    return sorted(int(k) for k in rng.choice(cfg.clients, size=cfg.clients_per_round, replace=False))


def check_federated(data: DataBundle, cfg: FederatedConfig, transfer: SampleSplit | None) -> None:
    """Refuse what the simulation cannot run, before any training.

    Raises:
        ConfigError: more launched processes (torchrun) than clients per round, FedDF without a transfer
            set, keep_best without a validation split.
        DataError: data that is not single-label classification, training samples without a label, or a
            transfer set of another shape.
    """
    world = launched_world()
    per_round = min(cfg.clients_per_round or cfg.clients, cfg.clients)
    if world > per_round:
        raise ConfigError(
            f"this simulation was launched on {world} processes, but each round trains only {per_round} "
            f"client(s), one or more per process: {world - per_round} process(es) would never train. Fix: "
            f"launch at most {per_round} processes (torchrun --nproc_per_node {per_round}), or sample more "
            "clients per round (clients_per_round)."
        )
    if data.task != "classification" or data.is_tokens:
        raise DataError(
            f"federated simulation splits clients by class label (Dirichlet over classes), but {data.name!r} "
            f"is {data.task} data with no single label per sample. Use an image or tabular classification "
            "dataset."
        )
    if bool((data.train.labels < 0).any()):
        raise DataError(
            f"{int((data.train.labels < 0).sum())} training samples of {data.name!r} have no label (-100, e.g. "
            "data.unlabeled), but every client trains on labels. Drop data.unlabeled; the server's unlabelled "
            "data is transfer_size (or a transfer split)."
        )
    if "feddf" in cfg.methods and transfer is None and cfg.transfer_size == 0:
        raise ConfigError(
            "FedDF distills on unlabelled server data, but transfer_size=0 holds none out and no transfer "
            "set was given. Set transfer_size > 0 (e.g. 5000), pass a transfer split, or run methods=fedavg."
        )
    if "feddf" in cfg.methods and cfg.keep_best and not len(data.val):
        raise ConfigError(
            "keep_best chooses between the averaged and the distilled model on the validation split, but "
            f"{data.name!r} has none (val_fraction 0), and choosing on test would overstate accuracy. Set "
            "data.val_fraction > 0 (e.g. 0.05), or keep_best=false."
        )
    if transfer is not None and tuple(transfer.sample_shape) != tuple(data.input_shape):
        raise DataError(
            f"the transfer set's samples have shape {tuple(transfer.sample_shape)}, the data's "
            f"{tuple(data.input_shape)}; give inputs normalized like the data, of its shape."
        )


def federated_data(
    data: DataBundle, cfg: FederatedConfig, transfer: SampleSplit | None = None
) -> FederatedData:
    """Split `data.train` into the server's transfer set and the clients' Dirichlet shards.

    Without `transfer`, `cfg.transfer_size` training samples (a seeded random choice) are held out from
    the clients with their labels dropped. A given `transfer` split (any unlabelled inputs of the data's
    shape: another dataset, a synthesiser's samples) is used as is and every training sample goes
    to a client.

    Raises:
        DataError: a transfer set as large as the training split, a training split not in memory for a
            held-out transfer set, more clients than samples, alpha <= 0.
    """
    check_federated(data, cfg, transfer)
    train, n = data.train, len(data.train)
    order = torch.from_numpy(np.random.default_rng([cfg.seed, 0, 2]).permutation(n))
    held = 0 if transfer is not None else cfg.transfer_size
    if held >= n:
        raise DataError(
            f"transfer_size={held} leaves none of the {n} training samples to the clients; use a smaller "
            "transfer_size."
        )
    client_pos = order[held:].sort().values  # sorted: a single client's shard is the split itself
    if transfer is None:
        transfer, source = _held_out(train, order[:held]), f"{held} training samples, labels dropped"
    else:
        source = f"given split of {len(transfer)} samples"
    shared = train.take(client_pos)
    shards = dirichlet_split(shared.labels, cfg.clients, cfg.alpha, cfg.seed)
    clients = [replace(data, train=shared.take(s)) for s in shards]
    server = replace(data, train=transfer)
    skew = label_skew(shared.labels, shards, data.num_classes)
    return FederatedData(clients=clients, server=server, shards=shards, skew=skew, transfer=source)


def _held_out(train: SampleSplit, positions: torch.Tensor) -> Split:
    """The samples at `positions` with every label replaced by IGNORE_INDEX (in memory)."""
    if not isinstance(train, Split):
        raise DataError(
            "holding out an unlabelled transfer set needs the training split in memory; this dataset is read "
            "from disk. Load it in memory (e.g. the npz reader) or pass a transfer split."
        )
    return Split(train.x[positions], torch.full((len(positions),), IGNORE_INDEX, dtype=train.y.dtype))


def server_config(local: TrainConfig, cfg: FederatedConfig, seed: int) -> TrainConfig:
    """FedDF's distillation recipe: Adam at `cfg.server_lr`, cosine over `cfg.server_steps` steps,
    the local recipe's other settings (augmentation, clipping, precision)."""
    keep = {k: v for k, v in local.model_dump().items() if k in TrainConfig.model_fields}
    keep.update(
        optimizer="adam",
        lr=cfg.server_lr,
        schedule="cosine",
        epochs=1,
        max_steps=cfg.server_steps,
        batch_size=cfg.server_batch_size,
        seed=seed,
        checkpoint_every=None,
    )
    return TrainConfig.model_validate(keep)


def server_kd(cfg: FederatedConfig) -> KDConfig:
    """FedDF's loss: KD to the ensemble alone (the transfer set has no labels); the client models were
    trained here, so their outputs are logits and need no check."""
    return KDConfig(
        temperature=cfg.temperature, terms={"kd": 1.0}, teacher_outputs="logits", ensemble_mix=cfg.ensemble
    )


def evaluate(model: nn.Module, split: SampleSplit) -> float | None:
    """Top-1 accuracy of `model` on a labelled split (None when it is empty)."""
    if not len(split):
        return None
    return accuracy(predict_split(model, split), split.labels)


def ensemble_accuracy(
    models: list[nn.Module], split: SampleSplit, mix: str, temperature: float
) -> float | None:
    """Top-1 accuracy of the clients' ensemble as FedDF's teacher mixes it (mean logits, or the mean of
    the softmax at `temperature`): the most a distillation step can reach, so a FedDF round whose ensemble
    is no better than the average cannot beat FedAvg's."""
    if not len(split):
        return None
    logits = torch.stack([predict_split(m, split) for m in models])
    scores = logits.mean(0) if mix == "logits" else (logits / temperature).softmax(-1).mean(0)
    return accuracy(scores, split.labels)


class Simulation:
    """One method's rounds over shared `FederatedData` (see `federate`)."""

    def __init__(
        self,
        method: Method,
        model: nn.Module,
        fed: FederatedData,
        cfg: FederatedConfig,
        local: TrainConfig,
        accelerator: Accelerator,
        on_round_end: RoundCallback | None,
        ranks: SimulationRanks | None = None,
    ) -> None:
        self.method, self.fed, self.cfg, self.local = method, fed, cfg, local
        self.accelerator, self.on_round_end = accelerator, on_round_end
        self.ranks = ranks or SimulationRanks()
        self.model = copy.deepcopy(model).to(accelerator.device)
        self.bytes_per_model = state_dict_bytes(self.model)
        self.bytes_total = 0
        self.history: list[dict[str, Any]] = []

    def run(self) -> FederatedRun:
        for r in range(self.cfg.rounds):
            self.run_round(r)
        return FederatedRun(model=self.model, history=self.history)

    def run_round(self, r: int) -> None:
        """Send, train locally, average (and distill, FedDF), evaluate, record.

        Under a launcher every rank trains its share of the clients and receives the others'; rank 0
        fuses, evaluates and records, and every rank then holds its model and record.
        """
        started = time.perf_counter()
        chosen = sampled_clients(self.cfg, r)
        updates = self.train_clients(r, chosen)
        record = self.fuse(r, chosen, updates) if self.ranks.is_main else None
        if self.ranks.world > 1:
            record = self.share_global(record)
        assert record is not None
        record["seconds"] = round(time.perf_counter() - started, 3)
        self.bytes_total = record["bytes_total"]
        # The accelerator keeps a reference to every model it prepared: release the round's. Once per
        # round, not per fit: it runs a full garbage collection, which took half of a round's time.
        self.accelerator.free_memory()
        self.history.append(record)
        if self.on_round_end is not None and self.ranks.is_main:
            self.on_round_end(record)

    def train_clients(self, r: int, chosen: list[int]) -> list[ClientUpdate]:
        """The round's trained clients, in `chosen` order: this rank's share trained here, the rest
        received from the ranks that trained them (one process: all trained here)."""
        mine = [self.train_client(r, k) for k in self.ranks.share(chosen)]
        if self.ranks.world == 1:
            return mine
        shared = {u.client: u for u in self.ranks.gather([u.portable() for u in mine])}
        return [shared[k].rebuilt(self.model) for k in chosen]

    def fuse(self, r: int, chosen: list[int], updates: list[ClientUpdate]) -> dict[str, Any]:
        """The server's step: average the clients (and distill them, FedDF) into the global model,
        evaluate it and return the round's record."""
        sizes = [len(self.fed.clients[k].train) for k in chosen]
        averaged = average_states([u.model.state_dict() for u in updates], sizes)
        self.model.load_state_dict(averaged)
        record: dict[str, Any] = {"method": self.method, "round": r + 1, "clients": chosen}
        if self.method == "feddf":
            record.update(self.distill_round(r, [u.model for u in updates], averaged))
        # The model down and up per sampled client; gathers between simulation ranks are not counted.
        sent = 2 * len(chosen) * self.bytes_per_model
        record.update(
            client_samples=sum(sizes),
            client_val_accuracy=_mean([u.accuracy for u in updates]),
            val_accuracy=evaluate(self.model, self.fed.server.val),
            test_accuracy=evaluate(self.model, self.fed.server.test),
            bytes_round=sent,
            bytes_total=self.bytes_total + sent,
        )
        return record

    def share_global(self, record: dict[str, Any] | None) -> dict[str, Any]:
        """Rank 0's global model and record on every rank (rank 0 passes its record, the others None)."""
        if self.ranks.is_main:
            assert record is not None
            self.ranks.broadcast((_cpu_state(self.model), record))
            return record
        received: tuple[dict[str, torch.Tensor], dict[str, Any]] = self.ranks.broadcast(None)
        self.model.load_state_dict(received[0])
        return received[1]

    def train_client(self, r: int, k: int) -> ClientUpdate:
        """Client k's local epochs from the global model, through the one training loop."""
        cfg = self.local.model_copy(
            update={"epochs": self.cfg.local_epochs, "seed": local_seed(self.cfg.seed, r, k)}
        )
        local = copy.deepcopy(self.model)
        result = train_model(
            local, self.fed.clients[k], cfg, accelerator=self.accelerator, description=f"client {k}"
        )
        accuracy = result.history[-1].get("val_accuracy") if result.history else None
        return ClientUpdate(client=k, model=result.model, accuracy=accuracy)

    def distill_round(
        self, r: int, clients: list[nn.Module], averaged: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """FedDF's server step: distill the clients' ensemble into the averaged model on the transfer set."""
        before = evaluate(self.model, self.fed.server.val)
        teacher = ensemble_accuracy(clients, self.fed.server.val, self.cfg.ensemble, self.cfg.temperature)
        result = distill(
            clients,
            self.model,
            self.fed.server,
            server_config(self.local, self.cfg, local_seed(self.cfg.seed, r, SERVER)),
            server_kd(self.cfg),
            accelerator=self.accelerator,
            description="server",
        )
        after = result.history[-1].get("val_accuracy") if result.history else None
        kept = not (self.cfg.keep_best and before is not None and after is not None and after < before)
        if not kept:
            self.model.load_state_dict(averaged)  # distillation made it worse on validation: undo it
        return {
            "averaged_val_accuracy": before,
            "ensemble_val_accuracy": teacher,
            "distilled_val_accuracy": after,
            "distilled_kept": kept,
            "server_steps": self.cfg.server_steps,
        }


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def federate(
    model: nn.Module,
    data: DataBundle,
    cfg: FederatedConfig | None = None,
    local: TrainConfig | None = None,
    *,
    transfer: SampleSplit | None = None,
    accelerator: Accelerator | None = None,
    on_round_end: RoundCallback | None = None,
) -> FederatedResult:
    """Simulate federated training of `model` on `data` with each method of `cfg.methods`.

    The training split is divided once (`federated_data`): a held-out unlabelled transfer set for the
    server and Dirichlet(alpha) shards for the clients. Every method then starts from a copy of
    `model` and runs `cfg.rounds` rounds with the same clients per round and the same local seeds;
    the only difference is how the server fuses the returned models.

    Launched on several processes (torchrun), each rank trains its share of every round's clients and
    all ranks end with the same models and records, equal to the one-process run's
    (`distil.federated.ranks`).

    Args:
        model: the initial global model (a registered net or a user's `pkg.module:factory`, from
            random weights or a checkpoint); it is not modified.
        data: an in-memory classification dataset; its `val` split (if any) is the server's validation
            data and `test` the reported accuracy.
        cfg: clients, alpha, rounds, server step (default `FederatedConfig()`).
        local: each client's local training recipe (`epochs` and `seed` are set per round).
        transfer: the server's unlabelled transfer set (any split of the data's input shape, e.g. a
            data-free synthesiser's samples); None holds out `cfg.transfer_size` training samples.
        accelerator: the device, a one-process Accelerator (default: `client_accelerator()`).
        on_round_end: called with each round's record (under a launcher: on rank 0 only).

    Returns:
        FederatedResult with each method's final model and per-round records (`val_accuracy`,
        `test_accuracy`, `bytes_round`, `bytes_total`, ...).

    Raises:
        ConfigError, DataError: see `check_federated`, `federated_data` and `dirichlet_split`; an
            accelerator that spans several processes (`check_one_process`).
    """
    cfg = cfg or FederatedConfig()
    local = local or TrainConfig()
    if local.fsdp.enabled:
        raise ConfigError("federated clients train in one process; set fsdp=false in the local recipe.")
    fed = federated_data(data, cfg, transfer)
    check_classes(model, data, "model")
    accelerator = accelerator or client_accelerator()
    check_one_process(accelerator)
    ranks = start_ranks()
    runs: dict[str, FederatedRun] = {
        m: Simulation(m, model, fed, cfg, local, accelerator, on_round_end, ranks).run() for m in cfg.methods
    }
    return FederatedResult(
        runs=runs,
        shard_sizes=[len(s) for s in fed.shards],
        skew=fed.skew,
        bytes_per_model=state_dict_bytes(model),
        transfer=fed.transfer,
    )
