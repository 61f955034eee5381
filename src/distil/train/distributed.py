"""Metrics across data-parallel processes: each rank does its share, the reduced number is the same
one a single process would report.

Launch any distil command on several processes (GPUs, or CPU ranks with gloo) with
`torchrun --nproc_per_node N -m distil.cli.app ...` or `accelerate launch -m distil.cli.app ...`; the
loop shards the training data by rank (`TensorLoader(num_shards, shard_index)`), Accelerate wraps the
student in DistributedDataParallel, and these helpers reduce the epoch's numbers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from torch import nn

from distil.data import Split
from distil.errors import ConfigError
from distil.measure import accuracy, predict


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


def shard_bounds(n: int, num_shards: int, index: int) -> tuple[int, int]:
    """The contiguous range `[start, stop)` of `n` items that shard `index` of `num_shards` evaluates.

    Shards differ in size by at most one and cover every item exactly once (no padding, so no
    sample is counted twice).
    """
    return index * n // num_shards, (index + 1) * n // num_shards


def sharded_accuracy(
    accelerator: Accelerator, model: nn.Module, split: Split, batch_size: int = 512
) -> float:
    """Top-1 accuracy of `model` on `split`, each process predicting its own shard.

    Correct counts are summed across processes and divided once, in float32 like
    `distil.measure.accuracy`, so the result equals a single-process evaluation bit for bit.

    Args:
        accelerator: the run's Accelerator (one process: a plain evaluation).
        model: the unwrapped model (weights identical on every rank after a data-parallel step;
            its buffers are made identical here, from rank 0).
        split: the evaluation data (the full split, on every rank).
        batch_size: samples per forward pass.

    Returns:
        Accuracy in [0, 1].
    """
    device = accelerator.device
    if accelerator.num_processes == 1:
        return accuracy(predict(model, split.x.to(device), batch_size).cpu(), split.y)
    # DDP syncs buffers (BatchNorm statistics) at the start of each forward, so after the last step
    # every rank holds its own update; take rank 0's, the model that gets saved.
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)
    start, stop = shard_bounds(len(split), accelerator.num_processes, accelerator.process_index)
    logits = predict(model, split.x[start:stop].to(device), batch_size)
    correct = (logits.argmax(dim=1).cpu() == split.y[start:stop]).sum().reshape(1).to(device)
    total = accelerator.reduce(correct, reduction="sum")
    return float(total.cpu().float()[0] / torch.tensor(float(len(split)), dtype=torch.float32))


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


def rank_run_root(
    accelerator: Accelerator, out_root: str | Path, resume: str | Path | None = None
) -> tuple[Path, str | Path | None]:
    """`(root, resume)` for this process's run directory, so that only the main process writes one.

    The main process gets `out_root` itself; the others a private temporary root (removed at exit),
    where their copies of checkpoints and reports go unseen.

    Raises:
        ConfigError: resuming with several processes (every rank would have to read rank 0's state).
    """
    if accelerator.is_main_process:
        return Path(out_root), resume
    if resume is not None:
        raise ConfigError(
            f"resuming {str(resume)!r} with {accelerator.num_processes} processes is not supported; "
            "resume it with one process (plain `distil ...`, without torchrun/accelerate launch)."
        )
    root = Path(tempfile.mkdtemp(prefix=f"distil-rank{accelerator.process_index}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root, None
