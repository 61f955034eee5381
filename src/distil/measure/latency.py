"""Latency: torch models and ONNX files timed by the one loop (:func:`distil.measure.timing.time_interleaved`).

Torch models run in eval mode under ``inference_mode`` on their device, with torch's thread count set for
the measurement and restored afterwards; ONNX files run in a session from the one factory
(:func:`distil.measure.onnxrt.onnx_session`). Every model of a run is timed in one interleaved
measurement (:func:`time_models`), and identical architectures whose figures disagree are marked.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import nn

from distil.errors import ConfigError, DistilError
from distil.measure._util import _check_positive, _dummy_inputs, _eval_mode
from distil.measure.metrics import ModelMetrics
from distil.measure.onnxrt import onnx_session
from distil.measure.timing import LatencyResult, latency_result, time_interleaved

# Throughput is reported at one fixed, large batch so runs and models stay comparable.
THROUGHPUT_BATCH_SIZE = 256


# A latency whose p10-p90 range across rounds exceeds this share of its median is marked unreliable; two
# identical architectures may differ by this much (or by what their spreads allow) before both are.
MAX_LATENCY_SPREAD = 0.5


def measure_latencies(
    models: Sequence[nn.Module],
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    threads: int | None = None,
    min_run_time: float = 0.5,
    vocab_size: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    per_model: Sequence[tuple[tuple[int, ...], int | None]] | None = None,
) -> list[LatencyResult]:
    """Time the forward passes of several models interleaved, so that they share the machine's moods.

    The rounds, warm-up and blocks are the one timing loop's (:func:`distil.measure.timing.time_interleaved`:
    at least ``LATENCY_ROUNDS`` rounds, each model timed once per round, until each has run
    ``min_run_time``), so a burst of load shows in every model's rounds, as spread, instead of shifting one
    median. Runs in eval mode under ``inference_mode`` on each model's device (CUDA is synchronized around
    every block); training flags and torch's thread count are restored afterwards.

    Args:
        models: The models to time; the same inputs' shape for all.
        input_shape: Shape of one sample, without the batch dimension.
        batch_size: Samples per forward pass.
        threads: CPU threads for torch; ``None`` keeps the current setting.
        min_run_time: Seconds of calls per model; longer gives steadier numbers.
        vocab_size: for token models, the vocabulary of their random input ids (one forward pass scores
            a whole block of ``input_shape = (T,)`` tokens).
        clock: Seconds from an arbitrary origin (tests pass a fake one).
        per_model: one (input_shape, vocab_size) per model, in place of the shared ones: a model that
            reads the text with its own tokenizer is timed on a block of its own tokens.

    Returns:
        Per model, in order: the median, IQR and spread over rounds, the per-round samples, throughput.

    Raises:
        ConfigError: If ``batch_size``, ``threads`` or ``min_run_time`` is not positive, no model is given,
            or ``per_model`` does not have one entry per model.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("min_run_time", min_run_time)
    if threads is not None:
        _check_positive("threads", threads)
    if not models:
        raise ConfigError("measure_latencies needs at least one model to time; got none.")
    previous_threads = torch.get_num_threads()
    num_threads = threads if threads is not None else previous_threads
    shapes = list(per_model) if per_model is not None else [(input_shape, vocab_size)] * len(models)
    if len(shapes) != len(models):
        raise ConfigError(
            f"per_model gives {len(shapes)} input shapes for {len(models)} models; give one each."
        )
    inputs = [
        _dummy_inputs(m, batch_size, shape, vocab) for m, (shape, vocab) in zip(models, shapes, strict=True)
    ]
    calls = [functools.partial(m, x) for m, x in zip(models, inputs, strict=True)]
    syncs = [_synchronizer(x.device) for x in inputs]
    try:
        torch.set_num_threads(num_threads)
        with ExitStack() as stack:
            for m in models:
                stack.enter_context(_eval_mode(m))
            stack.enter_context(torch.inference_mode())
            samples = time_interleaved(calls, min_run_time=min_run_time, syncs=syncs, clock=clock)
    finally:
        torch.set_num_threads(previous_threads)
    return [latency_result(s, batch_size, num_threads) for s in samples]


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes a block's end mean its work is done: CUDA kernels run asynchronously, CPU ops do not."""
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    return lambda: None


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
    threads: int | None = None,
    min_run_time: float = 0.5,
    vocab_size: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    per_model: Sequence[tuple[tuple[int, ...], int | None]] | None = None,
) -> None:
    """Fill in the latency (and throughput) of every row in one interleaved measurement, and say which
    batch-1 figures are unreliable (``ModelMetrics.latency_reliable``).

    Args:
        metrics: One row per model, updated in place.
        models: The models, in the order of `metrics`.
        input_shape: Shape of one sample, without the batch dimension.
        throughput: Also time batches of ``THROUGHPUT_BATCH_SIZE`` (samples per second).
        threads: CPU threads for torch; ``None`` keeps the current setting.
        min_run_time: Seconds of calls per model and batch size.
        vocab_size: for token models, the vocabulary of their random input ids.
        clock: Seconds from an arbitrary origin (tests pass a fake one).
        per_model: one (input_shape, vocab_size) per model in place of the shared ones
            (`measure_latencies`).
    """
    timer = functools.partial(
        measure_latencies,
        models,
        input_shape,
        threads=threads,
        min_run_time=min_run_time,
        vocab_size=vocab_size,
        clock=clock,
        per_model=per_model,
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
    """Time an exported ONNX model with ONNX Runtime's CPU provider: a session from the one factory
    (:func:`distil.measure.onnxrt.onnx_session`) timed by the one loop (``time_interleaved``), so its
    median, IQR and spread mean what a PyTorch model's do.

    Args:
        onnx_path: The ``.onnx`` file; its batch axis must be dynamic or equal ``batch_size``.
        input_shape: Shape of one sample, without the batch dimension.
        batch_size: Samples per run.
        min_run_time: Seconds of timed runs (after the warm-up).
        threads: Intra-op threads for ONNX Runtime; ``None`` lets it choose.

    Returns:
        The latency distribution and throughput.

    Raises:
        DistilError: If onnxruntime is not installed, the file is missing, or the model
            rejects an input of this shape.
        ConfigError: If ``batch_size``, ``threads`` or ``min_run_time`` is not positive.
    """
    import numpy as np

    _check_positive("batch_size", batch_size)
    _check_positive("min_run_time", min_run_time)
    if threads is not None:
        _check_positive("threads", threads)
    session = onnx_session(onnx_path, threads)
    first = session.get_inputs()[0]
    shape = (batch_size, *input_shape)
    if first.type == "tensor(int64)":  # a text model's token ids: every id costs one embedding lookup
        sample = np.zeros(shape, np.int64)
    else:
        sample = np.random.randn(*shape).astype(np.float32)
    feed = {first.name: sample}
    try:
        session.run(None, feed)  # a first run: the shape is checked before anything is timed
    except Exception as e:  # onnxruntime raises its own, unexported exception types
        raise DistilError(
            f"{str(onnx_path)!r} rejected an input of shape {(batch_size, *input_shape)}: {e}. "
            "Check input_shape, and export with a dynamic batch axis to time other batch sizes."
        ) from e
    (samples,) = time_interleaved([functools.partial(session.run, None, feed)], min_run_time=min_run_time)
    return latency_result(samples, batch_size, threads)
