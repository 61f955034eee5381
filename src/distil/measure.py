"""The numbers every distil report uses: size, compute, speed and quality, teacher and student alike.

Everything here measures a model without changing it: training flags and torch's thread count
are restored on exit, so a measurement can sit anywhere in a pipeline. Teacher and student are
measured by the same functions in the same process, so their ratios compare like with like.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distil.data.batch import IGNORE_INDEX, call_model, to_device
from distil.data.bundle import SampleSplit, Split
from distil.errors import CheckpointError, ConfigError, DataError, DistilError
from distil.registry import Registry

__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "LatencyResult",
    "MetricInputs",
    "ModelMetrics",
    "SplitEvaluation",
    "StreamingMetrics",
    "Task",
    "accuracy",
    "agreement",
    "compare",
    "count_macs",
    "count_parameters",
    "latency_conflicts",
    "measure_latencies",
    "measure_latency",
    "measure_model",
    "measure_onnx_latency",
    "measure_token_model",
    "next_token_agreement",
    "per_class_accuracy",
    "perplexity",
    "predict",
    "register_task",
    "split_evaluation",
    "split_metrics",
    "split_sums",
    "state_dict_bytes",
    "task_details",
    "task_metrics",
    "time_models",
    "token_nll",
    "weights_bytes",
]

# Throughput is reported at one fixed, large batch so runs and models stay comparable.
THROUGHPUT_BATCH_SIZE = 256
# Interleaved timing: at least this many rounds (each model timed once per round), so the spread across
# rounds means something; each round gives a model about min_run_time / LATENCY_ROUNDS of calls.
LATENCY_ROUNDS = 10
# A bound on rounds when a model turns out much faster than its calibration said (a busy machine then).
MAX_LATENCY_ROUNDS = 20 * LATENCY_ROUNDS
# A latency whose p10-p90 range across rounds exceeds this share of its median is marked unreliable; two
# identical architectures may differ by this much (or by what their spreads allow) before both are.
MAX_LATENCY_SPREAD = 0.5


@dataclass(frozen=True)
class LatencyResult:
    """Timing of repeated forward passes at one batch size.

    Attributes:
        batch_size: Samples per forward pass.
        median_ms: Median wall time of one forward pass, in milliseconds.
        iqr_ms: Interquartile range of the per-pass times, in milliseconds (spread, not error).
        throughput: Samples per second, ``batch_size / median seconds``.
        threads: CPU threads used, or ``None`` when the backend chose its own default.
        spread: ``(p90 - p10) / median`` of the per-round times (relative; 0.1 = the middle 80% of rounds
            lie within 10% of the median's size); 0.0 where the backend gave no rounds.
        samples_ms: The per-round times of one forward pass (the mean over that round's calls), in ms.
    """

    batch_size: int
    median_ms: float
    iqr_ms: float
    throughput: float
    threads: int | None
    spread: float = 0.0
    samples_ms: tuple[float, ...] = ()


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
        return out


# --------------------------------------------------------------------------------------------
# helpers


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every submodule's own flag afterwards.

    Restoring per module (not just ``model.train(was_training)``) keeps deliberately frozen
    submodules, e.g. a BatchNorm left in eval during fine-tuning, exactly as they were.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def _model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a stateless model)."""
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype the model computes in, so dummy inputs match (float32 by default)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _dummy_inputs(
    model: nn.Module, batch_size: int, input_shape: tuple[int, ...], vocab_size: int | None
) -> Tensor:
    """Inputs to time or count a model on: random token ids in [0, vocab_size) for a token model (an
    embedding takes ids, not floats), else standard-normal floats in the model's dtype."""
    device = _model_device(model)
    if vocab_size is not None:
        return torch.randint(0, vocab_size, (batch_size, *input_shape), device=device)
    return torch.randn((batch_size, *input_shape), device=device, dtype=_model_dtype(model))


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}.")


def _top1(logits_or_preds: Tensor, labels: Tensor | None = None) -> Tensor:
    """Class indices from ``(N, C)`` or ``(N, T, V)`` logits, or predictions passed through.

    Predictions are ``(N,)``, or ``(N, T)`` when ``labels`` of that shape tell them from ``(N, C)`` logits.
    """
    if labels is not None and logits_or_preds.shape == labels.shape:
        return logits_or_preds
    if logits_or_preds.ndim in (2, 3):
        return logits_or_preds.argmax(dim=-1)
    if logits_or_preds.ndim == 1:
        return logits_or_preds
    raise DataError(
        "expected logits of shape (N, C) or (N, T, V), or predictions of shape (N,), got "
        f"{tuple(logits_or_preds.shape)}."
    )


def _valid(preds: Tensor, mask: Tensor | None, labels: Tensor | None = None) -> Tensor | None:
    """The bool mask of positions that count: ``mask`` ((N,) or (N, T)), and-ed with labels that are not
    ``IGNORE_INDEX`` (unlabelled samples, padded positions); ``None`` when every position counts."""
    valid = None
    if labels is not None and labels.shape == preds.shape:
        # (N,) samples of an unlabelled transfer set, (N, T) padding: IGNORE_INDEX never counts.
        valid = labels.to(preds.device) != IGNORE_INDEX
    if mask is not None:
        m = mask.to(preds.device).bool()
        if m.ndim == 1 and preds.ndim == 2:
            m = m.unsqueeze(1).expand(preds.shape)
        if m.shape != preds.shape:
            raise DataError(
                f"mask {tuple(mask.shape)} does not fit predictions {tuple(preds.shape)}: give (N,) or (N, T)."
            )
        valid = m if valid is None else valid & m
    return valid


def _mean_over(hits: Tensor, valid: Tensor | None, what: str) -> float:
    """The fraction of true ``hits`` among the valid positions."""
    if valid is not None:
        hits = hits[valid]
    if hits.numel() == 0:
        raise DataError(f"{what}: no valid positions (the mask or the labels exclude them all).")
    return hits.float().mean().item()


def _check_same_length(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{what}: got {a.shape[0]} and {b.shape[0]} samples; they must be equal.")
    if a.shape[0] == 0:
        raise DataError(f"{what}: got 0 samples; evaluate on a non-empty set.")


# --------------------------------------------------------------------------------------------
# size


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Count the model's parameters.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        Number of scalar parameters; a parameter shared by several layers (tied weights)
        is counted once.
    """
    # parameters() already yields each Parameter object once, however many modules hold it.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def weights_bytes(path: str | Path) -> int:
    """Size on disk of a saved weights file.

    Args:
        path: A weights file (safetensors, ONNX, ...).

    Returns:
        File size in bytes.

    Raises:
        CheckpointError: If the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {str(path)!r}; pass the path of a saved file.")
    return path.stat().st_size


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes the model's safetensors file would have, without writing it.

    Tensors that alias each other (tied weights) are stored once, as ``safetensors`` would
    require; buffers (e.g. BatchNorm running statistics) are included because they ship too.

    Args:
        model: Any module.

    Returns:
        Length of the serialized safetensors payload, header included.
    """
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    seen_views: set[tuple[Any, ...]] = set()
    seen_storages: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        storage = tensor.untyped_storage().data_ptr()
        view = (storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if view in seen_views:  # the same tensor under a second name: stored once
            continue
        seen_views.add(view)
        t = tensor.detach().cpu()
        # A distinct view into shared memory is distinct data, but safetensors refuses shared
        # storage, so give it its own copy.
        t = t.clone() if storage in seen_storages else t.contiguous()
        seen_storages.add(storage)
        tensors[name] = t
    return len(save(tensors))


# --------------------------------------------------------------------------------------------
# compute


def count_macs(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device = "cpu",
    *,
    vocab_size: int | None = None,
) -> int:
    """Multiply-accumulates of one forward pass on one sample.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; biases,
    activations and normalizations are not counted), which reports 2 FLOPs per MAC.

    Args:
        model: The model, already on ``device``.
        input_shape: Shape of one sample, without the batch dimension, e.g. ``(3, 32, 32)``.
        device: Device for the dummy input.
        vocab_size: for a token model, the vocabulary its ids come from (``input_shape`` is then
            ``(T,)``: MACs of scoring one block of T tokens).

    Returns:
        MACs per sample.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if vocab_size is not None:
        x = torch.zeros((1, *input_shape), device=device, dtype=torch.long)
    else:
        x = torch.zeros((1, *input_shape), device=device, dtype=_model_dtype(model))
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2


# --------------------------------------------------------------------------------------------
# speed


def measure_latencies(
    models: Sequence[nn.Module],
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    threads: int | None = None,
    min_run_time: float = 0.5,
    vocab_size: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[LatencyResult]:
    """Time the forward passes of several models interleaved, so that they share the machine's moods.

    Timing one model after another lets a burst of load from another process land on one model only (two
    identical students measured 72 ms and 0.6 ms). Here every round times each model in turn (a block of
    calls lasting about ``min_run_time / LATENCY_ROUNDS``), for at least ``LATENCY_ROUNDS`` rounds and until
    each model has run ``min_run_time``: a burst then shows in every model's rounds, as spread, instead of
    shifting one median. Each model first warms up (one call, then blocks of 1, 10, 100... calls until one
    lasts a tenth of a round, which also sizes its blocks). Runs in eval mode under ``inference_mode`` on
    each model's device (CUDA is synchronized around every block); training flags and torch's thread count
    are restored afterwards.

    Args:
        models: The models to time; the same inputs' shape for all.
        input_shape: Shape of one sample, without the batch dimension.
        batch_size: Samples per forward pass.
        threads: CPU threads for torch; ``None`` keeps the current setting.
        min_run_time: Seconds of calls per model; longer gives steadier numbers.
        vocab_size: for token models, the vocabulary of their random input ids (one forward pass scores
            a whole block of ``input_shape = (T,)`` tokens).
        clock: Seconds from an arbitrary origin (tests pass a fake one).

    Returns:
        Per model, in order: the median, IQR and spread over rounds, the per-round samples, throughput.

    Raises:
        ConfigError: If ``batch_size``, ``threads`` or ``min_run_time`` is not positive, or no model is given.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("min_run_time", min_run_time)
    if threads is not None:
        _check_positive("threads", threads)
    if not models:
        raise ConfigError("measure_latencies needs at least one model to time; got none.")
    previous_threads = torch.get_num_threads()
    num_threads = threads if threads is not None else previous_threads
    inputs = [_dummy_inputs(m, batch_size, input_shape, vocab_size) for m in models]
    calls = [functools.partial(m, x) for m, x in zip(models, inputs, strict=True)]
    syncs = [_synchronizer(x.device) for x in inputs]
    block_s = min_run_time / LATENCY_ROUNDS
    try:
        torch.set_num_threads(num_threads)
        with ExitStack() as stack:
            for m in models:
                stack.enter_context(_eval_mode(m))
            stack.enter_context(torch.inference_mode())
            numbers = [_warm_up(call, sync, block_s, clock) for call, sync in zip(calls, syncs, strict=True)]
            samples: list[list[float]] = [[] for _ in models]
            spent = [0.0] * len(models)
            rounds = 0
            while rounds < LATENCY_ROUNDS or (min(spent) < min_run_time and rounds < MAX_LATENCY_ROUNDS):
                for i, (call, sync, number) in enumerate(zip(calls, syncs, numbers, strict=True)):
                    per_call = _time_block(call, sync, number, clock)
                    samples[i].append(per_call)
                    spent[i] += per_call * number
                rounds += 1
    finally:
        torch.set_num_threads(previous_threads)
    return [_latency_result(s, batch_size, num_threads) for s in samples]


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes a block's end mean its work is done: CUDA kernels run asynchronously, CPU ops do not."""
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    return lambda: None


def _time_block(
    call: Callable[[], object], sync: Callable[[], None], number: int, clock: Callable[[], float]
) -> float:
    """Seconds per call, averaged over `number` back-to-back calls."""
    sync()
    start = clock()
    for _ in range(number):
        call()
    sync()
    return max(clock() - start, 1e-9) / number


def _warm_up(
    call: Callable[[], object], sync: Callable[[], None], block_s: float, clock: Callable[[], float]
) -> int:
    """Warm a model up and return its calls per round: blocks of 1, 10, 100... calls until one lasts
    ``block_s / 10`` (the first call, which allocates and plans, is never timed)."""
    call()
    number = 1
    while True:
        per_call = _time_block(call, sync, number, clock)
        if per_call * number >= block_s / 10 or number >= 10**6:
            return max(1, round(block_s / per_call))
        number *= 10


def _latency_result(samples_s: list[float], batch_size: int, threads: int | None) -> LatencyResult:
    """The median, IQR and relative p10-p90 spread of per-round seconds per call."""
    cuts = statistics.quantiles(samples_s, n=20, method="inclusive")  # 5% steps: cuts[1] is p10
    median_s = statistics.median(samples_s)
    return LatencyResult(
        batch_size=batch_size,
        median_ms=median_s * 1e3,
        iqr_ms=(cuts[14] - cuts[4]) * 1e3,
        throughput=batch_size / median_s,
        threads=threads,
        spread=(cuts[17] - cuts[1]) / median_s,
        samples_ms=tuple(t * 1e3 for t in samples_s),
    )


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    threads: int | None = None,
    min_run_time: float = 0.5,
    vocab_size: int | None = None,
) -> LatencyResult:
    """Time one model's forward pass: ``measure_latencies`` with a list of one.

    Args:
        model: The model to time.
        input_shape: Shape of one sample, without the batch dimension.
        batch_size: Samples per forward pass.
        threads: CPU threads for torch; ``None`` keeps the current setting.
        min_run_time: Seconds to keep measuring; longer gives steadier numbers.
        vocab_size: for a token model, the vocabulary of its random input ids.

    Returns:
        The latency distribution and throughput.

    Raises:
        ConfigError: If ``batch_size``, ``threads`` or ``min_run_time`` is not positive.
    """
    return measure_latencies(
        [model],
        input_shape,
        batch_size=batch_size,
        threads=threads,
        min_run_time=min_run_time,
        vocab_size=vocab_size,
    )[0]


def _same_architecture(a: ModelMetrics, b: ModelMetrics) -> bool:
    """Same task, parameter count, MACs and stored bytes: the same network in the same dtype."""
    return (a.task, a.params, a.macs, a.bytes) == (b.task, b.params, b.macs, b.bytes)


def _timed(m: ModelMetrics) -> tuple[float, float] | None:
    """(batch-1 median ms, relative spread) of a row timed in rounds, else ``None``."""
    if m.latency_b1_ms is None or m.latency_b1_spread is None:
        return None
    return m.latency_b1_ms, m.latency_b1_spread


def _latencies_agree(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two (median ms, spread) timings fit one network: within ``MAX_LATENCY_SPREAD`` of each
    other, or with overlapping p10-p90 ranges (approximated as median * (1 +/- spread / 2))."""
    (fast, fast_spread), (slow, slow_spread) = sorted((a, b))
    if slow <= fast * (1 + MAX_LATENCY_SPREAD):
        return True
    return fast * (1 + fast_spread / 2) >= slow * (1 - slow_spread / 2)


def latency_conflicts(metrics: Sequence[ModelMetrics]) -> list[tuple[ModelMetrics, ModelMetrics]]:
    """Pairs of identical architectures timed together whose batch-1 latencies disagree.

    Two copies of one network (e.g. a scratch and a distilled student) run equally fast; medians that
    differ beyond their spreads say the machine was busy while one of them was timed. Only rows timed in
    rounds (with a ``latency_b1_spread``) are compared.

    Args:
        metrics: The rows of one run, in order.

    Returns:
        The disagreeing pairs, each in the order of `metrics`.
    """
    timed = [(m, t) for m in metrics if (t := _timed(m)) is not None]
    return [
        (a, b)
        for i, (a, ta) in enumerate(timed)
        for b, tb in timed[i + 1 :]
        if _same_architecture(a, b) and not _latencies_agree(ta, tb)
    ]


def time_models(
    metrics: Sequence[ModelMetrics],
    models: Sequence[nn.Module],
    input_shape: tuple[int, ...],
    *,
    throughput: bool = True,
    min_run_time: float = 0.5,
    vocab_size: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Fill in the latency (and throughput) of every row in one interleaved measurement, and say which
    batch-1 figures are unreliable (``ModelMetrics.latency_reliable``).

    Args:
        metrics: One row per model, updated in place.
        models: The models, in the order of `metrics`.
        input_shape: Shape of one sample, without the batch dimension.
        throughput: Also time batches of ``THROUGHPUT_BATCH_SIZE`` (samples per second).
        min_run_time: Seconds of calls per model and batch size.
        vocab_size: for token models, the vocabulary of their random input ids.
        clock: Seconds from an arbitrary origin (tests pass a fake one).
    """
    timer = functools.partial(
        measure_latencies, models, input_shape, min_run_time=min_run_time, vocab_size=vocab_size, clock=clock
    )
    b1 = timer()
    for m, r in zip(metrics, b1, strict=True):
        m.latency_b1_ms, m.latency_b1_spread = r.median_ms, r.spread
    if throughput:
        big = timer(batch_size=THROUGHPUT_BATCH_SIZE)
        for m, r in zip(metrics, big, strict=True):
            m.throughput_b256 = r.throughput
    in_conflict = {id(m) for pair in latency_conflicts(metrics) for m in pair}
    for m in metrics:
        if m.latency_b1_spread is not None:
            m.latency_reliable = m.latency_b1_spread <= MAX_LATENCY_SPREAD and id(m) not in in_conflict


def measure_onnx_latency(
    onnx_path: str | Path,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    min_run_time: float = 0.5,
    threads: int | None = None,
) -> LatencyResult:
    """Time an exported ONNX model with ONNX Runtime's CPU provider.

    Args:
        onnx_path: The ``.onnx`` file; its batch axis must be dynamic or equal ``batch_size``.
        input_shape: Shape of one sample, without the batch dimension.
        batch_size: Samples per run.
        min_run_time: Seconds to keep measuring (after one warm-up run).
        threads: Intra-op threads for ONNX Runtime; ``None`` lets it choose.

    Returns:
        The latency distribution and throughput.

    Raises:
        DistilError: If onnxruntime is not installed, the file is missing, or the model
            rejects an input of this shape.
        ConfigError: If ``batch_size``, ``threads`` or ``min_run_time`` is not positive.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise DistilError(
            "measuring ONNX latency needs onnxruntime, which is not installed; "
            "install it with `pip install onnxruntime`."
        ) from e
    import numpy as np

    _check_positive("batch_size", batch_size)
    _check_positive("min_run_time", min_run_time)
    if threads is not None:
        _check_positive("threads", threads)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise DistilError(f"ONNX file not found: {str(onnx_path)!r}; export the model first.")

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.randn(batch_size, *input_shape).astype(np.float32)}

    try:
        session.run(None, feed)  # warm-up: first run allocates and plans
    except Exception as e:  # onnxruntime raises its own, unexported exception types
        raise DistilError(
            f"{str(onnx_path)!r} rejected an input of shape {(batch_size, *input_shape)}: {e}. "
            "Check input_shape, and export with a dynamic batch axis to time other batch sizes."
        ) from e

    times: list[float] = []
    deadline = time.perf_counter() + min_run_time
    # At least a few runs so the median and IQR mean something even for slow models.
    while len(times) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)

    q1, median_s, q3 = statistics.quantiles(times, n=4)
    return LatencyResult(
        batch_size=batch_size,
        median_ms=median_s * 1e3,
        iqr_ms=(q3 - q1) * 1e3,
        throughput=batch_size / median_s,
        threads=threads,
    )


# --------------------------------------------------------------------------------------------
# quality


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` on ``x``, computed in batches in eval mode.

    Args:
        model: The model; its training flags are restored afterwards.
        x: Inputs, shape ``(N, ...)``; moved batch by batch to the model's device.
        batch_size: Samples per forward pass (bounds memory, not results).

    Returns:
        Logits, shape ``(N, C)``, on ``x``'s device.

    Raises:
        ConfigError: If ``batch_size`` is not positive.
    """
    _check_positive("batch_size", batch_size)
    device = _model_device(model)
    outputs: list[Tensor] = []
    with _eval_mode(model), torch.inference_mode():
        # max(..., 1) runs one (empty) batch for an empty x, so the output keeps its shape.
        for start in range(0, max(x.shape[0], 1), batch_size):
            outputs.append(model(x[start : start + batch_size].to(device)).to(x.device))
    return torch.cat(outputs)


def predict_split(
    model: nn.Module, split: SampleSplit, batch_size: int = 512, start: int = 0, stop: int | None = None
) -> Tensor:
    """Logits of ``model`` on positions [start, stop) of a split, in batches of ``batch_size``, on the CPU.

    An in-memory split takes :func:`predict`; any other is read batch by batch
    (``split.batches``), with the same batches, so both give the same logits.
    """
    if isinstance(split, Split):
        return predict(model, split.x[start:stop], batch_size).cpu()
    _check_positive("batch_size", batch_size)
    device = _model_device(model)
    outputs: list[Tensor] = []
    with _eval_mode(model), torch.inference_mode():
        for batch in split.batches(batch_size, start, stop):
            outputs.append(call_model(model, to_device(batch, device)["inputs"]).cpu())
    if not outputs:
        return predict(model, split.head(0), batch_size).cpu()
    return torch.cat(outputs)


def accuracy(logits_or_preds: Tensor, y: Tensor, mask: Tensor | None = None) -> float:
    """Top-1 accuracy over the valid positions.

    Args:
        logits_or_preds: Logits ``(N, C)`` or ``(N, T, V)``, or predicted classes ``(N,)`` / ``(N, T)``.
        y: True classes ``(N,)`` or tokens ``(N, T)`` (``IGNORE_INDEX`` positions do not count).
        mask: Optional ``(N,)`` or ``(N, T)`` bool, the positions that count.

    Returns:
        Fraction of correct predictions among the valid positions, in [0, 1].

    Raises:
        DataError: If the sizes differ or there are no valid positions.
    """
    preds = _top1(logits_or_preds, y)
    _check_same_length(preds, y, "accuracy")
    y = y.to(preds.device)
    if preds.shape != y.shape:
        raise DataError(f"accuracy: predictions {tuple(preds.shape)} and labels {tuple(y.shape)} differ.")
    return _mean_over(preds == y, _valid(preds, mask, y), "accuracy")


def agreement(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of (valid) positions where student and teacher predict the same top-1 class.

    A student can beat its teacher's accuracy yet disagree with it often; agreement measures
    how faithfully it imitates, independently of the labels.

    Args:
        student_logits: Logits ``(N, C)`` or ``(N, T, V)``, or predictions ``(N,)``.
        teacher_logits: The same shape.
        mask: Optional ``(N,)`` or ``(N, T)`` bool, the positions that count.

    Returns:
        Agreement, in [0, 1].

    Raises:
        DataError: If the sizes differ or there are no valid positions.
    """
    student, teacher = _top1(student_logits), _top1(teacher_logits)
    _check_same_length(student, teacher, "agreement")
    return _mean_over(student == teacher.to(student.device), _valid(student, mask), "agreement")


def per_class_accuracy(
    logits: Tensor, y: Tensor, num_classes: int, mask: Tensor | None = None
) -> list[float]:
    """Top-1 accuracy of each true class (over the valid positions).

    Args:
        logits: Logits ``(N, C)`` or ``(N, T, V)``, or predictions ``(N,)`` / ``(N, T)``.
        y: True class indices ``(N,)`` or ``(N, T)``, in ``[0, num_classes)`` (or ``IGNORE_INDEX``).
        num_classes: Number of classes.
        mask: Optional ``(N,)`` or ``(N, T)`` bool, the positions that count.

    Returns:
        ``num_classes`` accuracies in [0, 1]; ``nan`` for a class with no samples.

    Raises:
        DataError: If the sizes differ, there are no samples, or a label is out of range.
    """
    preds = _top1(logits, y)
    _check_same_length(preds, y, "per_class_accuracy")
    y = y.to(preds.device).long()
    valid = _valid(preds, mask, y)
    if valid is not None:
        preds, y = preds[valid], y[valid]
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DataError(
            f"labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]; "
            "check num_classes."
        )
    total = torch.bincount(y, minlength=num_classes)
    correct = torch.bincount(y[preds == y], minlength=num_classes)
    return [c / t if t else float("nan") for c, t in zip(correct.tolist(), total.tolist(), strict=True)]


# --------------------------------------------------------------------------------------------
# tasks: which quality metrics a model is measured by


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
            the task is evaluated on whole logits only.
    """

    name: str
    metrics: dict[str, Metric]
    details: dict[str, Metric] = field(default_factory=dict)
    streaming: StreamingMetrics | None = None


@dataclass(frozen=True)
class StreamingMetrics:
    """A task's metrics as sums over batches: ``sums`` per batch, added up (and across processes), then
    ``finish`` turns the totals into metrics by name.

    Attributes:
        sums: ``(logits, labels, reference) -> (K,) float64`` for one batch, on the logits' device and
            without a host sync; ``reference`` is the teacher's top-1 predictions for that batch (same
            shape as ``labels``) or ``None``.
        finish: ``(K,) float64 totals (CPU) -> {name: float | None}``; ``accuracy`` is required.
        size: K, the number of sums (a process with no samples contributes K zeros).
    """

    sums: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    finish: Callable[[Tensor], dict[str, float | None]]
    size: int


TASKS: Registry[Task] = Registry("task")
DEFAULT_TASK = "classification"


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
            sums=lambda logits, labels, ref: _hit_sums(logits.argmax(-1), labels, ref),
            finish=lambda t: {
                # float32, as `accuracy` divides: a sharded evaluation equals a single-process one.
                "accuracy": float(t[0].float() / t[1].float().clamp(min=1)),
                "agreement": float(t[2].float() / t[1].float().clamp(min=1)) if t[3] > 0 else None,
            },
            size=4,
        ),
    )
)


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


