"""Fully sharded data parallelism (`train.fsdp`): the trained model and its frozen teacher, both sharded.

Each is sharded with torch's FSDP2 (`torch.distributed.fsdp.fully_shard`) over all the processes of the
run: every parameter is split in dim 0 across the ranks, so each holds about 1/N of it (and, for the
trained model, 1/N of its gradients and optimizer state). A forward pass all-gathers the parameters of
one *unit* at a time (a transformer block; the rest of the model is the root unit) and frees them after
it, so a model needs only its shard plus one unit whole on a device. The teacher is frozen: it is
sharded for inference, runs under `no_grad`, and its root is resharded after each forward too.

Why not Accelerate's FSDP plugin: Accelerate 1.15 turns FSDP on only for GPU-like launches (not for
CPU/gloo ranks), and its FSDP2 `prepare` takes exactly one model, together with its optimizer, so a
frozen teacher cannot go through it (TRL calls `fully_shard` on its teacher itself for the same reason).
Calling `fully_shard` here treats the student and the teacher alike, on any device, and keeps the one
Accelerator of the run (`make_accelerator`) for processes, devices and autocast.

The sharded model is a copy (`shard_copy`): the module the caller passed stays an ordinary one where
it is (the pipeline builds models on the CPU), and gets the trained weights back (`gather_into`) at every saved state and at the end, so saving,
measuring, exporting and a later stage see a plain model. Every function here that moves parameters is
a collective: every rank must call it, in the same order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from distil.errors import ConfigError


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` holds FSDP-sharded (DTensor) parameters."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def check_fsdp(accelerator: Accelerator, *, what: str = "train.fsdp") -> None:
    """Refuse FSDP where it cannot shard anything or where it is not supported.

    Raises:
        ConfigError: one process (nothing to shard across), or fp16 mixed precision.
    """
    if accelerator.num_processes < 2:
        raise ConfigError(
            f"{what}=true shards the models across processes, but this run has one process. Launch it on "
            "several: `torchrun --nproc_per_node N -m distil.cli.app ...` or `accelerate launch "
            "--num_processes N -m distil.cli.app ...` (or set fsdp=false)."
        )
    if accelerator.mixed_precision == "fp16":
        raise ConfigError(
            f"{what}=true with mixed_precision=fp16 is not supported (a loss-scaled step would need the "
            "inf checks of every shard combined); use mixed_precision=bf16 or no."
        )


def unit_classes(model: nn.Module, names: Sequence[str] = ()) -> set[str]:
    """The module class names sharded as units of their own: `names`, or by default the transformer
    blocks a Hugging Face model declares (`_no_split_modules`, as Accelerate's transformer-based wrap
    policy reads them); an empty set leaves the whole model one unit.

    Raises:
        ConfigError: a name in `names` matches no module of `model`.
    """
    present = {type(m).__name__ for m in model.modules()}
    if names:
        missing = sorted(set(names) - present)
        if missing:
            raise ConfigError(
                f"fsdp.units names {missing}, but the model has no module of that class; its classes are "
                f"{', '.join(sorted(present))}."
            )
        return set(names)
    declared: set[str] = set()
    for m in model.modules():
        declared.update(getattr(m, "_no_split_modules", None) or [])
    return declared & present


def _policy(accelerator: Accelerator, *, root: bool) -> Any:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if accelerator.mixed_precision == "bf16":
        # bf16 all-gathers and compute, fp32 gradient reduction; the root's outputs in fp32 (the loss
        # is computed in fp32, as Accelerate's autocast does for a prepared model). Inner units pass
        # bf16 on: an fp32 block output would meet the root's bf16 head.
        return MixedPrecisionPolicy(
            param_dtype=torch.bfloat16,
            reduce_dtype=torch.float32,
            output_dtype=torch.float32 if root else None,
        )
    return MixedPrecisionPolicy()


def shard_copy(
    model: nn.Module, accelerator: Accelerator, *, frozen: bool, units: Sequence[str] = ()
) -> nn.Module:
    """A copy of `model` sharded across the run's processes and placed on its device; `model` is left
    as it is.

    Args:
        model: the full model (every rank holds the same weights: the same seed, or one checkpoint).
        accelerator: the run's (its processes, device and mixed precision).
        frozen: a teacher: eval mode, no gradients, and every unit (the root too) resharded after each
            forward, since no backward follows.
        units: module class names sharded as their own units (`unit_classes`).

    Returns:
        The sharded copy (its class is FSDP's subclass of the model's; names and forward are the model's).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    sharded = copy.deepcopy(model)
    if frozen:
        sharded.eval()
        sharded.requires_grad_(False)
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    # None for the trained model lets FSDP keep the root gathered between forward and backward.
    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": True if frozen else None}
    classes = unit_classes(sharded, units)
    # Bottom-up, so a unit's parameters are not claimed by an enclosing one; the root takes the rest.
    for module in reversed(list(sharded.modules())):
        if module is not sharded and type(module).__name__ in classes:
            fully_shard(module, mp_policy=_policy(accelerator, root=False), **kwargs)
    fully_shard(sharded, mp_policy=_policy(accelerator, root=True), **kwargs)
    return sharded


def reshard(model: nn.Module) -> None:
    """Free the gathered parameters of every unit (after evaluation, before reading parameters)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def sharding_info(model: nn.Module) -> dict[str, int]:
    """`{"parameters", "local", "units"}`: the model's parameter count, how many this process holds,
    and how many units it is sharded in (for the run records)."""
    from torch.distributed.fsdp import FSDPModule

    total = local = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    units = sum(isinstance(m, FSDPModule) for m in model.modules())
    return {"parameters": total, "local": local, "units": units}


@torch.no_grad()
def gather_into(sharded: nn.Module, plain: nn.Module) -> None:
    """Copy the full parameters and buffers of `sharded` into `plain` (on `plain`'s device), one tensor
    at a time, so no more than one whole parameter is on the device at once. A collective."""
    reshard(sharded)
    for name, p in sharded.named_parameters():
        full = p.full_tensor() if isinstance(p, DTensor) else p
        plain.get_parameter(name).copy_(full)
    for name, b in sharded.named_buffers():
        plain.get_buffer(name).copy_(b)


@torch.no_grad()
def load_from(sharded: nn.Module, plain: nn.Module) -> None:
    """Give `sharded` the weights of `plain` (the same on every rank, e.g. a resumed state): each rank
    keeps its own shard. No communication."""
    reshard(sharded)
    for name, p in sharded.named_parameters():
        src = plain.get_parameter(name).detach()
        if isinstance(p, DTensor):
            own = distribute_tensor(src.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
            p.to_local().copy_(own.to_local())
        else:
            p.copy_(src)
    for name, b in sharded.named_buffers():
        b.copy_(plain.get_buffer(name))


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()` with every sharded state (Adam's moments, SGD's momentum) gathered
    whole on the CPU: the format a one-process run saves. A collective."""
    sd = optimizer.state_dict()
    # In sorted order: every rank must gather the same tensor at the same time, and a resumed
    # optimizer's states need not be in the same order on every rank.
    state: dict[Any, dict[str, Any]] = {}
    for idx in sorted(sd["state"]):
        slots = sd["state"][idx]
        state[idx] = {
            k: slots[k].full_tensor().cpu() if isinstance(slots[k], DTensor) else slots[k]
            for k in sorted(slots)
        }
    return {"state": state, "param_groups": sd["param_groups"]}


@torch.no_grad()
def shard_optimizer_state_(optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.load_state_dict(full state)`: keep each rank's shard of the states of sharded
    parameters (in place; no communication: every rank loaded the same state)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not isinstance(p, DTensor):
                continue
            slots = optimizer.state.get(p, {})
            for key, value in list(slots.items()):
                if (
                    isinstance(value, torch.Tensor)
                    and not isinstance(value, DTensor)
                    and value.shape == p.shape
                ):
                    slots[key] = distribute_tensor(
                        value.to(p.device), p.device_mesh, p.placements, src_data_rank=None
                    )


def first_nonfinite(model: nn.Module) -> str | None:
    """The name of a parameter with a NaN/Inf on any process (None: all finite). For a sharded model
    each rank checks its own shard and the verdict is combined, so every rank raises together."""
    bad = None
    for name, p in model.named_parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        if not bool(torch.isfinite(local).all()):
            bad = name
            break
    flag = torch.tensor([0 if bad is None else 1], device=next(model.parameters()).device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if int(flag) == 0:
        return None
    return bad or "a parameter sharded on another process"
