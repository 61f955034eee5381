"""Everything a report shows for one model: quality, size, compute and (optionally) latency."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from distil.data.bundle import SampleSplit
from distil.measure._util import _model_device
from distil.measure.compute import count_macs
from distil.measure.latency import time_models
from distil.measure.metrics import ModelMetrics
from distil.measure.quality import predict
from distil.measure.size import count_parameters, state_dict_bytes, weights_bytes
from distil.measure.tasks import DEFAULT_TASK, MetricInputs, split_metrics, task_metrics


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
    logits = predict(model, x_eval)
    quality = task_metrics(task, MetricInputs(logits, y_eval, teacher_logits, mask))
    metrics = ModelMetrics(
        name=name,
        accuracy=quality.pop("accuracy"),
        agreement=quality.pop("agreement", None),
        task=task,
        extra=quality,
        params=count_parameters(model),
        bytes=weights_bytes(weights_path) if weights_path is not None else state_dict_bytes(model),
        macs=count_macs(model, input_shape, device=_model_device(model), vocab_size=vocab_size),
    )
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

    Returns:
        (the metrics, this model's top-1 predictions on `split`: the reference of later models).
    """
    quality, preds = split_metrics(
        model, split, task, reference=reference, batch_size=batch_size, keep_predictions=True
    )
    assert preds is not None
    shape = tuple(split.sample_shape)
    metrics = ModelMetrics(
        name=name,
        accuracy=float(quality.pop("accuracy") or 0.0),
        agreement=quality.pop("agreement", None),
        task=task,
        extra=quality,
        params=count_parameters(model),
        bytes=weights_bytes(weights_path) if weights_path is not None else state_dict_bytes(model),
        macs=count_macs(model, shape, device=_model_device(model), vocab_size=vocab_size),
    )
    if latency:
        time_models(
            [metrics], [model], shape, throughput=False, min_run_time=min_run_time, vocab_size=vocab_size
        )
    return metrics, preds