def _token_valid(logits: Tensor, labels: Tensor, mask: Tensor | None, what: str) -> Tensor:
    """The (N, T) bool positions of (N, T, V) logits that count: labels not IGNORE_INDEX, and `mask`."""
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise DataError(
            f"{what}: expected (N, T, V) logits and (N, T) labels, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}."
        )
    valid = _valid(labels, mask, labels)
    assert valid is not None  # (N, T) labels always give a mask
    return valid.to(logits.device)


def token_nll(
    logits: Tensor, labels: Tensor, mask: Tensor | None = None, chunk: int = 64
) -> tuple[float, int]:
    """The summed next-token negative log-likelihood (nats) over the valid positions, and their count.

    Args:
        logits: ``(N, T, V)`` next-token logits.
        labels: ``(N, T)`` next tokens, ``IGNORE_INDEX`` where a position has none.
        mask: optional ``(N,)`` or ``(N, T)`` bool, the positions that count.
        chunk: sequences per step (the log-softmax of all N x T x V at once could double the memory).
    """
    valid = _token_valid(logits, labels, mask, "token_nll")
    total, count = 0.0, 0
    for b in range(0, logits.shape[0], chunk):
        v = valid[b : b + chunk]
        rows = logits[b : b + chunk][v].double()
        target = labels[b : b + chunk].to(logits.device)[v].long()
        total += (torch.logsumexp(rows, dim=-1) - rows.gather(1, target[:, None])[:, 0]).sum().item()
        count += int(v.sum())
    return total, count


