"""The training loop shared by teacher training, scratch students and every distillation method.

It is built on Hugging Face Accelerate (device placement, mixed precision, data parallelism), keeps
host syncs to one every `log_every` steps, and stops early with a clear message on NaN/Inf.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from rich.progress import Progress, TaskID
from torch import nn

from distil.config import TrainConfig, cache_settings
from distil.data import DataBundle, DatasetLoader, SampleSplit, Split, TensorLoader
from distil.data.augment import Augmenter, AugmentSpec, parse_ops
from distil.data.batch import INPUTS, call_model, to_device
from distil.data.targets import refuse_moving_augment
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError, TrainingError
from distil.losses.protocol import ChoosesModelOutputs, DistillationLoss
from distil.measure import split_evaluation
from distil.measure.bytes import known_token_bytes
from distil.measure.tasks import LM_TASK
from distil.train.distributed import (
    average_gradients,
    broadcast_module,
    gather_rank_states,
    reduce_mean,
    sharded_metrics,
    use_cpu,
)
from distil.train.fsdp import (
    check_fsdp,
    first_nonfinite,
    full_optimizer_state,
    gather_into,
    load_from,
    reshard,
    shard_copy,
    shard_optimizer_state_,
    sharding_info,
)
from distil.train.mutual import Cohort
from distil.train.optim import build_optimizer, build_scheduler, step_budget
from distil.train.stages import Stage
from distil.train.state import TrainStateStore, capture_state, fingerprint, restore_state, store_for
from distil.train.trackers import check_trackers, log_to_trackers

LossFn = Callable[[torch.Tensor, Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
TeacherFn = Callable[[dict[str, torch.Tensor]], Any]


@runtime_checkable
class EpochReporter(Protocol):
    """A progress display that also reports each finished epoch (`distil.report.progress.RunProgress`).

    The loop only draws bars in a Rich `Progress`; one that has `epoch_end` is also given every epoch's
    record (on the main process), to show as a line, a JSON object or a status. The display is the
    caller's: the loop does not know how records are shown.
    """

    def epoch_end(self, task_id: TaskID, record: dict[str, Any], epochs: int) -> None:
        """Report a finished epoch of the stage whose bar is `task_id` (of `epochs` in all)."""


@runtime_checkable
class BatchRewriter(Protocol):
    """Rewrites training batches before their forward pass (`distil.train.onpolicy.OnPolicy`: the
    student's own completions with probability lmbda).

    Called with the trained module (unwrapped: no DDP wrapper), the batch on the device and the
    0-based global step; it returns the batch to train on. `end_epoch` (a collective: every rank calls
    it) gives its epoch's record fields and the seconds this rank spent rewriting, which the loop's
    `tokens_per_s` leaves out (it measures training).
    """

    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> dict[str, Any]: ...

    def end_epoch(self, accelerator: Accelerator) -> tuple[dict[str, Any], float]: ...

    def counters(self) -> dict[str, float]:
        """This rank's counts of the epoch so far, saved with a training state (`load_counters` on resume)."""
        ...

    def load_counters(self, counters: dict[str, float]) -> None:
        """Continue the epoch's counts of a resumed state."""
        ...


# Prefix of the rewriter's counters among a saved state's per-rank sums (they are not loss terms).
_REWRITER = "rewriter."


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

    The one place a run's Accelerator is built. FSDP is not Accelerate's here: a stage's `fsdp: true`
    shards its models itself (`distil.train.fsdp`), so an Accelerate FSDP launch is refused.

    `trackers` ("tensorboard", "mlflow", "wandb") are checked to be installed here, and started per run
    with `distil.train.trackers.start_trackers`.
    """
    log_with = check_trackers(trackers)
    accelerator = Accelerator(
        cpu=use_cpu(device),
        mixed_precision=mixed_precision,
        log_with=log_with or None,
        # Trackers that write files need a directory now; start_trackers points it at the run directory.
        project_dir="." if log_with else None,
    )
    if accelerator.distributed_type == DistributedType.FSDP:
        # Accelerate's FSDP would shard the student only, and its states could not be saved whole.
        raise ConfigError(
            "this run was launched with Accelerate's FSDP (accelerate launch --use_fsdp, or an accelerate "
            "config with FSDP); distil shards the student and the teacher itself: launch with `accelerate "
            "launch --multi_gpu` (no --use_fsdp) or torchrun, and set student_train.fsdp=true."
        )
    return accelerator


def eval_split(data: DataBundle) -> tuple[str, SampleSplit]:
    """The split used for per-epoch evaluation: validation when there is one, else test."""
    return ("val", data.val) if len(data.val) else ("test", data.test)


def eval_token_bytes(data: DataBundle) -> torch.Tensor | None:
    """The bytes each token id spells, for per-epoch bits per byte of a language model (`val_bits_per_byte`);
    None for other data, or when the data's tokenizer cannot be rebuilt as it was (no name, files gone, a
    changed fingerprint: its byte counts could be wrong) or its bytes are not known (not byte-level)."""
    name = data.extra.get("tokenizer_name")
    if data.task != LM_TASK or not name:
        return None
    try:
        tokenizer = get_tokenizer(name)
    except Exception:  # a tokenizer that needs files (or code) no longer available: per-token metrics only
        return None
    if tokenizer.fingerprint != data.extra.get("tokenizer", tokenizer.fingerprint):
        return None
    return known_token_bytes(tokenizer)[0]


def augmenter_for(data: DataBundle, cfg: TrainConfig) -> Augmenter:
    """The training augmentation of `cfg` on `data`: the loader's, and the views cache's (the same draws)."""
    aug = cfg.augment
    ops = parse_ops(data.augment if aug.ops == "auto" else aug.ops)
    refuse_moving_augment(data.task, ops, aug.mixing)
    spec = AugmentSpec(
        ops=ops,
        padding=data.crop_padding,
        scale=aug.scale,
        ratio=aug.ratio,
        brightness=aug.jitter_brightness,
        contrast=aug.jitter_contrast,
        saturation=aug.jitter_saturation,
        hue=aug.jitter_hue,
        randaugment_ops=aug.randaugment_ops,
        randaugment_magnitude=aug.randaugment_magnitude,
        mixing=aug.mixing,
        mixing_alpha=aug.mixing_alpha,
    )
    return Augmenter(spec, seed=cfg.seed, mean=data.mean, std=data.std, num_samples=len(data.train))


def train_loader(
    data: DataBundle, cfg: TrainConfig, accelerator: Accelerator, views: int | None = None
) -> TensorLoader | DatasetLoader:
    """The shuffled, augmented training batches of this process's shard (the same on every loop).

    An in-memory train split takes the fast path (`TensorLoader`, one indexing op per batch); any other
    (e.g. on disk) is read by `DatasetLoader` workers with the recipe's `loader` group (`num_workers`,
    `pin_memory` (default: when the run uses CUDA), `persistent_workers`, `prefetch_factor`). Both give the same
    batches for the same samples and seed. `views` (KD with `cfg.teacher_cache.views`): replay that many
    fixed augmented views per sample.
    """
    common: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "shuffle": True,
        # Drop the ragged last batch only when each rank still gets a full one: a rank whose share is
        # smaller than one batch would otherwise train zero steps.
        "drop_last": len(data.train) // accelerator.num_processes > cfg.batch_size,
        "seed": cfg.seed,
        "num_shards": accelerator.num_processes,
        "shard_index": accelerator.process_index,
        "augmenter": augmenter_for(data, cfg),
        "views": views,
    }
    if isinstance(data.train, Split):
        return TensorLoader(data.train, **common)
    loader = cfg.loader
    pin = loader.pin_memory if loader.pin_memory is not None else accelerator.device.type == "cuda"
    return DatasetLoader(
        data.train,
        num_workers=loader.num_workers,
        pin_memory=pin,
        persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor,
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


def _check_weights_finite(model: nn.Module, step: int, cfg: TrainConfig, *, sharded: bool = False) -> None:
    """Stop when a weight became NaN/Inf (a diverged update can precede a NaN loss by one step).

    `sharded` (FSDP): each rank checks its shard and the verdict is shared, so all ranks stop together.
    """
    if sharded:
        bad = first_nonfinite(model)
    else:
        bad = next((name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise TrainingError(
            f"parameter {bad!r} became NaN/Inf by step {step}. Likely causes: a learning rate too high "
            f"(lr={cfg.lr:g}) or a high distillation temperature without gradient clipping "
            f"(grad_clip={cfg.grad_clip}). Fix: lower train.lr or set train.grad_clip (e.g. 5.0)."
        )


def _check_fsdp_model(model: nn.Module, accelerator: Accelerator) -> None:
    """Refuse what `train.fsdp` cannot train: one process, a cohort, a model whose features are hooked.

    Raises:
        ConfigError: naming the problem and the fix.
    """
    check_fsdp(accelerator)
    if isinstance(model, Cohort):
        raise ConfigError(
            "train.fsdp=true does not train a cohort of students (mutual learning); set fsdp=false."
        )
    hooked = [
        n or "(the model)" for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks
    ]
    if hooked:
        raise ConfigError(
            f"train.fsdp=true trains a sharded copy of the model, but modules {hooked[:4]} carry forward hooks "
            "(feature terms such as fitnet, attention or crd capture features with them), which the copy "
            "would not run. Use terms on the outputs (kd, ce, rkl, js, dkd, logit_mse) with fsdp, or set "
            "fsdp=false."
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
    description: str = Stage.TRAIN,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 10,
    checkpoint: TrainStateStore | None = None,
    rewriter: BatchRewriter | None = None,
) -> FitResult:
    """Train `model` on `data.train` with `loss_fn(student_out, teacher_out, batch)`.

    Args:
        model: the network to train (the student, a teacher being trained, or a `Cohort` of students
            that learn from each other: each is then evaluated, as `s{i}_eval_accuracy`).
        data: the in-memory dataset.
        cfg: the training recipe.
        loss_fn: returns a dict of named scalar terms with the total under "loss". A
            `distil.losses.protocol.DistillationLoss` is also told each epoch (`set_epoch`).
        teacher: gives teacher outputs for a batch (e.g. `LiveTeacher`), or None for plain training.
        accelerator: device/precision/process setup; a CPU-or-GPU default when None.
        progress: a Rich Progress to draw a bar in; None draws nothing. If it is an `EpochReporter`
            (e.g. `distil.report.progress.make_progress`), each epoch's record is reported to it too.
        description: label of the progress bar and the records (a `Stage` or any name).
        on_epoch_end: called with each epoch's record (e.g. to append to metrics.jsonl).
        log_every: steps between host syncs (progress update and NaN check).
        checkpoint: where to save training states (every `checkpoint.every` steps and at each epoch
            end); when it already holds one for this run, training continues from it exactly. None:
            the store of an enclosing `distil.train.state.checkpointing` block, if any.
        rewriter: rewrites each batch before its forward pass (on-policy distillation:
            `distil.train.onpolicy.OnPolicy`); None trains on the data's batches as they come.

    With `cfg.fsdp.enabled` (several processes) a copy of `model` sharded across them is trained
    (`distil.train.fsdp`); `model` stays a plain module and gets the trained weights back, whole, at
    every saved state and at the end (on every rank).

    Returns:
        FitResult with the trained (unwrapped) model and per-epoch records.

    Raises:
        TrainingError: when the loss becomes NaN or Inf.
        ConfigError: `cfg.fsdp.enabled` where it cannot shard (one process, fp16, a cohort, hooked features).
    """
    loop = TrainLoop(
        model,
        data,
        cfg,
        loss_fn,
        teacher=teacher,
        accelerator=accelerator or make_accelerator(),
        progress=progress,
        description=str(description),
        on_epoch_end=on_epoch_end,
        log_every=log_every,
        checkpoint=checkpoint,
        rewriter=rewriter,
    )
    return loop.run()


class TrainLoop:
    """One call of `fit`: set-up and resume in `__init__`, then `run_epoch` = `train_step` per batch
    and `end_of_epoch` (reduce, evaluate, record, report, save the state).

    Where training stands lives here (`step`, the epoch's loss `sums`, the NaN-check `window`), so a
    training state captures it and a resumed loop continues from it exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        cfg: TrainConfig,
        loss_fn: LossFn,
        *,
        teacher: TeacherFn | None,
        accelerator: Accelerator,
        progress: Progress | None,
        description: str,
        on_epoch_end: Callable[[dict[str, Any]], None] | None,
        log_every: int,
        checkpoint: TrainStateStore | None,
        rewriter: BatchRewriter | None = None,
    ) -> None:
        self.data, self.cfg, self.loss_fn, self.teacher = data, cfg, loss_fn, teacher
        self.rewriter = rewriter
        self.accelerator, self.device = accelerator, accelerator.device
        self.progress, self.description, self.on_epoch_end = progress, description, on_epoch_end
        self.log_every = log_every
        torch.manual_seed(cfg.seed)
        # The views of `teacher_cache.views` are what the teacher's outputs were cached on: KD only.
        views = cache_settings(cfg).views if teacher is not None else None
        self.loader = train_loader(data, cfg, accelerator, views)
        self.steps_per_epoch = len(self.loader)
        # `plain` is the caller's module, returned trained. With FSDP a sharded copy of it is trained
        # (`distil.train.fsdp`) and `plain` gets its weights back at each saved state and at the end.
        self.plain, self.fsdp = model, cfg.fsdp.enabled
        if self.fsdp:
            _check_fsdp_model(model, accelerator)
            model = shard_copy(model, accelerator, frozen=False, units=cfg.fsdp.units)
        self._build_optimization(model)
        self.model = self._prepare(model)
        self.clip_groups = _clip_groups(self._trained(), self.optimizer)
        self.eval_name, self.eval_data = eval_split(data)
        self.eval_token_bytes = eval_token_bytes(data)  # val_bits_per_byte where the bytes are known
        # `epochs` whole epochs, or `max_steps` steps (the last epoch cut short).
        self.epochs, self.total_steps = step_budget(cfg, self.steps_per_epoch)
        self.task = None
        if progress is not None:
            self.task = progress.add_task(description, total=self.total_steps, status="")
        self.history: list[dict[str, Any]] = []
        self.step = self.start_epoch = self.skip = 0
        self.sums: dict[str, torch.Tensor] = {}  # this epoch's summed loss terms
        self.window = torch.zeros((), device=self.device)  # loss summed since the last NaN check
        self.window_start = 0
        self.checkpoint = checkpoint if checkpoint is not None else store_for(description, cfg)
        self.stamp = fingerprint(description, cfg, data.describe(), self.plain) if self.checkpoint else None
        self.scaler = getattr(accelerator, "scaler", None)
        self._resume()

    # -- set-up ---------------------------------------------------------------------------------------

    def _build_optimization(self, model: nn.Module) -> None:
        """The optimizer and schedule over the model and the loss's own trainable parts."""
        # A loss that is a Module may own trainable parts (e.g. feature adapters): train them with the model.
        self.loss_module = self.loss_fn if isinstance(self.loss_fn, nn.Module) else None
        self.loss_params: list[nn.Parameter] = []
        if self.loss_module is not None:
            self.loss_module.to(self.device)
            # Only the student is wrapped by DDP: the loss's trainable parts start from rank 0's values
            # and have their gradients averaged after each backward (average_gradients), like the student's.
            broadcast_module(self.accelerator, self.loss_module)
            self.loss_params = [p for p in self.loss_module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(model, self.cfg, extra=self.loss_module)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, self.steps_per_epoch)

    def _prepare(self, model: nn.Module) -> nn.Module:
        """Memory layout, compilation, then device placement and data parallelism (Accelerate)."""
        if self.cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.cfg.compile:
            model.compile()  # in place: the module, its type and state_dict keys stay the same
        if self.fsdp:
            # Placed and sharded by FSDP; Accelerate's model preparation would wrap it in DDP.
            self.optimizer = self.accelerator.prepare(self.optimizer)
            return model
        model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        return model

    def _trained(self) -> nn.Module:
        """The module trained: the sharded copy (FSDP), else the model without its DDP wrapper."""
        return self.model if self.fsdp else self.accelerator.unwrap_model(self.model)

    def _resume(self) -> None:
        """Continue from the newest training state of this run, if the store holds one."""
        accelerator, checkpoint = self.accelerator, self.checkpoint
        rank = accelerator.process_index
        # Every rank reads the state rank 0 wrote (the same directory: see rank_run_root) and continues
        # from its own RNG states and loss sums; the loader position is the same on every rank.
        if checkpoint is None or (state := checkpoint.latest(self.stamp)) is None:
            return
        if state.processes != accelerator.num_processes and accelerator.is_main_process:
            warnings.warn(
                f"the training state in {str(checkpoint.directory)!r} was saved by {state.processes} "
                f"process(es) and is resumed by {accelerator.num_processes}: training continues, but the "
                "data is sharded differently, so the rest of the run is not the one an uninterrupted run "
                f"would have done. Resume with {state.processes} process(es) to continue it exactly.",
                stacklevel=4,
            )
        restore_state(
            state,
            model=self.plain if self.fsdp else accelerator.unwrap_model(self.model),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            loss_module=self.loss_module,
            scaler=self.scaler,
            rank=rank,
        )
        if self.fsdp:  # the state is whole (as one process saves it): each rank keeps its shard
            load_from(self.model, self.plain)
            shard_optimizer_state_(self.optimizer)
        self.history, self.step, self.start_epoch, self.skip = (
            state.history,
            state.step,
            state.epoch,
            state.batch,
        )
        resumed = state.rank_sums(rank) if rank < state.processes else state.sums
        self.sums = {k: v.to(self.device) for k, v in resumed.items() if not k.startswith(_REWRITER)}
        if self.rewriter is not None:  # its counts of the interrupted epoch (none in older states)
            self.rewriter.load_counters(
                {k[len(_REWRITER) :]: float(v) for k, v in resumed.items() if k.startswith(_REWRITER)}
            )
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=self.step)

    # -- training -------------------------------------------------------------------------------------

    def run(self) -> FitResult:
        for epoch in range(self.start_epoch, self.epochs):
            self.run_epoch(epoch)
        if self.fsdp:
            gather_into(self.model, self.plain)  # every rank returns the whole trained model
            return FitResult(model=self.plain, history=self.history)
        return FitResult(model=self.accelerator.unwrap_model(self.model), history=self.history)

    def run_epoch(self, epoch: int) -> None:
        """Train one epoch (the rest of it, when resumed mid-epoch), then close it."""
        # The order of an epoch depends only on (seed, epoch): starting at the first batch not yet
        # trained reproduces the rest of an interrupted epoch exactly (the skipped ones are not read).
        start = self.skip if epoch == self.start_epoch else 0
        self.loader.set_epoch(epoch, start_batch=start)
        if isinstance(self.loss_fn, DistillationLoss):  # warm-ups and temperature schedules
            self.loss_fn.set_epoch(epoch)
        self.model.train()
        started = time.perf_counter()
        if epoch != self.start_epoch:
            self.sums = {}
        self.window = torch.zeros((), device=self.device)
        self.window_start = self.step
        for batch in self.loader:
            if self.step >= self.total_steps:  # max_steps ends the run inside its last epoch
                break
            self.train_step(batch, epoch)
        self.end_of_epoch(epoch, time.perf_counter() - started)

    def _forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The loss terms of one batch (teacher outputs under no_grad, student under autocast)."""
        batch = to_device(batch, self.device)
        if self.rewriter is not None:  # e.g. the student's own completions; generated as it trains
            with self.accelerator.autocast():
                batch = self.rewriter(self._trained(), batch, self.step)
        inputs = batch[INPUTS]
        if self.cfg.channels_last and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            batch[INPUTS] = inputs.contiguous(memory_format=torch.channels_last)  # NHWC: images only
        teacher_out = self.teacher(batch) if self.teacher is not None else None
        # e.g. a causal LM's hidden states and head instead of its logits (the fused LM loss)
        options: dict[str, Any] = (
            self.loss_fn.model_call_options("student")
            if isinstance(self.loss_fn, ChoosesModelOutputs)
            else {}
        )
        with self.accelerator.autocast():
            student_out = call_model(self.model, batch[INPUTS], **options)
        return self.loss_fn(student_out, teacher_out, batch)

    def train_step(self, batch: dict[str, Any], epoch: int) -> None:
        """One optimisation step; a host sync (NaN check, progress) every `log_every` steps."""
        terms = self._forward(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(terms["loss"])
        average_gradients(self.accelerator, self.loss_params)
        if self.cfg.grad_clip is not None:
            self._clip_gradients(self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        for name, value in terms.items():
            detached = value.detach().float()
            self.sums[name] = self.sums[name] + detached if name in self.sums else detached
        self.window = self.window + terms["loss"].detach().float()
        step, steps_per_epoch = self.step, self.steps_per_epoch
        if step % self.log_every == 0 or step % steps_per_epoch == 0 or step == self.total_steps:
            _check_finite(self.window, self.window_start, step, self.cfg)  # the one host sync per window
            if self.progress is not None and self.task is not None:
                mean_loss = float(self.sums["loss"]) / (step - epoch * steps_per_epoch)
                self.progress.update(
                    self.task,
                    completed=step,
                    status=f"epoch {epoch + 1}/{self.epochs} loss {mean_loss:.3f}",
                )
            self.window = torch.zeros((), device=self.device)
            self.window_start = step
        if self.checkpoint is not None and self.checkpoint.every and step % self.checkpoint.every == 0:
            _check_finite(self.window, self.window_start, step, self.cfg)
            self.save_state(epoch, self.sums)

    def _clip_gradients(self, max_norm: float) -> None:
        """Clip each group's gradient norm (one group; one per student of a cohort)."""
        if len(self.clip_groups) == 1:
            self.accelerator.clip_grad_norm_(self.clip_groups[0], max_norm)
            return
        self.accelerator.unscale_gradients()  # once: mixed-precision scaling refuses a second unscale
        for group in self.clip_groups:
            torch.nn.utils.clip_grad_norm_(group, max_norm)

    # -- end of an epoch ------------------------------------------------------------------------------

    def end_of_epoch(self, epoch: int, seconds: float) -> None:
        """Reduce the loss sums, evaluate, record, report, and save the state of the finished epoch."""
        cfg, accelerator = self.cfg, self.accelerator
        processes = accelerator.num_processes
        steps = self.step - epoch * self.steps_per_epoch  # this epoch's: fewer where max_steps ends it
        rewritten, rewrite_seconds = (
            self.rewriter.end_epoch(accelerator) if self.rewriter is not None else ({}, 0.0)
        )
        record: dict[str, Any] = {
            "stage": self.description,
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "samples_per_s": round(steps * cfg.batch_size * processes / seconds, 1),
        }
        if self.data.is_tokens:  # each sample is one block of T input tokens, all of them trained on
            tokens = steps * cfg.batch_size * processes * self.data.input_shape[0]
            # Training throughput: the time spent rewriting batches (generating) is not training.
            record["tokens_per_s"] = round(tokens / max(seconds - rewrite_seconds, 1e-9), 1)
        if steps != self.steps_per_epoch:
            record["steps"] = steps
        record.update(rewritten)
        if self.fsdp:  # what this process holds of the trained model
            record["fsdp"] = sharding_info(self.model)
        # Every rank computes its share; the reduced numbers equal a single-process run's.
        reduced = reduce_mean(accelerator, self.sums)
        record.update({f"train_{k}": float(v) / steps for k, v in reduced.items()})
        record.update(self.evaluate())
        if not math.isfinite(record["train_loss"]):
            _check_finite(torch.tensor(float("nan")), epoch * self.steps_per_epoch, self.step, cfg)
        _check_weights_finite(self.model, self.step, cfg, sharded=self.fsdp)
        self.history.append(record)
        self._report(record, epoch)
        if self.checkpoint is not None:
            self.save_state(epoch + 1, {})

    def evaluate(self) -> dict[str, float]:
        """The task's metrics on the evaluation split as `{split}_{metric}` and `eval_{metric}`
        (classification: accuracy; language modelling: accuracy, perplexity, loss, and bits_per_byte and
        byte_perplexity where the tokenizer's bytes are known: `eval_token_bytes`); per student
        (`s{i}_...`) for a cohort, the first's being the cohort's. Each process evaluates its shard."""
        unwrapped = self._trained()
        if self.loss_module is not None:
            broadcast_module(self.accelerator, self.loss_module, buffers_only=True)
        name, evaluation = (
            self.eval_name,
            split_evaluation(self.data.task, self.eval_token_bytes, width=self.data.num_classes),
        )
        students = unwrapped.students if isinstance(unwrapped, Cohort) else [unwrapped]
        out: dict[str, float] = {}
        for i, student in enumerate(students):
            found = sharded_metrics(self.accelerator, student, self.eval_data, evaluation)
            for key, value in found.items():
                if value is None:
                    continue
                if isinstance(unwrapped, Cohort):
                    out.update({f"s{i}_{name}_{key}": value, f"s{i}_eval_{key}": value})
                if i == 0:
                    out.update({f"{name}_{key}": value, f"eval_{key}": value})
        if self.fsdp:
            reshard(self.model)  # evaluation left the root unit gathered
        return out

    def _report(self, record: dict[str, Any], epoch: int) -> None:
        """The record to the progress bar, the caller's callback and the experiment trackers."""
        progress, task, accelerator = self.progress, self.task, self.accelerator
        if progress is not None and task is not None:
            progress.update(
                task,
                status=f"epoch {epoch + 1}/{self.epochs} loss {record['train_loss']:.3f} "
                + (
                    f"{self.eval_name} ppl {record['eval_perplexity']:.2f}"
                    if "eval_perplexity" in record
                    else f"{self.eval_name} acc {record['eval_accuracy']:.1%}"
                    if "eval_accuracy" in record
                    else ""  # nothing streamed compares (an embedding narrower than its targets)
                ),
            )
        if self.on_epoch_end is not None and accelerator.is_main_process:
            self.on_epoch_end(record)
        if isinstance(progress, EpochReporter) and task is not None and accelerator.is_main_process:
            progress.epoch_end(task, record, self.epochs)  # loss terms on the bar, or a plain/JSON line
        log_to_trackers(accelerator, record)

    def save_state(self, epoch: int, sums: dict[str, torch.Tensor]) -> None:
        """A resumable training state at the current step (`epoch`: the one in progress)."""
        assert self.checkpoint is not None
        accelerator = self.accelerator
        # Never replace a good state with a diverged one.
        _check_weights_finite(self.model, self.step, self.cfg, sharded=self.fsdp)
        optimizer_state = None
        if self.fsdp:  # the state is saved whole, as one process saves it (collectives: every rank)
            gather_into(self.model, self.plain)
            optimizer_state = full_optimizer_state(self.optimizer)
        if self.rewriter is not None:  # the epoch's generation counts resume with its loss sums
            counters = self.rewriter.counters()
            sums = {
                **sums,
                **{_REWRITER + k: torch.tensor(v, dtype=torch.float64) for k, v in counters.items()},
            }
        ranks = gather_rank_states(accelerator, sums)  # a collective: every rank takes part
        if not accelerator.is_main_process:
            return
        self.checkpoint.save(
            capture_state(
                model=self.plain if self.fsdp else accelerator.unwrap_model(self.model),
                optimizer=self.optimizer,
                optimizer_state=optimizer_state,
                scheduler=self.scheduler,
                epoch=epoch,
                batch=self.step - epoch * self.steps_per_epoch,
                step=self.step,
                sums=sums,
                history=self.history,
                loss_module=self.loss_module,
                scaler=self.scaler,
                fingerprint=self.stamp,
                ranks=ranks,
            )
        )


def _clip_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[nn.Parameter]]:
    """The parameters whose gradient norm is clipped together: all trainable ones, or for a cohort,
    each student's (its own network, as if trained alone) and then the rest (e.g. a loss's parts)."""
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(model, Cohort):
        return [trainable]
    groups = [[p for p in s.parameters() if p.requires_grad] for s in model.students]
    owned = {id(p) for g in groups for p in g}
    rest = [p for p in trainable if id(p) not in owned]
    return [g for g in [*groups, rest] if g]
