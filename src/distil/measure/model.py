"""Everything a report shows for one model: quality, size, compute and (optionally) latency."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from distil.data.bundle import SampleSplit, Split
from distil.measure._util import _model_device
from distil.measure.compute import count_macs
from distil.measure.latency import time_models
from distil.measure.metrics import ModelMetrics
from distil.measure.quality import predict
from distil.measure.size import count_parameters, state_dict_bytes, weights_bytes
from distil.measure.tasks import (
    DEFAULT_TASK,
    MetricInputs,
    has_streaming,
    split_quality,
    task_metrics,
    task_predictions,
)

# Samples per forward pass of an evaluation: bounds memory, not results.
PREDICT_BATCH_SIZE = 512
# The same for blocks of tokens, whose (B, T, V) logits are large.
TOKEN_BATCH_SIZE = 32


def measure_model(
    name: str,
    model: nn.Module,
    x_eval: Tensor,
    y_eval: Tensor,
    *,
    input_shape: tuple[int, ...],
    teacher_logits: Tensor | None = None,
    weights_path: str | Path | None = None,
    latency: bool = True,
    min_run_time: float = 0.5,
    task: str = DEFAULT_TASK,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
) -> ModelMetrics:
    """Measure everything a report shows for one model.

    Args:
        name: Label for the report.
        model: The model, on the device to evaluate on.
        x_eval: Evaluation inputs ``(N, *input_shape)``.
        y_eval: Evaluation labels ``(N,)`` (or ``(N, T)`` for sequence outputs).
        input_shape: Shape of one sample, for MACs and latency.
        teacher_logits: The teacher's logits on ``x_eval``; gives ``agreement`` when set.
        weights_path: A saved weights file whose size is reported; otherwise the size of the
            model's safetensors serialization.
        latency: Measure latency (batch 1) and throughput (batch 256); slow-ish, so optional.
        min_run_time: Seconds per latency measurement.
        task: Which metrics measure quality (a ``TASKS`` name); classification by default.
        mask: ``(N,)`` or ``(N, T)`` bool, the evaluation positions that count.
        vocab_size: for a model of token ids (a text classifier), their vocabulary: MACs and latency are
            then of random ids in ``[0, vocab_size)`` rather than floats.

    Returns:
        The model's metrics.

    Raises:
        ConfigError: An unknown task.
    """
    if has_streaming(task) and mask is None:
        # The one streaming path, on the tensors as an in-memory split; agreement from the teacher's decisions.
        reference = task_predictions(task, teacher_logits).cpu() if teacher_logits is not None else None
        return measure(
            model,
            Split(x_eval, y_eval),
            task,
            name=name,
            input_shape=input_shape,
            reference=reference,
            weights_path=weights_path,
            latency=latency,
            min_run_time=min_run_time,
            batch_size=PREDICT_BATCH_SIZE,
            vocab_size=vocab_size,
        ).metrics
    # A task without streaming metrics, or a mask: whole logits.
    logits = predict(model, x_eval)
    quality = task_metrics(task, MetricInputs(logits, y_eval, teacher_logits, mask))
    metrics = _row(name, model, quality, task, weights_path, input_shape, vocab_size)
    if latency:
        time_models([metrics], [model], input_shape, min_run_time=min_run_time, vocab_size=vocab_size)
    return metrics


def measure_token_model(
    name: str,
    model: nn.Module,
    split: SampleSplit,
    *,
    vocab_size: int,
    reference: Tensor | None = None,
    weights_path: str | Path | None = None,
    latency: bool = True,
    min_run_time: float = 0.5,
    batch_size: int = 32,
    task: str = "language-modeling",
    token_bytes: Tensor | None = None,
) -> tuple[ModelMetrics, Tensor]:
    """Measure a token model (a language model) for a report, reading `split` batch by batch.

    Quality is the task's streaming metrics (next-token accuracy, perplexity, mean NLL and, given the
    teacher's `reference` predictions, next-token agreement), so the (N, T, V) logits are never held
    whole. MACs and ``latency_b1_ms`` are of scoring one block of T tokens (random ids); the batch-256
    throughput is not measured for token models (``None``): generation latency per token
    (``distil.run.lm_report``) is their speed figure.

    Args:
        name: label for the report.
        model: the model, on the device to evaluate on.
        split: the evaluation blocks ((N, T) ids and next-token labels).
        vocab_size: the tokenizer's vocabulary (the dummy ids' range).
        reference: the teacher's top-1 predictions on `split` ((N, T)), for agreement.
        weights_path: a saved weights file whose size is reported; else the safetensors size.
        latency: time one block's forward pass at batch 1.
        min_run_time: seconds per latency measurement.
        batch_size: blocks per forward pass of the evaluation.
        task: a ``TASKS`` name with streaming metrics.
        token_bytes: ``(V,)`` the bytes each token id spells: adds ``bits_per_byte`` and
            ``byte_perplexity`` (see :func:`measure`).

    Returns:
        (the metrics, this model's top-1 predictions on `split`: the reference of later models).
    """
    measured = measure(
        model,
        split,
        task,
        name=name,
        reference=reference,
        weights_path=weights_path,
        latency=latency,
        throughput=False,
        min_run_time=min_run_time,
        batch_size=batch_size,
        vocab_size=vocab_size,
        token_bytes=token_bytes,
    )
    assert measured.predictions is not None
    return measured.metrics, measured.predictions


@dataclass(frozen=True)
class Measured:
    """What :func:`measure` found for one model.

    Attributes:
        metrics: The report row (latency filled in only when timed).
        details: The task's breakdowns (classification: ``per_class_accuracy``, NaN for a class with no
            test samples); empty when ``num_classes`` was not given.
        predictions: The model's top-1 predictions on the split (CPU): the reference of later models.
    """

    metrics: ModelMetrics
    details: dict[str, list[float]]
    predictions: Tensor | None


def measure(
    model: nn.Module,
    split: SampleSplit,
    task: str = DEFAULT_TASK,
    *,
    name: str = "model",
    input_shape: tuple[int, ...] | None = None,
    reference: Tensor | None = None,
    weights_path: str | Path | None = None,
    latency: bool = True,
    throughput: bool = True,
    min_run_time: float = 0.5,
    batch_size: int = PREDICT_BATCH_SIZE,
    vocab_size: int | None = None,
    num_classes: int | None = None,
    token_bytes: Tensor | None = None,
) -> Measured:
    """Measure one model on a split for a report, for every task the same way: quality streamed batch by
    batch (summed counts, never the whole logits), size, MACs and, optionally, latency.

    Args:
        model: the model, on the device to evaluate on.
        split: the evaluation data (in memory or read from disk batch by batch).
        task: a ``TASKS`` name with streaming metrics.
        name: label for the report.
        input_shape: one sample's shape, for MACs and latency; None: the split's ``sample_shape``.
        reference: the teacher's top-1 predictions on `split` (``Measured.predictions`` of the teacher),
            for agreement.
        weights_path: a saved weights file whose size is reported; else the safetensors size.
        latency: time the model alone (batch 1, and batch ``THROUGHPUT_BATCH_SIZE`` with `throughput`); a
            run times all its models together instead (``time_models``).
        throughput: with `latency`, also the batch throughput (token models: False, their speed figure is
            generation latency).
        min_run_time: seconds per latency measurement.
        batch_size: samples per forward pass of the evaluation (bounds memory, not results).
        vocab_size: for a model of token ids, their vocabulary: MACs and latency are of random ids.
        num_classes: the class count, for the task's breakdowns (per-class accuracy).
        token_bytes: for a language model, ``(V,)`` the bytes each token id spells
            (`distil.measure.bytes.token_byte_lengths`): the row then also has ``bits_per_byte`` and
            ``byte_perplexity``, which compare models with different tokenizers; None: per token only.

    Returns:
        The row, the breakdowns and the model's top-1 predictions.

    Raises:
        ConfigError: an unknown task, or one without streaming metrics.
        DataError: an empty split, or labels outside ``[0, num_classes)``.
    """
    shape = tuple(input_shape) if input_shape is not None else tuple(split.sample_shape)
    quality = split_quality(
        model,
        split,
        task,
        reference=reference,
        batch_size=batch_size,
        keep_predictions=True,
        num_classes=num_classes,
        token_bytes=token_bytes,
    )
    metrics = _row(name, model, dict(quality.metrics), task, weights_path, shape, vocab_size)
    if latency:
        time_models(
            [metrics], [model], shape, throughput=throughput, min_run_time=min_run_time, vocab_size=vocab_size
        )
    return Measured(metrics, quality.details, quality.predictions)


def _row(
    name: str,
    model: nn.Module,
    quality: dict[str, float | None],
    task: str,
    weights_path: str | Path | None,
    input_shape: tuple[int, ...],
    vocab_size: int | None,
) -> ModelMetrics:
    """A report row from a model's quality metrics (``accuracy``, ``agreement``, the rest as extra), its
    size and its MACs."""
    return ModelMetrics(
        name=name,
        accuracy=float(quality.pop("accuracy") or 0.0),
        agreement=quality.pop("agreement", None),
        task=task,
        extra=quality,
        params=count_parameters(model),
        bytes=weights_bytes(weights_path) if weights_path is not None else state_dict_bytes(model),
        macs=count_macs(model, input_shape, device=_model_device(model), vocab_size=vocab_size),
    )
