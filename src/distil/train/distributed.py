"""Metrics across data-parallel processes: each rank does its share, the reduced number is the same
one a single process would report.

Launch any distil command on several processes (GPUs, or CPU ranks with gloo) with
`torchrun --nproc_per_node N -m distil.cli.app ...` or `accelerate launch -m distil.cli.app ...`; the
loop shards the training data by rank (`TensorLoader(num_shards, shard_index)`), Accelerate wraps the
student in DistributedDataParallel, and these helpers reduce the epoch's numbers. With `train.fsdp`
the student and the teacher are sharded instead (`distil.train.fsdp`); `sharded_metrics` then runs
every rank's forward passes in lockstep.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from rich.console import Console
from torch import nn

from distil.data import SampleSplit
from distil.data.batch import INPUTS, call_model, to_device
from distil.train.fsdp import is_sharded
from distil.train.runs import resolve_resume
from distil.train.state import rank_local_state


def use_cpu(device: str) -> bool:
    """Whether the Accelerator should be told `cpu=True` for the recipe's `device`.

    Under a multi-process launcher (WORLD_SIZE > 1) on a machine without an accelerator, Accelerate
    given `cpu=False` starts every rank as an independent single-process run (each trains on all the
    data and writes its own outputs); `cpu=True` makes the ranks one gloo data-parallel group.
    """
    if device == "cpu":
        return True
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    has_accelerator = torch.cuda.is_available() or (
        hasattr(torch, "accelerator") and torch.accelerator.is_available()
    )
    return device == "auto" and launched and not has_accelerator


def close_process_group() -> None:
    """Destroy the default process group, if one was started, before the interpreter exits.

    Without it gloo's worker threads can outlive the interpreter and abort the rank at exit ("terminate
    called without an active exception", SIGABRT) after a run that otherwise succeeded. Call it only
    after success: on a failed rank the others may still be inside a collective.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard_bounds(n: int, num_shards: int, index: int) -> tuple[int, int]:
    """The contiguous range `[start, stop)` of `n` items that shard `index` of `num_shards` evaluates.

    Shards differ in size by at most one and cover every item exactly once (no padding, so no
    sample is counted twice).
    """
    return index * n // num_shards, (index + 1) * n // num_shards


class ShardEvaluation(Protocol):
    """Metrics as sums over a range of a split, added up across processes and then finished.

    `distil.measure.split_evaluation(task)` gives a task's; `sharded_metrics` only shards, reduces and
    keeps sharded forwards in lockstep, and knows nothing of the metrics.
    """

    @property
    def size(self) -> int:
        """The number of sums (a process without samples contributes that many zeros)."""
        ...

    @property
    def batch_size(self) -> int:
        """The default samples per forward pass."""
        ...

    def sums(
        self,
        model: nn.Module,
        split: SampleSplit,
        *,
        start: int,
        stop: int,
        batch_size: int,
        inference_mode: bool,
    ) -> torch.Tensor:
        """(size,) float64 sums over positions [start, stop) of `split`, on the model's device."""
        ...

    def finish(self, totals: torch.Tensor) -> dict[str, float | None]:
        """The metrics by name from the (size,) totals (CPU) of every process."""
        ...


def sharded_metrics(
    accelerator: Accelerator,
    model: nn.Module,
    split: SampleSplit,
    evaluation: ShardEvaluation,
    batch_size: int | None = None,
) -> dict[str, float | None]:
    """The per-epoch evaluation metrics of `evaluation` (e.g. `distil.measure.split_evaluation(task)`).

    Every metric is evaluated by its streaming sums: each process reads its own shard batch by batch,
    the sums stay on the device, and one reduction adds them up, so no logits are held whole and there
    is one host sync per evaluation. The totals are finished once, as a single-process evaluation
    finishes them, so the metrics equal it bit for bit. Classification gets ``accuracy``; a language
    model ``accuracy`` (next token), ``perplexity`` and ``loss`` (mean NLL in nats).

    Args:
        accelerator: the run's Accelerator (one process: a plain evaluation).
        model: the unwrapped model (weights identical on every rank after a data-parallel step; its
            buffers are made identical here, from rank 0), or an FSDP-sharded one: each of its forward
            passes is a collective, so every rank runs as many as the rank with the most batches.
        split: the evaluation data (the full split, on every rank).
        evaluation: the metrics, as sums over a range of the split (the data's task's).
        batch_size: samples per forward pass (None: `evaluation.batch_size`).
    """
    if batch_size is None:
        batch_size = evaluation.batch_size
    if accelerator.num_processes > 1:
        # DDP syncs buffers (BatchNorm statistics) at the start of each forward, so after the last step
        # every rank holds its own update; take rank 0's, the model that gets saved.
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer.data, src=0)
    # Asked before any forward: a root unit stays gathered (plain tensors) after one.
    lockstep = accelerator.num_processes > 1 and is_sharded(model)
    start, stop = shard_bounds(len(split), accelerator.num_processes, accelerator.process_index)
    if stop > start:
        sums = evaluation.sums(
            model, split, start=start, stop=stop, batch_size=batch_size, inference_mode=not lockstep
        )
    else:  # more ranks than samples: this one adds nothing
        sums = torch.zeros(evaluation.size, dtype=torch.float64, device=accelerator.device)
    if lockstep:
        most = math.ceil(math.ceil(len(split) / accelerator.num_processes) / batch_size)
        _idle_forwards(model, split, most - math.ceil((stop - start) / batch_size), accelerator.device)
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum")
    return evaluation.finish(sums.cpu())


