"""Tasks: which quality metrics a model is measured by (``TASKS``), and their streaming sums over a split."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS, call_model, to_device
from distil.data.bundle import SampleSplit
from distil.errors import ConfigError, DataError
from distil.measure._util import _check_positive, _eval_mode, _model_device
from distil.measure.dense import dense_finish, dense_sums, pixel_predictions
from distil.measure.dense import sums_size as dense_size
from distil.measure.embedding import RECALL_KS, embedding_finish, embedding_sums, recall_metrics
from distil.measure.embedding import SUMS_SIZE as EMBEDDING_SUMS_SIZE
from distil.measure.multilabel import decisions, multilabel_finish, multilabel_sums, sums_size
from distil.measure.quality import accuracy, agreement, next_token_agreement, per_class_accuracy, perplexity
from distil.measure.regression import regression_finish, regression_sums
from distil.measure.regression import sums_size as regression_size
from distil.registry import Registry


@dataclass(frozen=True)
class MetricInputs:
    """What a task metric sees: one model's outputs on the evaluation set.

    Attributes:
        logits: ``(N, K)`` or ``(N, T, V)``.
        labels: ``(N,)`` classes or ``(N, T)`` tokens (``IGNORE_INDEX`` where a position has none).
        teacher_logits: The reference (teacher) model's logits, same shape; ``None`` for the teacher.
        mask: ``(N,)`` or ``(N, T)`` bool, the positions that count; ``None`` when all do.
        num_classes: The class (vocabulary) count, when known.
    """

    logits: Tensor
    labels: Tensor
    teacher_logits: Tensor | None = None
    mask: Tensor | None = None
    num_classes: int | None = None


Metric = Callable[[MetricInputs], Any]


@dataclass(frozen=True)
class Task:
    """The quality metrics of one kind of model output.

    Attributes:
        name: The key in ``TASKS`` (and ``ModelMetrics.task``).
        metrics: Scalar metrics by name, each ``(MetricInputs) -> float | None`` (``None``: not
            applicable, e.g. agreement of the teacher itself). ``accuracy`` (required) and
            ``agreement`` fill the report's columns; the others go to ``ModelMetrics.extra``.
        details: Breakdowns by name, each ``(MetricInputs) -> list[float] | None`` (e.g. per-class
            accuracy), written to a checkpoint's sidecar (NaN as null) rather than the report table.
        streaming: The same scalar metrics computed batch by batch from summed counts (evaluation of a
            split too large to hold its logits, sharded over processes with one reduction); ``None``:
            the task is evaluated on whole logits only (or by `streaming_for`).
        streaming_for: For a task whose sums are per output (multilabel: per label), its streaming
            metrics for a model of that many outputs; used where `streaming` is None.
        main: The name the report gives the ``accuracy`` column for this task (e.g. ``mAP``).
        formats: How the report writes a metric (a format spec by metric name, ``accuracy`` for the main
            column); unnamed metrics are shares, written as percentages (``.2%``).
        whole: Metrics that need the whole split at once (embedding: neighbours for recall@k):
            ``(predictions, labels, reference) -> {name: float | None}`` on the predictions and labels kept
            over a streamed pass (CPU), updating the streamed metrics; a per-epoch evaluation keeps only
            the streamed ones. None: every metric is a sum.
    """

    name: str
    metrics: dict[str, Metric]
    details: dict[str, Metric] = field(default_factory=dict)
    streaming: StreamingMetrics | None = None
    streaming_for: Callable[[int], StreamingMetrics] | None = None
    main: str = "accuracy"
    formats: dict[str, str] = field(default_factory=dict)
    whole: Callable[[Tensor, Tensor, Tensor | None], dict[str, float | None]] | None = None


@dataclass(frozen=True)
class StreamingMetrics:
    """A task's metrics as sums over batches: ``sums`` per batch, added up (and across processes), then
    ``finish`` turns the totals into metrics by name.

    Attributes:
        sums: ``(logits, labels, reference, token_bytes) -> (K,) float64`` for one batch, on the logits'
            device and without a host sync; ``reference`` is the teacher's top-1 predictions for that batch
            (same shape as ``labels``) or ``None``; ``token_bytes`` is the ``(V,)`` count of bytes each
            token id spells (0 for special tokens, on the logits' device) when the data's tokenizer is
            known to be byte-level, else ``None`` (tasks that do not measure per byte ignore it).
        finish: ``(K,) float64 totals (CPU) -> {name: float | None}``; ``accuracy`` is required.
        size: K, the number of sums (a process with no samples contributes K zeros).
        detail_sums: The task's breakdowns (``Task.details``) as sums too: ``(preds, labels, num_classes)
            -> (D,) float64`` for one batch (e.g. per-class hits and counts); ``None``: no breakdowns.
        detail_finish: ``(D,) totals -> {name: list of float, NaN where undefined}``.
        predict: ``logits -> predictions``: what a model decides, the reference its agreement is measured
            against (classification: the top-1 class; multilabel: the (B, L) labels whose logit is > 0).
    """

    sums: Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor]
    finish: Callable[[Tensor], dict[str, float | None]]
    size: int
    detail_sums: Callable[[Tensor, Tensor, int], Tensor] | None = None
    detail_finish: Callable[[Tensor], dict[str, list[float]]] | None = None
    predict: Callable[[Tensor], Tensor] = field(default=lambda logits: logits.argmax(-1))


TASKS: Registry[Task] = Registry("task")


DEFAULT_TASK = "classification"
# Language models: next-token metrics, and bits per byte where the tokenizer's bytes are known.
LM_TASK = "language-modeling"


def register_task(task: Task) -> Task:
    """Add ``task`` to ``TASKS``; a task needs an ``accuracy`` metric (the report's quality column).

    Raises:
        ValueError: No ``accuracy`` metric, or the name is taken.
    """
    if "accuracy" not in task.metrics:
        raise ValueError(f"task {task.name!r} needs an 'accuracy' metric (the report's quality column)")
    TASKS.register(task.name)(task)
    return task


register_task(
    Task(
        name="classification",
        metrics={
            "accuracy": lambda m: accuracy(m.logits, m.labels, m.mask),
            "agreement": lambda m: (
                agreement(m.logits, m.teacher_logits, m.mask) if m.teacher_logits is not None else None
            ),
        },
        details={
            "per_class_accuracy": lambda m: (
                per_class_accuracy(m.logits, m.labels, m.num_classes, m.mask)
                if m.num_classes is not None
                else None
            ),
        },
        streaming=StreamingMetrics(
            sums=lambda logits, labels, ref, _bytes: _hit_sums(logits.argmax(-1), labels, ref),
            finish=lambda t: {
                # float32, as `accuracy` divides: a sharded evaluation equals a single-process one.
                "accuracy": float(t[0].float() / t[1].float().clamp(min=1)),
                "agreement": float(t[2].float() / t[1].float().clamp(min=1)) if t[3] > 0 else None,
            },
            size=4,
            detail_sums=lambda preds, labels, k: _class_sums(preds, labels, k),
            detail_finish=lambda t: {"per_class_accuracy": _class_finish(t)},
        ),
    )
)


def _class_sums(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[correct of class 0..K-1, samples of class 0..K-1] over positions not IGNORE_INDEX, (2K,) float64.

    Raises:
        DataError: A label outside ``[0, num_classes)`` (as :func:`per_class_accuracy`).
    """
    labels = labels.to(preds.device).long()
    valid = labels != IGNORE_INDEX
    preds, labels = preds[valid], labels[valid]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"labels must be in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]; "
            "check num_classes."
        )
    total = torch.bincount(labels, minlength=num_classes)
    correct = torch.bincount(labels[preds == labels], minlength=num_classes)
    return torch.cat([correct, total]).double()


def _class_finish(t: Tensor) -> list[float]:
    """Per-class accuracy from :func:`_class_sums`' totals; NaN for a class with no samples."""
    correct, total = t.chunk(2)
    return [c / n if n else float("nan") for c, n in zip(correct.tolist(), total.tolist(), strict=True)]


def _hit_sums(preds: Tensor, labels: Tensor, reference: Tensor | None) -> Tensor:
    """[correct, counted, agreeing with `reference`, reference given] over positions not IGNORE_INDEX."""
    labels = labels.to(preds.device)
    valid = labels != IGNORE_INDEX
    agree = (preds == reference.to(preds.device)) & valid if reference is not None else valid[:0]
    return torch.stack(
        [
            ((preds == labels) & valid).sum().double(),
            valid.sum().double(),
            agree.sum().double(),
            torch.tensor(float(reference is not None), dtype=torch.float64, device=preds.device),
        ]
    )


def _token_sums(
    logits: Tensor, labels: Tensor, reference: Tensor | None, token_bytes: Tensor | None
) -> Tensor:
    """[correct, counted, agreeing, reference given, summed NLL (nats), bytes the labelled tokens spell,
    bytes known] of one (B, T, V) batch (the last two 0 without `token_bytes`)."""
    labels = labels.to(logits.device)
    nll = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels.reshape(-1).long(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    spelled = torch.zeros(2, dtype=torch.float64, device=logits.device)
    if token_bytes is not None:
        ids = labels[labels != IGNORE_INDEX].long()
        # An id past the table (a model vocabulary padded beyond the tokenizer's) spells nothing, as a special.
        inside = ids < token_bytes.numel()
        lengths = torch.where(inside, token_bytes[ids.clamp(max=token_bytes.numel() - 1)], 0)
        spelled = torch.stack([lengths.sum().double(), spelled.new_ones(())])
    return torch.cat([_hit_sums(logits.argmax(-1), labels, reference), nll.double().reshape(1), spelled])


def _token_finish(t: Tensor) -> dict[str, float | None]:
    """Next-token accuracy, agreement, perplexity and mean NLL per token; with the bytes known, also bits
    per byte (summed NLL / bytes spelled / ln 2: the same quantity for any tokenizer of the text, so
    students with different vocabularies compare) and per-byte perplexity (2 ** bits per byte)."""
    count = float(t[1])
    if count == 0:
        raise DataError("language-model evaluation: no labelled token positions in the split.")
    mean_nll = float(t[4]) / count
    out: dict[str, float | None] = {
        "accuracy": float(t[0]) / count,
        "agreement": float(t[2]) / count if t[3] > 0 else None,
        "perplexity": float(torch.tensor(mean_nll, dtype=torch.float64).exp()),
        "loss": mean_nll,
    }
    if t[6] > 0:
        num_bytes = float(t[5])
        bpb = float(t[4]) / num_bytes / math.log(2) if num_bytes > 0 else None
        out["bits_per_byte"] = bpb
        out["byte_perplexity"] = 2.0**bpb if bpb is not None else None
    return out


register_task(
    Task(
        name=LM_TASK,
        metrics={
            # Next-token accuracy: the report's quality column.
            "accuracy": lambda m: accuracy(m.logits, m.labels, m.mask),
            "agreement": lambda m: (
                next_token_agreement(m.logits, m.teacher_logits, m.labels, m.mask)
                if m.teacher_logits is not None
                else None
            ),
            "perplexity": lambda m: perplexity(m.logits, m.labels, m.mask),
        },
        streaming=StreamingMetrics(sums=_token_sums, finish=_token_finish, size=7),
    )
)


MULTILABEL_TASK = "multilabel"


def _from_streaming(streaming_for: Callable[[int], StreamingMetrics], name: str) -> Metric:
    """One metric on whole outputs through the task's own streaming sums: one batch, summed and finished."""

    def metric(m: MetricInputs) -> float | None:
        stream = streaming_for(output_width(m.logits))
        ref = stream.predict(m.teacher_logits) if m.teacher_logits is not None else None
        return stream.finish(stream.sums(m.logits, m.labels, ref, None).cpu())[name]

    return metric


def _multilabel_streaming(width: int) -> StreamingMetrics:
    """Multilabel's streaming metrics for `width` labels (`distil.measure.multilabel`)."""
    return StreamingMetrics(
        sums=lambda logits, labels, ref, _bytes: multilabel_sums(logits, labels, ref),
        finish=lambda t: multilabel_finish(t, width),
        size=sums_size(width),
        predict=decisions,
    )


register_task(
    Task(
        name=MULTILABEL_TASK,
        metrics={
            n: _from_streaming(_multilabel_streaming, n)
            for n in ("accuracy", "agreement", "mAP", "micro_f1", "macro_f1")
        },
        streaming_for=_multilabel_streaming,
        main="mAP",
    )
)


REGRESSION_TASK = "regression"


def _regression_streaming(width: int) -> StreamingMetrics:
    """Regression's streaming metrics for `width` outputs (`distil.measure.regression`); a model's
    prediction is its outputs themselves (the teacher's are the reference of agreement)."""
    return StreamingMetrics(
        sums=lambda out, labels, ref, _bytes: regression_sums(out, labels, ref),
        finish=lambda t: regression_finish(t, width),
        size=regression_size(width),
        predict=lambda out: out,
    )


register_task(
    Task(
        name=REGRESSION_TASK,
        metrics={
            n: _from_streaming(_regression_streaming, n)
            for n in ("accuracy", "agreement", "r2", "mae", "rmse")
        },
        streaming_for=_regression_streaming,
        main="r2",
        formats={"accuracy": ".4f", "agreement": ".4f", "r2": ".4f", "mae": ".4g", "rmse": ".4g"},
    )
)


EMBEDDING_TASK = "embedding"

_EMBEDDING_STREAMING = StreamingMetrics(
    sums=lambda out, labels, ref, _bytes: embedding_sums(out, labels, ref),
    finish=embedding_finish,
    size=EMBEDDING_SUMS_SIZE,
    predict=lambda out: out,  # the embedding itself: the teacher's is the reference of agreement
)


def _embedding_metric(name: str) -> Metric:
    """One embedding metric on whole outputs: the streamed cosines, then recall@k on the same outputs."""

    def metric(m: MetricInputs) -> float | None:
        found = embedding_finish(embedding_sums(m.logits, m.labels, m.teacher_logits).cpu())
        found.update(recall_metrics(m.logits.cpu(), m.labels.cpu(), _cpu(m.teacher_logits)))
        return found[name]

    return metric


def _cpu(t: Tensor | None) -> Tensor | None:
    return t.cpu() if t is not None else None


register_task(
    Task(
        name=EMBEDDING_TASK,
        metrics={
            n: _embedding_metric(n)
            for n in (
                "accuracy",
                "agreement",
                *(f"recall@{k}" for k in RECALL_KS[:-1]),
                *(f"teacher_recall@{k}" for k in RECALL_KS[:-1]),
                "cos_target",
                "cos_teacher",
            )
        },
        streaming=_EMBEDDING_STREAMING,
        main=f"recall@{RECALL_KS[-1]}",
        formats={"cos_target": ".4f", "cos_teacher": ".4f"},
        whole=recall_metrics,
    )
)


DENSE_TASK = "dense"


def _dense_streaming(width: int) -> StreamingMetrics:
    """Dense prediction's streaming metrics for `width` classes per pixel (`distil.measure.dense`)."""
    return StreamingMetrics(
        sums=lambda logits, labels, ref, _bytes: dense_sums(logits, labels, ref),
        finish=lambda t: dense_finish(t, width),
        size=dense_size(width),
        predict=pixel_predictions,
    )


register_task(
    Task(
        name=DENSE_TASK,
        metrics={
            n: _from_streaming(_dense_streaming, n)
            for n in ("accuracy", "agreement", "mIoU", "pixel_accuracy")
        },
        streaming_for=_dense_streaming,
        main="mIoU",
    )
)


def output_width(logits: Tensor) -> int:
    """The width a task's per-output sums are sized by: K of per-pixel (B, K, H, W) logits, else the last
    dimension (classes, labels, target columns)."""
    return int(logits.shape[1] if logits.dim() == 4 else logits.shape[-1])


def task_metrics(task: str, inputs: MetricInputs) -> dict[str, Any]:
    """The scalar metrics of ``task`` on ``inputs``, by name.

    Raises:
        ConfigError: An unknown task (the valid ones and the closest match are listed).
    """
    return {name: metric(inputs) for name, metric in TASKS.get(task).metrics.items()}


def split_sums(
    model: nn.Module,
    split: SampleSplit,
    task: str,
    *,
    reference: Tensor | None = None,
    batch_size: int = 64,
    start: int = 0,
    stop: int | None = None,
    keep_predictions: bool = False,
    inference_mode: bool = True,
    token_bytes: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The streaming sums of ``task`` (:class:`StreamingMetrics`) over positions [start, stop) of a split.

    Batches are read from the split, so its logits are never held whole (a language model's (N, T, V)
    would not fit); the sums stay on the model's device until the end (no per-batch host sync).

    Args:
        model: the model; its training flags are restored afterwards.
        split: the evaluation data.
        task: a ``TASKS`` name with ``streaming`` metrics.
        reference: the teacher's top-1 predictions on the same positions (``(n,)`` or ``(n, T)``), for
            agreement; ``None``: no agreement.
        batch_size: samples per forward pass.
        start, stop: the positions evaluated (one process's shard).
        keep_predictions: also return this model's top-1 predictions (the reference of later models).
        inference_mode: False runs the forwards under `torch.no_grad` instead: an FSDP-sharded model keeps
            the buffers it gathers parameters into, and made under inference_mode they would break its
            next training step.
        token_bytes: ``(V,)`` the bytes each token id spells (`distil.measure.bytes.token_byte_lengths`),
            for a language model's bits per byte; None: not measured per byte.

    Returns:
        (sums (K,) float64 on the model's device, predictions on the CPU or None).

    Raises:
        ConfigError: an unknown task, or one without streaming metrics.
    """
    sums, _, preds, _ = _stream(
        model,
        split,
        _streaming(task),
        reference=reference,
        batch_size=batch_size,
        start=start,
        stop=stop,
        keep_predictions=keep_predictions,
        inference_mode=inference_mode,
        token_bytes=token_bytes,
    )
    if sums is None:
        raise DataError(f"{task} evaluation: the split holds no samples in [{start}, {stop}).")
    return sums, preds


def has_streaming(task: str) -> bool:
    """Whether `task` is measured batch by batch (fixed sums, or sums per output).

    Raises:
        ConfigError: an unknown task.
    """
    t = TASKS.get(task)
    return t.streaming is not None or t.streaming_for is not None


def _streaming(task: str, width: int | None = None) -> StreamingMetrics | Callable[[int], StreamingMetrics]:
    """The streaming metrics of `task`; for a task whose sums are per output and no `width` given, the
    function that makes them for a model's output width (resolved on the first batch).

    Raises:
        ConfigError: an unknown task, or one without streaming metrics.
    """
    t = TASKS.get(task)
    if t.streaming is None and t.streaming_for is not None:
        return t.streaming_for(width) if width is not None else t.streaming_for
    streaming = t.streaming
    if streaming is None:
        raise ConfigError(
            f"task {task!r} has no streaming metrics (Task.streaming), so it cannot be measured batch by "
            "batch over a split; register them, or measure whole logits with measure_model."
        )
    return streaming


def _stream(
    model: nn.Module,
    split: SampleSplit,
    streaming: StreamingMetrics | Callable[[int], StreamingMetrics],
    *,
    reference: Tensor | None,
    batch_size: int,
    start: int = 0,
    stop: int | None = None,
    keep_predictions: bool = False,
    inference_mode: bool = True,
    num_classes: int | None = None,
    token_bytes: Tensor | None = None,
    labels_out: list[Tensor] | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, StreamingMetrics | Callable[[int], StreamingMetrics]]:
    """One pass over [start, stop) of `split`: (the task's sums, its detail sums (given `num_classes` and
    detail sums) or None, the predictions (`StreamingMetrics.predict`) on the CPU or None, the streaming
    metrics, sized by the model's outputs if they were per output); sums are None for no samples. Given
    `labels_out`, each batch's labels are appended to it (on the CPU), for `Task.whole`."""
    _check_positive("batch_size", batch_size)
    device = _model_device(model)
    lengths = token_bytes.to(device=device, dtype=torch.long) if token_bytes is not None else None
    total: Tensor | None = None
    detail_total: Tensor | None = None
    preds: list[Tensor] = []
    offset = start
    with _eval_mode(model), torch.inference_mode() if inference_mode else torch.no_grad():
        for batch in split.batches(batch_size, start, stop):
            batch = to_device(batch, device)
            logits = call_model(model, batch[INPUTS])
            if not isinstance(streaming, StreamingMetrics):
                streaming = streaming(output_width(logits))  # sums per output: sized by the model's
            details = streaming.detail_sums if num_classes is not None else None
            n = logits.shape[0]
            ref = reference[offset - start : offset - start + n] if reference is not None else None
            offset += n
            sums = streaming.sums(logits, batch[LABELS], ref, lengths)
            total = sums if total is None else total + sums
            if details is not None:
                assert num_classes is not None
                d = details(streaming.predict(logits), batch[LABELS], num_classes)
                detail_total = d if detail_total is None else detail_total + d
            if keep_predictions:
                preds.append(streaming.predict(logits).cpu())
            if labels_out is not None:
                labels_out.append(batch[LABELS].cpu())
    return total, detail_total, (torch.cat(preds) if keep_predictions and preds else None), streaming


def split_metrics(
    model: nn.Module,
    split: SampleSplit,
    task: str,
    *,
    reference: Tensor | None = None,
    batch_size: int = 64,
    keep_predictions: bool = False,
) -> tuple[dict[str, float | None], Tensor | None]:
    """The scalar metrics of ``task`` on a whole split, batch by batch (see :func:`split_sums`).

    Returns:
        (metrics by name, this model's top-1 predictions or None).
    """
    quality = split_quality(
        model, split, task, reference=reference, batch_size=batch_size, keep_predictions=keep_predictions
    )
    return quality.metrics, quality.predictions


@dataclass(frozen=True)
class SplitEvaluation:
    """A task's streaming metrics over a range of a split, for an evaluation shared across processes.

    `distil.train.distributed.sharded_metrics` has each process add up :meth:`sums` over its own shard,
    reduces them, and calls :meth:`finish` once; it knows nothing of tasks. Build one with
    :func:`split_evaluation`.

    Attributes:
        task: the ``TASKS`` name.
        streaming: its streaming metrics.
        batch_size: the default samples per forward pass.
        token_bytes: a language model's ``(V,)`` bytes per token id, for bits per byte; None: not measured.
    """

    task: str
    streaming: StreamingMetrics
    batch_size: int
    token_bytes: Tensor | None = None

    @property
    def size(self) -> int:
        """The number of sums (a process without samples contributes that many zeros)."""
        return self.streaming.size

    def sums(
        self,
        model: nn.Module,
        split: SampleSplit,
        *,
        start: int,
        stop: int,
        batch_size: int,
        inference_mode: bool,
    ) -> Tensor:
        """(K,) float64 sums over positions [start, stop) of `split`, on the model's device (:func:`split_sums`)."""
        sums, _ = split_sums(
            model,
            split,
            self.task,
            batch_size=batch_size,
            start=start,
            stop=stop,
            inference_mode=inference_mode,
            token_bytes=self.token_bytes,
        )
        return sums

    def finish(self, totals: Tensor) -> dict[str, float | None]:
        """The metrics by name from the (K,) totals (CPU) of every process."""
        return self.streaming.finish(totals)


def split_evaluation(
    task: str = DEFAULT_TASK, token_bytes: Tensor | None = None, *, width: int | None = None
) -> SplitEvaluation:
    """The per-epoch evaluation of `task`: its streaming metrics, 32 samples a batch for language models
    (whose outputs per sample are (T, V)) and 512 for other tasks; with `token_bytes` (a language model's
    bytes per token id) also bits per byte, from the same sums as `distil.measure.measure`'s.

    Args:
        task: a ``TASKS`` name.
        token_bytes: a language model's ``(V,)`` bytes per token id; None: not measured per byte.
        width: the model's output width (the data's ``num_classes``), for a task whose sums are per output.

    Raises:
        ConfigError: an unknown task, one without streaming metrics, or one with sums per output and no
            `width`.
    """
    streaming = _streaming(task, width)
    if not isinstance(streaming, StreamingMetrics):
        raise ConfigError(f"task {task!r} sums its metrics per output: pass the model's output width.")
    return SplitEvaluation(task, streaming, 32 if task == LM_TASK else 512, token_bytes)


@dataclass(frozen=True)
class SplitQuality:
    """A model's quality on a split, from one streamed pass.

    Attributes:
        metrics: The task's scalar metrics by name (``accuracy``, ``agreement``, ...).
        details: The task's breakdowns by name (classification: ``per_class_accuracy``, NaN for a class
            with no samples); empty without ``num_classes``.
        predictions: The model's top-1 predictions on the CPU (the reference of later models), or None.
    """

    metrics: dict[str, float | None]
    details: dict[str, list[float]]
    predictions: Tensor | None


def split_quality(
    model: nn.Module,
    split: SampleSplit,
    task: str,
    *,
    reference: Tensor | None = None,
    batch_size: int = 64,
    keep_predictions: bool = False,
    num_classes: int | None = None,
    token_bytes: Tensor | None = None,
) -> SplitQuality:
    """The metrics and breakdowns of ``task`` on a whole split, batch by batch: logits are never held
    whole, only summed counts (and, with `keep_predictions`, the top-1 predictions).

    Args:
        model: the model; its training flags are restored afterwards.
        split: the evaluation data.
        task: a ``TASKS`` name with ``streaming`` metrics.
        reference: the teacher's top-1 predictions on `split`, for agreement.
        batch_size: samples per forward pass.
        keep_predictions: also return this model's top-1 predictions.
        num_classes: the class count, for the task's breakdowns (per-class accuracy); None: none.
        token_bytes: ``(V,)`` the bytes each token id spells, for a language model's ``bits_per_byte``
            and ``byte_perplexity``; None: not measured per byte.

    Raises:
        ConfigError: an unknown task, or one without streaming metrics.
        DataError: an empty split, or a label outside ``[0, num_classes)``.
    """
    whole = TASKS.get(task).whole
    labels: list[Tensor] | None = [] if whole is not None else None
    sums, detail_sums, preds, streaming = _stream(
        model,
        split,
        _streaming(task, num_classes),
        reference=reference,
        batch_size=batch_size,
        keep_predictions=keep_predictions or whole is not None,
        num_classes=num_classes,
        token_bytes=token_bytes,
        labels_out=labels,
    )
    if sums is None:
        raise DataError(f"{task} evaluation: the split holds no samples; evaluate on a non-empty set.")
    assert isinstance(streaming, StreamingMetrics)  # resolved by the pass when sized per output
    details = {}
    if detail_sums is not None and streaming.detail_finish is not None:
        details = streaming.detail_finish(detail_sums.cpu())
    metrics = streaming.finish(sums.cpu())
    if whole is not None and preds is not None and labels is not None:
        metrics.update(whole(preds, torch.cat(labels), _cpu(reference)))
    return SplitQuality(metrics, details, preds if keep_predictions else None)


def task_predictions(task: str, logits: Tensor) -> Tensor:
    """What a model of `task` decides from its `logits` (top-1 class; multilabel: the labels turned on):
    the reference a later model's agreement is measured against."""
    t = TASKS.get(task)
    streaming = t.streaming or (t.streaming_for(output_width(logits)) if t.streaming_for else None)
    return streaming.predict(logits) if streaming is not None else logits.argmax(-1)


def task_details(task: str, inputs: MetricInputs) -> dict[str, Any]:
    """The non-scalar breakdowns of ``task`` on ``inputs`` (e.g. ``per_class_accuracy``), by name."""
    return {name: detail(inputs) for name, detail in TASKS.get(task).details.items()}