def perplexity(logits: Tensor, labels: Tensor, mask: Tensor | None = None) -> float:
    """exp of the mean next-token cross-entropy over the valid positions (``IGNORE_INDEX`` labels and
    positions outside `mask` do not count).

    Raises:
        DataError: wrong shapes, or no valid position.
    """
    total, count = token_nll(logits, labels, mask)
    if count == 0:
        raise DataError("perplexity: no valid positions (the mask or the labels exclude them all).")
    return float(torch.tensor(total / count, dtype=torch.float64).exp())


def next_token_agreement(
    logits: Tensor, teacher_logits: Tensor, labels: Tensor, mask: Tensor | None = None
) -> float:
    """Fraction of the valid positions (those with a label, within `mask`) where the student's most likely
    next token is the teacher's.

    Raises:
        DataError: wrong shapes, or no valid position.
    """
    if teacher_logits.shape != logits.shape:
        raise DataError(
            f"next_token_agreement: student logits {tuple(logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; the models need the same tokenizer and data."
        )
    valid = _token_valid(logits, labels, mask, "next_token_agreement")
    hits = logits.argmax(-1) == teacher_logits.to(logits.device).argmax(-1)
    return _mean_over(hits, valid, "next_token_agreement")


def _token_sums(logits: Tensor, labels: Tensor, reference: Tensor | None) -> Tensor:
    """[correct, counted, agreeing, reference given, summed NLL (nats)] of one (B, T, V) batch."""
    labels = labels.to(logits.device)
    nll = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels.reshape(-1).long(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return torch.cat([_hit_sums(logits.argmax(-1), labels, reference), nll.double().reshape(1)])


def _token_finish(t: Tensor) -> dict[str, float | None]:
    count = float(t[1])
    if count == 0:
        raise DataError("language-model evaluation: no labelled token positions in the split.")
    mean_nll = float(t[4]) / count
    return {
        "accuracy": float(t[0]) / count,
        "agreement": float(t[2]) / count if t[3] > 0 else None,
        "perplexity": float(torch.tensor(mean_nll, dtype=torch.float64).exp()),
        "loss": mean_nll,
    }


register_task(
    Task(
        name="language-modeling",
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
        streaming=StreamingMetrics(sums=_token_sums, finish=_token_finish, size=5),
    )
)


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

    Returns:
        (sums (K,) float64 on the model's device, predictions on the CPU or None).

    Raises:
        ConfigError: an unknown task, or one without streaming metrics.
    """
    spec = TASKS.get(task)
    if spec.streaming is None:
        raise ConfigError(f"task {task!r} has no streaming metrics; evaluate it on whole logits instead.")
    _check_positive("batch_size", batch_size)
    device = _model_device(model)
    total: Tensor | None = None
    preds: list[Tensor] = []
    offset = start
    with _eval_mode(model), torch.inference_mode() if inference_mode else torch.no_grad():
        for batch in split.batches(batch_size, start, stop):
            batch = to_device(batch, device)
            logits = call_model(model, batch["inputs"])
            n = logits.shape[0]
            ref = reference[offset - start : offset - start + n] if reference is not None else None
            offset += n
            sums = spec.streaming.sums(logits, batch["labels"], ref)
            total = sums if total is None else total + sums
            if keep_predictions:
                preds.append(logits.argmax(-1).cpu())
    if total is None:
        raise DataError(f"{task} evaluation: the split holds no samples in [{start}, {stop}).")
    return total, (torch.cat(preds) if keep_predictions else None)


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
    sums, preds = split_sums(
        model, split, task, reference=reference, batch_size=batch_size, keep_predictions=keep_predictions
    )
    streaming = TASKS.get(task).streaming
    assert streaming is not None
    return streaming.finish(sums.cpu()), preds


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
    """

    task: str
    streaming: StreamingMetrics
    batch_size: int

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
        )
        return sums

    def finish(self, totals: Tensor) -> dict[str, float | None]:
        """The metrics by name from the (K,) totals (CPU) of every process."""
        return self.streaming.finish(totals)


def split_evaluation(task: str = DEFAULT_TASK) -> SplitEvaluation:
    """The per-epoch evaluation of `task`: its streaming metrics, 512 samples a batch for classification
    and 32 for other tasks (whose outputs per sample are (T, V)).

    Raises:
        ConfigError: an unknown task.
        ValueError: a task without streaming metrics.
    """
    streaming = TASKS.get(task).streaming
    if streaming is None:
        raise ValueError(f"task {task!r} has no streaming metrics, so it cannot be evaluated per epoch")
    return SplitEvaluation(task, streaming, 512 if task == DEFAULT_TASK else 32)


def task_details(task: str, inputs: MetricInputs) -> dict[str, Any]:
    """The non-scalar breakdowns of ``task`` on ``inputs`` (e.g. ``per_class_accuracy``), by name."""
    return {name: detail(inputs) for name, detail in TASKS.get(task).details.items()}


# --------------------------------------------------------------------------------------------
# composition


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
        is ``None`` when a value is missing (latency not measured) or the denominator is 0.
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
        "accuracy_change": (student.accuracy - teacher.accuracy) * 100,
    }
