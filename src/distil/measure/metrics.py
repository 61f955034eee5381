"""A model's row in a report (:class:`ModelMetrics`), and the teacher-versus-student ratios."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from distil.measure.tasks import DEFAULT_TASK


@dataclass
class ModelMetrics:
    """One model's row in a report.

    Attributes:
        name: Label shown in reports (e.g. ``"teacher"``).
        accuracy: Top-1 accuracy on the evaluation set, in [0, 1].
        agreement: Fraction of samples whose top-1 matches the teacher's; ``None`` for the teacher.
        params: Number of distinct parameters.
        bytes: Size of the weights file in bytes.
        macs: Multiply-accumulates for one sample.
        latency_b1_ms: Median latency at batch size 1, in ms; ``None`` if latency was not measured.
        throughput_b256: Samples per second at batch size 256; ``None`` if latency was not measured.
        latency_b1_spread: The batch-1 latency's relative spread across interleaved rounds
            (``LatencyResult.spread``); ``None`` if not measured that way.
        latency_reliable: ``False`` when the batch-1 latency is not to be trusted: its spread exceeds
            ``MAX_LATENCY_SPREAD``, or a model of identical architecture measured in the same run differs
            from it by more than their spreads allow (``latency_conflicts``).
        task: The task whose metrics were measured (``TASKS``); it says what ``accuracy`` and
            ``agreement`` count (samples for classification).
        extra: The task's other scalar metrics by name (none for classification).
        tokenizer: The tokenizer a language model read the test text with, when it is not the data's (a
            teacher with its own tokenizer); its per-token figures (``accuracy``, perplexity) are then per
            its own tokens and compare with no other row; bits per byte do. None: the data's.
    """

    name: str
    accuracy: float
    agreement: float | None
    params: int
    bytes: int
    macs: int
    latency_b1_ms: float | None = None
    throughput_b256: float | None = None
    latency_b1_spread: float | None = None
    latency_reliable: bool = True
    task: str = "classification"
    extra: dict[str, float | None] = field(default_factory=dict)
    tokenizer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the metrics as a plain, JSON-serializable dict.

        A classification row without extra metrics has exactly the keys it always had (``task`` and
        ``extra`` appear only when they say something; the latency's spread and reliability only when it
        was timed in rounds), so sidecars and run records stay as they were.
        """
        out = dataclasses.asdict(self)
        if self.task == DEFAULT_TASK and not self.extra:
            del out["task"], out["extra"]
        if self.latency_b1_spread is None:
            del out["latency_b1_spread"], out["latency_reliable"]
        if self.tokenizer is None:
            del out["tokenizer"]
        return out


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the division is undefined."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def compare(teacher: ModelMetrics, student: ModelMetrics) -> dict[str, float | None]:
    """Teacher-versus-student ratios; each is "bigger is better for the student".

    Args:
        teacher: The teacher's metrics.
        student: The student's metrics, measured in the same run.

    Returns:
        ``compression`` (teacher/student stored bytes: what a smaller file means; the params ratio when
        a size is unknown), ``bytes_ratio`` (the same bytes ratio), ``params_ratio`` (teacher/student
        parameter counts: 1.0 for an int8 copy of the same net), ``macs_ratio`` (teacher/student),
        ``speedup_b1`` (teacher/student latency at batch 1), ``throughput_ratio`` (student/teacher
        at batch 256), ``accuracy_change`` (student minus teacher, in percentage points). A ratio
        is ``None`` when a value is missing (latency not measured) or the denominator is 0;
        ``accuracy_change`` is ``None`` when the two read the text with different tokenizers
        (``ModelMetrics.tokenizer``: their per-token accuracies count different tokens).
    """
    params_ratio = _ratio(teacher.params, student.params)
    bytes_ratio = _ratio(teacher.bytes, student.bytes) if teacher.bytes else None
    return {
        "compression": bytes_ratio if bytes_ratio is not None else params_ratio,
        "bytes_ratio": bytes_ratio,
        "params_ratio": params_ratio,
        "macs_ratio": _ratio(teacher.macs, student.macs),
        "speedup_b1": _ratio(teacher.latency_b1_ms, student.latency_b1_ms),
        "throughput_ratio": _ratio(student.throughput_b256, teacher.throughput_b256),
        "accuracy_change": (
            (student.accuracy - teacher.accuracy) * 100 if teacher.tokenizer == student.tokenizer else None
        ),
    }
