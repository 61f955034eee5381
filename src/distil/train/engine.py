"""The training loop shared by teacher training, scratch students and every distillation method.

It is built on Hugging Face Accelerate (device placement, mixed precision, data parallelism), keeps
host syncs to one every `log_every` steps, and stops early with a clear message on NaN/Inf.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from rich.progress import Progress
from torch import nn

from distil.config import TrainConfig
from distil.data import DataBundle, DatasetLoader, SampleSplit, Split, TensorLoader, zero_fill
from distil.data.batch import call_model, to_device
from distil.errors import TrainingError
from distil.report.progress import RunProgress
from distil.train.distributed import (
    average_gradients,
    broadcast_module,
    gather_rank_states,
    reduce_mean,
    sharded_accuracy,
    use_cpu,
)
from distil.train.optim import build_optimizer, build_scheduler
from distil.train.state import TrainStateStore, capture_state, fingerprint, restore_state, store_for
from distil.train.trackers import check_trackers, log_to_trackers

LossFn = Callable[[torch.Tensor, Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
TeacherFn = Callable[[dict[str, torch.Tensor]], Any]


@dataclass
class FitResult:
    """What a training run produced: the trained model and one record per epoch."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float | None:
        return self.history[-1].get("eval_accuracy") if self.history else None


def make_accelerator(
    device: str = "auto", mixed_precision: str = "no", trackers: Sequence[str] = ()
) -> Accelerator:
    """An Accelerator for `device` ("auto", "cpu", "cuda") and mixed precision ("no", "bf16", "fp16").

    `trackers` ("tensorboard", "mlflow", "wandb") are checked to be installed here, and started per run
    with `distil.train.trackers.start_trackers`.
    """
    log_with = check_trackers(trackers)
    return Accelerator(
        cpu=use_cpu(device),
        mixed_precision=mixed_precision,
        log_with=log_with or None,
        # Trackers that write files need a directory now; start_trackers points it at the run directory.
        project_dir="." if log_with else None,
    )


def eval_split(data: DataBundle) -> tuple[str, SampleSplit]:
    """The split used for per-epoch evaluation: validation when there is one, else test."""
    return ("val", data.val) if len(data.val) else ("test", data.test)


def train_loader(
    data: DataBundle, cfg: TrainConfig, accelerator: Accelerator
) -> TensorLoader | DatasetLoader:
    """The shuffled, augmented training batches of this process's shard (the same on every loop).

    An in-memory train split takes the fast path (`TensorLoader`, one indexing op per batch); any other
    (e.g. on disk) is read by `DatasetLoader` workers with the recipe's `num_workers`, `pin_memory`
    (default: when the run uses CUDA), `persistent_workers` and `prefetch_factor`. Both give the same
    batches for the same samples and seed.
    """
    common: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "shuffle": True,
        "drop_last": len(data.train) > cfg.batch_size,
        "augment": data.augment if cfg.augment == "auto" else cfg.augment,
        "crop_padding": data.crop_padding,
        "fill": zero_fill(data.mean, data.std),
        "seed": cfg.seed,
        "num_shards": accelerator.num_processes,
        "shard_index": accelerator.process_index,
    }
    if isinstance(data.train, Split):
        return TensorLoader(data.train, **common)
    pin = cfg.pin_memory if cfg.pin_memory is not None else accelerator.device.type == "cuda"
    return DatasetLoader(
        data.train,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        persistent_workers=cfg.persistent_workers,
        prefetch_factor=cfg.prefetch_factor,
        **common,
    )


def _check_finite(loss_window: torch.Tensor, first_step: int, last_step: int, cfg: TrainConfig) -> None:
    if torch.isfinite(loss_window).all():
        return
    raise TrainingError(
        f"the loss became NaN/Inf between steps {first_step + 1} and {last_step}. Likely causes: a learning "
        f"rate too high (lr={cfg.lr:g}), a high distillation temperature without gradient clipping "
        f"(grad_clip={cfg.grad_clip}), or NaN in the input data. Fix: lower train.lr, set "
        "train.grad_clip (e.g. 5.0), or check the data."
    )