def _idle_forwards(model: nn.Module, split: SampleSplit, count: int, device: torch.device) -> None:
    """`count` forward passes whose outputs are dropped, so that a rank with fewer evaluation batches
    still joins every all-gather of a sharded model's forward (else the other ranks wait forever)."""
    if count <= 0:
        return
    inputs = to_device(next(iter(split.batches(1, 0, 1))), device)[INPUTS]
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(count):
                call_model(model, inputs)
    finally:
        for m, flag in flags:
            m.training = flag


def reduce_mean(accelerator: Accelerator, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average per-process scalar sums (e.g. an epoch's summed loss terms) across processes.

    With one process the dict is returned unchanged; every rank must call this (it is a collective).
    """
    if accelerator.num_processes == 1 or not sums:
        return sums
    names = sorted(sums)
    stacked = torch.stack([sums[k].float().reshape(()) for k in names]).to(accelerator.device)
    reduced = accelerator.reduce(stacked, reduction="mean")
    return {k: reduced[i] for i, k in enumerate(names)}


def is_main_process() -> bool:
    """Whether this process is rank 0 of a launch (or not launched): what may print and write.

    Read from RANK, which torchrun and accelerate launch both set, so it is known before (and without)
    an Accelerator: data loading and the checks before training print too.
    """
    return int(os.environ.get("RANK", "0") or 0) == 0


def rank_zero_console(console: Console | None = None) -> Console:
    """`console` (default: a new one) on the main process; on the other ranks one that prints nothing.

    Under torchrun every rank runs the same command; only rank 0 should speak (the others would print
    their own copy of every table, naming temporary run directories that are deleted at exit).
    """
    if is_main_process():
        return console or Console()
    return Console(quiet=True)


def broadcast_module(accelerator: Accelerator, module: nn.Module, *, buffers_only: bool = False) -> None:
    """Give every process rank 0's parameters and buffers of `module` (in place).

    DDP does this for the student when Accelerate prepares it; a loss with trainable parts (FitNets
    adapters, CRD heads and memory) is built on each rank from that rank's RNG, so it needs the same.
    `buffers_only` at an epoch end: the BatchNorm statistics of an adapter are each rank's own (they
    are not used in training), so rank 0's, the ones saved, are given to all, as for the student in
    `sharded_metrics`. Every rank must call this (it is a collective); with one process nothing happens.
    """
    if accelerator.num_processes == 1:
        return
    for tensor in [*([] if buffers_only else module.parameters()), *module.buffers()]:
        torch.distributed.broadcast(tensor.data, src=0)


def average_gradients(accelerator: Accelerator, params: list[nn.Parameter]) -> None:
    """Average the gradients of `params` across processes (in place), as DDP does for the student's.

    For trainable parts outside the DDP-wrapped student (the loss module's adapters and heads): call it
    after `backward` and before clipping and the optimizer step, so every rank applies the same update.
    The gradients are flattened into one buffer per dtype, so there is one all-reduce per dtype per
    step. Parameters without a gradient are left alone (the same ones on every rank: one loss, one
    graph). Every rank must call this; with one process nothing happens.
    """
    if accelerator.num_processes == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= accelerator.num_processes
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def gather_rank_states(accelerator: Accelerator, sums: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Every rank's `rank_local_state` (RNG states, loss sums), in rank order, for the saved state.

    With one process: an empty list (the state captures the process's own). Every rank must call
    this (it is a collective); the objects are small (the RNG states and a few scalars).
    """
    if accelerator.num_processes == 1:
        return []
    return list(gather_object([rank_local_state(sums)]))


def rank_run_root(
    accelerator: Accelerator, out_root: str | Path, resume: str | Path | None = None
) -> tuple[Path, str | Path | None, Path | None]:
    """`(root, resume, states)` for this process's run directory, so that only the main process writes.

    The main process gets `out_root` and `resume` themselves (`states` None: its run directory's own
    `state/`). The others get a private temporary root (removed at exit), where their copies of
    checkpoints and reports go unseen; when resuming, `states` is the resumed run's `state/`
    directory, so that every rank continues from the training states rank 0 wrote (they only read it:
    states are saved by the main process alone).

    Raises:
        ConfigError: `resume` is not an interrupted run's partial directory.
    """
    if accelerator.is_main_process:
        return Path(out_root), resume, None
    states = resolve_resume(resume) / "state" if resume is not None else None
    root = Path(tempfile.mkdtemp(prefix=f"distil-rank{accelerator.process_index}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root, None, states
