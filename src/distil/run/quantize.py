"""`quantize_checkpoint`: int8 with ONNX Runtime (static, or QAT + KD first), measured against fp32."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distil.run.checkpoint_data import DataOptions, load_checkpoint_and_data
from distil.run.options import setting

if TYPE_CHECKING:
    from distil.config import QuantizeConfig
    from distil.measure import ModelMetrics


@dataclass(frozen=True)
class QuantizeOptions:
    """What `distil quantize` does: which checkpoint, how it is quantized and measured, where it goes."""

    checkpoint: str = setting("", "The distil checkpoint to quantize.")
    out: str = setting("quantized", "Directory for fp32.onnx and int8.onnx.")
    mode: Literal["static", "qat"] = setting("static", "static: calibrate and quantize; qat: QAT + KD first.")
    calibration_size: int = setting(512, "Training samples used for calibration.")
    format: Literal["auto", "qoperator", "qdq"] = setting(
        "auto", "ONNX int8 graph format; auto = measure both, keep the faster."
    )
    per_channel: bool | None = setting(None, "Weight scales (default: measure both).")
    exclude: tuple[str, ...] = setting((), "Module path kept in fp32 (repeatable).")
    teacher: str | None = setting(None, "QAT: the fp32 teacher (default: the model's own fp32 copy).")
    epochs: int = setting(2, "QAT + KD epochs.")
    lr: float = setting(0.005, "QAT learning rate.")
    threads: int = setting(1, "ONNX Runtime threads for every latency measurement.")
    data: DataOptions = field(
        default_factory=DataOptions,
        metadata={"doc": "The dataset read and its reader options (default: the checkpoint's)."},
    )
    model_name: str | None = setting(
        None, "The architecture of a plain state_dict (a registered name or pkg.module:factory)."
    )
    trust_code: bool = setting(False, "Let the checkpoints' sidecars name Python code to import.")


@dataclass(frozen=True)
class QuantizeOutcome:
    """What `quantize_checkpoint` wrote and measured.

    Attributes:
        out: the directory holding fp32.onnx, int8.onnx and compress.json.
        metrics: one row per model, all on ONNX Runtime, the first the reference.
        details: the quantizer's choices: ``format``, ``per_channel``, ``candidates`` (each measured
            candidate's batch-1 latency) and ``float_nodes`` (nodes left in fp32).
        data_name: the dataset they were measured on.
    """

    out: Path
    metrics: list[ModelMetrics]
    details: dict[str, Any]
    data_name: str

    @property
    def int8_path(self) -> Path:
        """The quantized model file."""
        return self.out / "int8.onnx"


def quantize_config(options: QuantizeOptions) -> QuantizeConfig:
    """The checked QuantizeConfig the options stand for (a ConfigError for a value out of range)."""
    from distil.config import QuantizeConfig, checked_config

    return checked_config(
        QuantizeConfig,
        "distil quantize options",
        mode=options.mode,
        calibration_size=options.calibration_size,
        format=options.format,
        per_channel=options.per_channel,
        exclude=list(options.exclude),
    )


def quantize_checkpoint(
    options: QuantizeOptions, *, log: Callable[[str], None] | None = None, progress: Any = None
) -> QuantizeOutcome:
    """Quantize a checkpoint to int8 with ONNX Runtime and measure fp32 vs int8 on the same runtime.

    Args:
        options: the checkpoint, quantization and output settings.
        log: where progress lines go; None: nowhere.
        progress: the training progress display for QAT (see `distil.report.progress.make_progress`).

    Returns:
        The output directory, the metrics and the quantizer's choices.

    Raises:
        ConfigError: bad options or an unwritable `out` (checked before anything is loaded).
        CheckpointError: a checkpoint that cannot be loaded.
    """
    from distil.compress import compress_model
    from distil.config import CompressConfig, StudentTrainConfig
    from distil.resources import check_writable
    from distil.train.checkpoint import load_checkpoint

    check_writable(options.out)
    quantize_cfg = quantize_config(options)
    model, meta, bundle = load_checkpoint_and_data(
        options.checkpoint, options.data, options.model_name, trust_code=options.trust_code
    )
    if options.teacher:
        reference = load_checkpoint(options.teacher, trust_code=options.trust_code)[0].eval()
    else:
        reference = copy.deepcopy(model)
    cfg = CompressConfig(
        prune=None,
        finetune=StudentTrainConfig(epochs=options.epochs, lr=options.lr),
        quantize=quantize_cfg,
        latency_threads=options.threads,
    )
    result = compress_model(
        reference,
        model,
        meta["spec"],
        bundle,
        cfg,
        options.out,
        include_teacher=options.teacher is not None,
        log=log,
        progress=progress,
    )
    return QuantizeOutcome(Path(options.out), result.metrics, result.details["quantize"], bundle.name)
