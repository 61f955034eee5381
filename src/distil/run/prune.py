"""`prune_checkpoint`: prune a saved checkpoint, recover by KD fine-tuning, save and measure it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distil.run.checkpoint_data import DataOptions, load_checkpoint_and_data
from distil.run.options import setting

if TYPE_CHECKING:
    from distil.config import PruneConfig
    from distil.measure import ModelMetrics


@dataclass(frozen=True)
class PruneOptions:
    """What `distil prune` does: which checkpoint, how it is pruned and fine-tuned, where it goes."""

    checkpoint: str = setting("", "The distil checkpoint to prune.")
    out: str = setting("pruned", "Checkpoint name to write (NAME.safetensors + NAME.json).")
    method: Literal["structured", "unstructured"] = setting(
        "structured", "structured: remove channels (smaller, faster); unstructured: zero weights."
    )
    ratio: float | None = setting(None, "Fraction of channels (or weights) removed.")
    macs_reduction: float | None = setting(
        None, "Structured: prune until MACs fall this many times (e.g. 2)."
    )
    criterion: Literal["magnitude", "taylor", "bn-scale"] = setting("magnitude", "Channel importance.")
    global_pruning: bool = setting(False, "Rank channels across layers, or prune each alike.")
    ignore: tuple[str, ...] = setting((), "Module path kept unpruned (repeatable; default: classifier).")
    teacher: str | None = setting(None, "Teacher for KD fine-tuning (default: the unpruned model itself).")
    epochs: int = setting(3, "KD fine-tuning epochs (0 = none).")
    lr: float = setting(0.01, "Fine-tuning learning rate.")
    data: DataOptions = field(
        default_factory=DataOptions,
        metadata={"doc": "The dataset read and its reader options (default: the checkpoint's)."},
    )
    model_name: str | None = setting(
        None, "The architecture of a plain state_dict (a registered name or pkg.module:factory)."
    )
    latency: bool = setting(True, "Measure latency and throughput.")
    trust_code: bool = setting(False, "Let the checkpoints' sidecars name Python code to import.")


@dataclass(frozen=True)
class PruneOutcome:
    """What `prune_checkpoint` wrote and measured.

    Attributes:
        weights: the pruned checkpoint's weights file (its sidecar is next to it, ``.json``).
        metrics: the rows "before" and "pruned" on the test set, the first the reference.
        data_name: the dataset they were measured on.
    """

    weights: Path
    metrics: list[ModelMetrics]
    data_name: str


def prune_config(options: PruneOptions) -> PruneConfig:
    """The checked PruneConfig the options stand for.

    Raises:
        ConfigError: no ratio or MACs target for the method, or a value out of range.
    """
    from distil.config import PruneConfig, checked_config
    from distil.errors import ConfigError

    if options.method == "structured" and options.ratio is None and options.macs_reduction is None:
        raise ConfigError("give --ratio (e.g. 0.3) or --macs-reduction (e.g. 2) for structured pruning.")
    if options.method == "unstructured" and options.ratio is None:
        raise ConfigError("unstructured pruning needs --ratio (the fraction of weights zeroed).")
    return checked_config(
        PruneConfig,
        "distil prune options",
        method=options.method,
        ratio=options.ratio,
        macs_reduction=options.macs_reduction if options.ratio is None else None,
        criterion=options.criterion,
        global_pruning=options.global_pruning,
        ignore=list(options.ignore) or None,
    )


def prune_checkpoint(
    options: PruneOptions, *, log: Callable[[str], None] | None = None, progress: Any = None
) -> PruneOutcome:
    """Prune a checkpoint by a ratio or a MACs target, recover by distillation, save it and measure it.

    The result loads with `load_checkpoint` (and `distil eval`), without torch-pruning. The unpruned
    model (or `options.teacher`) teaches the fine-tuning and is the reference for agreement.

    Args:
        options: the checkpoint, pruning, fine-tuning and output settings.
        log: where progress lines go (e.g. the channels removed); None: nowhere.
        progress: the training progress display (see `distil.report.progress.make_progress`).

    Returns:
        The saved weights and the before/after metrics.

    Raises:
        ConfigError: bad options or an unwritable `out` (checked before anything is loaded).
        CheckpointError: a checkpoint that cannot be loaded.
    """
    import torch

    from distil.api import distill
    from distil.compress import finish_pruning_, prune
    from distil.compress.sparsity import NO_SPEEDUP_NOTE
    from distil.config import TrainConfig
    from distil.measure import measure_model, predict
    from distil.resources import check_writable
    from distil.train.checkpoint import load_checkpoint, save_checkpoint
    from distil.train.stages import Stage

    check_writable(Path(options.out).parent)  # before fine-tuning, not after it
    say = log or (lambda _line: None)
    cfg = prune_config(options)
    model, meta, bundle = load_checkpoint_and_data(
        options.checkpoint, options.data, options.model_name, trust_code=options.trust_code
    )
    if options.teacher:
        reference = load_checkpoint(options.teacher, trust_code=options.trust_code)[0].eval()
    else:
        reference = copy.deepcopy(model)
    shape = tuple(bundle.input_shape)
    taylor = options.criterion == "taylor"
    calibration = (bundle.train.head(256), bundle.train.labels[:256]) if taylor else None
    result = prune(
        model, cfg, spec=meta["spec"], example_inputs=torch.zeros((1, *shape)), calibration=calibration
    )
    pruned, spec = result.model, result.spec
    if result.sparsity is None:
        say(
            f"pruned {result.pruning_ratio:.1%} of channels: MACs {result.base_macs:,} -> {result.macs:,} "
            f"({result.macs_reduction:.2f}x fewer), params {result.base_params:,} -> {result.params:,}"
        )
    else:
        say(f"zeroed {result.sparsity.sparsity:.1%} of prunable weights. Note: {NO_SPEEDUP_NOTE}.")
    if options.epochs > 0:
        finetune = TrainConfig(epochs=options.epochs, lr=options.lr)
        pruned = distill(
            reference, pruned, bundle, finetune, progress=progress, description=Stage.PRUNE_FINETUNE
        ).model
    finish_pruning_(pruned, result)
    weights = save_checkpoint(
        options.out, pruned.cpu().eval(), spec, {"role": Stage.PRUNED, "data": bundle.describe()}
    )
    x, y = bundle.test.head(len(bundle.test)), bundle.test.labels
    teacher_logits = predict(reference, x)
    rows = [
        measure_model(
            "before",
            model,
            x,
            y,
            input_shape=shape,
            teacher_logits=teacher_logits,
            latency=options.latency,
            task=bundle.task,
        ),
        measure_model(
            "pruned",
            pruned,
            x,
            y,
            input_shape=shape,
            teacher_logits=teacher_logits,
            weights_path=weights,
            latency=options.latency,
            task=bundle.task,
        ),
    ]
    return PruneOutcome(Path(weights), rows, bundle.name)