def _check_weights_finite(model: nn.Module, step: int, cfg: TrainConfig) -> None:
    """Stop when a weight became NaN/Inf (a diverged update can precede a NaN loss by one step)."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise TrainingError(
                f"parameter {name!r} became NaN/Inf by step {step}. Likely causes: a learning rate too high "
                f"(lr={cfg.lr:g}) or a high distillation temperature without gradient clipping "
                f"(grad_clip={cfg.grad_clip}). Fix: lower train.lr or set train.grad_clip (e.g. 5.0)."
            )


def fit(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    loss_fn: LossFn,
    *,
    teacher: TeacherFn | None = None,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    description: str = "train",
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 10,
    checkpoint: TrainStateStore | None = None,
) -> FitResult:
    """Train `model` on `data.train` with `loss_fn(student_out, teacher_out, batch)`.

    Args:
        model: the network to train (the student, or a teacher being trained).
        data: the in-memory dataset.
        cfg: the training recipe.
        loss_fn: returns a dict of named scalar terms with the total under "loss".
        teacher: gives teacher outputs for a batch (e.g. `LiveTeacher`), or None for plain training.
        accelerator: device/precision/process setup; a CPU-or-GPU default when None.
        progress: a Rich Progress to draw a bar in; None draws nothing.
        description: label of the progress bar and the records.
        on_epoch_end: called with each epoch's record (e.g. to append to metrics.jsonl).
        log_every: steps between host syncs (progress update and NaN check).
        checkpoint: where to save training states (every `checkpoint.every` steps and at each epoch
            end); when it already holds one for this run, training continues from it exactly. None:
            the store of an enclosing `distil.train.state.checkpointing` block, if any.

    Returns:
        FitResult with the trained (unwrapped) model and per-epoch records.

    Raises:
        TrainingError: when the loss becomes NaN or Inf.
    """
    accelerator = accelerator or make_accelerator()
    torch.manual_seed(cfg.seed)
    loader = train_loader(data, cfg, accelerator)
    steps_per_epoch = len(loader)
    # A loss that is a Module may own trainable parts (e.g. feature adapters): train them with the model.
    loss_module = loss_fn if isinstance(loss_fn, nn.Module) else None
    loss_params: list[nn.Parameter] = []
    if loss_module is not None:
        loss_module.to(accelerator.device)
        # Only the student is wrapped by DDP: the loss's trainable parts start from rank 0's values and
        # have their gradients averaged after each backward (average_gradients), like the student's.
        broadcast_module(accelerator, loss_module)
        loss_params = [p for p in loss_module.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg, extra=loss_module)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if cfg.compile:
        model.compile()  # in place: the module, its type and state_dict keys stay the same
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    device = accelerator.device
    eval_name, eval_data = eval_split(data)

    task = None
    if progress is not None:
        task = progress.add_task(description, total=cfg.epochs * steps_per_epoch, status="")
    history: list[dict[str, Any]] = []
    step = start_epoch = skip = 0
    checkpoint = checkpoint if checkpoint is not None else store_for(description, cfg)
    resumed_sums: dict[str, torch.Tensor] = {}
    stamp = (
        fingerprint(description, cfg, data.describe(), accelerator.unwrap_model(model))
        if checkpoint
        else None
    )
    scaler = getattr(accelerator, "scaler", None)
    rank = accelerator.process_index
    # Every rank reads the state rank 0 wrote (the same directory: see rank_run_root) and continues
    # from its own RNG states and loss sums; the loader position is the same on every rank.
    if checkpoint is not None and (state := checkpoint.latest(stamp)) is not None:
        if state.processes != accelerator.num_processes and accelerator.is_main_process:
            warnings.warn(
                f"the training state in {str(checkpoint.directory)!r} was saved by {state.processes} "
                f"process(es) and is resumed by {accelerator.num_processes}: training continues, but the "
                "data is sharded differently, so the rest of the run is not the one an uninterrupted run "
                f"would have done. Resume with {state.processes} process(es) to continue it exactly.",
                stacklevel=2,
            )
        restore_state(
            state,
            model=accelerator.unwrap_model(model),
            optimizer=optimizer,
            scheduler=scheduler,
            loss_module=loss_module,
            scaler=scaler,
            rank=rank,
        )
        history, step, start_epoch, skip = state.history, state.step, state.epoch, state.batch
        resumed = state.rank_sums(rank) if rank < state.processes else state.sums
        resumed_sums = {k: v.to(device) for k, v in resumed.items()}
        if progress is not None and task is not None:
            progress.update(task, completed=step)

    def save_state(epoch: int, sums: dict[str, torch.Tensor]) -> None:
        assert checkpoint is not None
        _check_weights_finite(model, step, cfg)  # never replace a good state with a diverged one
        ranks = gather_rank_states(accelerator, sums)  # a collective: every rank takes part
        if not accelerator.is_main_process:
            return
        checkpoint.save(
            capture_state(
                model=accelerator.unwrap_model(model),
                optimizer=optimizer,
                scheduler=scheduler,
                epoch=epoch,
                batch=step - epoch * steps_per_epoch,
                step=step,
                sums=sums,
                history=history,
                loss_module=loss_module,
                scaler=scaler,
                fingerprint=stamp,
                ranks=ranks,
            )
        )

    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        if hasattr(loss_fn, "set_epoch"):  # losses with warm-ups or temperature schedules
            loss_fn.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        sums: dict[str, torch.Tensor] = resumed_sums if epoch == start_epoch else {}
        window = torch.zeros((), device=device)
        window_start = step
        # The order of an epoch depends only on (seed, epoch): skipping the batches already trained
        # reproduces the rest of an interrupted epoch exactly.
        batches = itertools.islice(loader, skip, None) if epoch == start_epoch and skip else loader
        for batch in batches:
            batch = to_device(batch, device)
            inputs = batch["inputs"]
            if cfg.channels_last and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
                batch["inputs"] = inputs.contiguous(memory_format=torch.channels_last)  # NHWC: images only
            teacher_out = teacher(batch) if teacher is not None else None
            with accelerator.autocast():
                student_out = call_model(model, batch["inputs"])
            terms = loss_fn(student_out, teacher_out, batch)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(terms["loss"])
            average_gradients(accelerator, loss_params)
            if cfg.grad_clip is not None:
                accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            for name, value in terms.items():
                detached = value.detach().float()
                sums[name] = sums[name] + detached if name in sums else detached
            window = window + terms["loss"].detach().float()
            if step % log_every == 0 or step % steps_per_epoch == 0:
                _check_finite(window, window_start, step, cfg)  # the one host sync per window
                if progress is not None and task is not None:
                    mean_loss = float(sums["loss"]) / (step - epoch * steps_per_epoch)
                    progress.update(
                        task, completed=step, status=f"epoch {epoch + 1}/{cfg.epochs} loss {mean_loss:.3f}"
                    )
                window = torch.zeros((), device=device)
                window_start = step
            if checkpoint is not None and checkpoint.every and step % checkpoint.every == 0:
                _check_finite(window, window_start, step, cfg)
                save_state(epoch, sums)
        seconds = time.perf_counter() - started
        record: dict[str, Any] = {
            "stage": description,
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "samples_per_s": round(steps_per_epoch * cfg.batch_size * accelerator.num_processes / seconds, 1),
        }
        # Every rank computes its share; the reduced numbers equal a single-process run's.
        reduced = reduce_mean(accelerator, sums)
        record.update({f"train_{k}": float(v) / steps_per_epoch for k, v in reduced.items()})
        unwrapped = accelerator.unwrap_model(model)
        if loss_module is not None:
            broadcast_module(accelerator, loss_module, buffers_only=True)
        record[f"{eval_name}_accuracy"] = sharded_accuracy(accelerator, unwrapped, eval_data)
        record["eval_accuracy"] = record[f"{eval_name}_accuracy"]
        if not math.isfinite(record["train_loss"]):
            _check_finite(torch.tensor(float("nan")), epoch * steps_per_epoch, step, cfg)
        _check_weights_finite(model, step, cfg)
        history.append(record)
        if progress is not None and task is not None:
            progress.update(
                task,
                status=f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.3f} "
                f"{eval_name} acc {record['eval_accuracy']:.1%}",
            )
        if on_epoch_end is not None and accelerator.is_main_process:
            on_epoch_end(record)
        if isinstance(progress, RunProgress) and task is not None and accelerator.is_main_process:
            progress.epoch_end(task, record, cfg.epochs)  # loss terms on the bar, or a plain/JSON line
        log_to_trackers(accelerator, record)
        if checkpoint is not None:
            save_state(epoch + 1, {})
    return FitResult(model=accelerator.unwrap_model(model), history=history)
