"""The numbers every distil report uses: size, compute, speed and quality, teacher and student alike.

Everything here measures a model without changing it: training flags and torch's thread count
are restored on exit, so a measurement can sit anywhere in a pipeline. Teacher and student are
measured by the same functions in the same process, so their ratios compare like with like.

Modules, one job each: :mod:`~distil.measure.size` (parameters, bytes), :mod:`~distil.measure.compute`
(MACs), :mod:`~distil.measure.timing` (the one timing loop), :mod:`~distil.measure.latency` (torch and
ONNX latency, a run's models timed together), :mod:`~distil.measure.quality` (predictions and metrics),
:mod:`~distil.measure.tasks` (the task registry and streaming sums), :mod:`~distil.measure.metrics` (a
report row and the ratios), :mod:`~distil.measure.model` (``measure``: everything for one model, streamed over a split), and
:mod:`~distil.measure.lm` (generation latency and greedy samples of language models).
"""

from __future__ import annotations

from distil.measure.compute import count_macs
from distil.measure.latency import (
    MAX_LATENCY_SPREAD,
    THROUGHPUT_BATCH_SIZE,
    latency_conflicts,
    measure_latencies,
    measure_latency,
    measure_onnx_latency,
    time_models,
)
from distil.measure.metrics import ModelMetrics, compare
from distil.measure.model import Measured, measure, measure_model, measure_token_model
from distil.measure.quality import (
    accuracy,
    agreement,
    next_token_agreement,
    per_class_accuracy,
    perplexity,
    predict,
    predict_split,
    token_nll,
)
from distil.measure.size import count_parameters, state_dict_bytes, weights_bytes
from distil.measure.tasks import (
    DEFAULT_TASK,
    TASKS,
    MetricInputs,
    SplitEvaluation,
    SplitQuality,
    StreamingMetrics,
    Task,
    register_task,
    split_evaluation,
    split_metrics,
    split_quality,
    split_sums,
    task_details,
    task_metrics,
)
from distil.measure.timing import LATENCY_ROUNDS, MAX_LATENCY_ROUNDS, LatencyResult

__all__ = [
    "DEFAULT_TASK",
    "LATENCY_ROUNDS",
    "MAX_LATENCY_ROUNDS",
    "MAX_LATENCY_SPREAD",
    "TASKS",
    "THROUGHPUT_BATCH_SIZE",
    "LatencyResult",
    "Measured",
    "MetricInputs",
    "ModelMetrics",
    "SplitEvaluation",
    "SplitQuality",
    "StreamingMetrics",
    "Task",
    "accuracy",
    "agreement",
    "compare",
    "count_macs",
    "count_parameters",
    "latency_conflicts",
    "measure",
    "measure_latencies",
    "measure_latency",
    "measure_model",
    "measure_onnx_latency",
    "measure_token_model",
    "next_token_agreement",
    "per_class_accuracy",
    "perplexity",
    "predict",
    "predict_split",
    "register_task",
    "split_evaluation",
    "split_metrics",
    "split_quality",
    "split_sums",
    "state_dict_bytes",
    "task_details",
    "task_metrics",
    "time_models",
    "token_nll",
    "weights_bytes",
]
