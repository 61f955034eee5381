"""The federated simulation over torchrun's processes: each rank trains its share of a round's clients.

Under `torchrun --nproc_per_node N -m distil.cli.app federate ...` every rank runs the same rounds. In
each round a rank trains every N-th sampled client (`SimulationRanks.share`), each through the one
training loop in that process alone; the client models are then gathered to every rank with
`torch.distributed.all_gather_object` (gloo, CPU tensors), rank 0 fuses them and broadcasts the new
global model, so every rank holds what the one-process simulation holds, bit for bit.

The ranks are simulated clients, not data-parallel replicas: a client's `train_model` must not split its
batches across the launch. So the Accelerator the clients train with is built as a one-process one
(`client_accelerator`), and the launch's process group is torch.distributed's own, started here for the
gathers only. The gathers are the simulator's traffic, not the federated protocol's: the bytes each
round reports stay the model down and up per sampled client.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from accelerate import Accelerator

from distil.errors import ConfigError
from distil.train.engine import make_accelerator

T = TypeVar("T")

# What torchrun / accelerate launch / MPI set to make Accelerate start a data-parallel group.
LAUNCH_VARIABLES = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "PMI_SIZE",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
)


def launched_world() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@dataclass(frozen=True)
class SimulationRanks:
    """This process's place among the simulation's processes (one process: rank 0 of 1).

    Every method that communicates is a collective: every rank must call it, in the same order.
    """

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this rank fuses, evaluates and records (rank 0)."""
        return self.rank == 0

    def share(self, chosen: list[int]) -> list[int]:
        """The round's clients this rank trains: every `world`-th of `chosen`, from position `rank`.

        By position rather than client number, so that a sampled subset still spreads evenly.
        """
        return chosen[self.rank :: self.world]

    def gather(self, mine: list[T]) -> list[T]:
        """Every rank's `mine`, concatenated in rank order (with one process: `mine` itself)."""
        if self.world == 1:
            return mine
        every: list[list[T] | None] = [None] * self.world
        torch.distributed.all_gather_object(every, mine)
        return [item for part in every for item in part or []]

    def broadcast(self, value: T | None) -> T:
        """Rank 0's `value` on every rank (the others pass None)."""
        if self.world == 1:
            assert value is not None
            return value
        box: list[Any] = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def start_ranks() -> SimulationRanks:
    """This process's `SimulationRanks`, starting torch.distributed's gloo group under a launcher.

    gloo whatever the device: only CPU tensors are gathered, between rounds.
    """
    world = launched_world()
    if world == 1:
        return SimulationRanks()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")  # env:// rendezvous from the launcher
    return SimulationRanks(rank=torch.distributed.get_rank(), world=torch.distributed.get_world_size())


def client_accelerator(device: str = "auto", mixed_precision: str = "no") -> Accelerator:
    """The Accelerator the clients (and FedDF's server step) train with: always one process.

    Without a launcher it is `make_accelerator`'s. Under one, Accelerate would join every rank into one
    data-parallel group, and each client's `train_model` would then shard its batches across the ranks;
    so it is built with the launch variables hidden, on this rank's own GPU (LOCAL_RANK) when there is one.

    Raises:
        ConfigError: an Accelerator was already started for the whole launch in this process (Accelerate
            keeps one state per process).
    """
    if launched_world() == 1:
        return make_accelerator(device, mixed_precision)
    with _one_process_environment(device):
        accelerator = make_accelerator(device, mixed_precision)
    check_one_process(accelerator)
    return accelerator


def check_one_process(accelerator: Accelerator) -> None:
    """Refuse an Accelerator that spans several processes: clients must train alone.

    Raises:
        ConfigError: `accelerator.num_processes` > 1.
    """
    if accelerator.num_processes > 1:
        raise ConfigError(
            f"the federated clients must each train in one process, but the Accelerator spans "
            f"{accelerator.num_processes} processes (data parallel), which would split every client's "
            "batches across the launch. Fix: pass no accelerator to federate (it builds a one-process one per "
            "rank with distil.federated.ranks.client_accelerator), and build none for the launch before it."
        )


@contextlib.contextmanager
def _one_process_environment(device: str) -> Iterator[None]:
    """The process environment without the launch variables, for as long as the Accelerator is built.

    Accelerate reads them once, when its per-process state is first built; they are restored after.
    """
    saved = {k: os.environ[k] for k in (*LAUNCH_VARIABLES, "ACCELERATE_TORCH_DEVICE") if k in os.environ}
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    try:
        for k in LAUNCH_VARIABLES:
            os.environ.pop(k, None)
        if device != "cpu" and torch.cuda.is_available():
            # Without it every rank would train on cuda:0.
            os.environ["ACCELERATE_TORCH_DEVICE"] = f"cuda:{local_rank % torch.cuda.device_count()}"
        yield
    finally:
        for k in (*LAUNCH_VARIABLES, "ACCELERATE_TORCH_DEVICE"):
            os.environ.pop(k, None)
        os.environ.update(saved)
