"""The one timing loop: callables timed in interleaved rounds, summarised as median, IQR and spread.

Every latency distil reports comes from :func:`time_interleaved`: torch models (``distil.measure.latency``),
ONNX Runtime sessions in this process (``measure_onnx_latency``) and in the separate probe process of
``distil shrink`` (``distil.compress.latency_probe``). Each thing timed is a zero-argument callable, so the
loop does not know what a model is.

This module imports nothing but the standard library: the latency probe loads it by path in a process
that holds only onnxruntime (importing ``distil`` would import torch).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Interleaved timing: at least this many rounds (each model timed once per round), so the spread across
# rounds means something; each round gives a model about min_run_time / LATENCY_ROUNDS of calls.
LATENCY_ROUNDS = 10


# A bound on rounds (scaled with the fewest asked for) when a model turns out much faster than its calibration said (a busy machine then).
MAX_LATENCY_ROUNDS = 20 * LATENCY_ROUNDS


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


def latency_result(samples_s: list[float], batch_size: int, threads: int | None) -> LatencyResult:
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


def _no_sync() -> None:
    """CPU work is done when the call returns: nothing to wait for."""


def time_interleaved(
    calls: Sequence[Callable[[], object]],
    *,
    min_run_time: float = 0.5,
    syncs: Sequence[Callable[[], None]] | None = None,
    rounds: int = LATENCY_ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Time several callables interleaved, so that they share the machine's moods.

    Timing one thing after another lets a burst of load from another process land on one of them only
    (two identical students measured 72 ms and 0.6 ms). Here every round times each callable in turn (a
    block of calls lasting about ``min_run_time / rounds``), for at least `rounds` rounds and until each
    has run ``min_run_time`` (at most ``20 * rounds`` rounds): a burst then shows in every callable's
    rounds, as spread, instead of shifting one median. Each callable first warms up (one untimed call,
    then blocks of 1, 10, 100... calls until one lasts a tenth of a round, which also sizes its blocks).

    Args:
        calls: What to time, each a zero-argument callable (one forward pass, one session run).
        min_run_time: Seconds of calls per callable; longer gives steadier numbers.
        syncs: Per callable, what makes a block's end mean its work is done (CUDA synchronisation);
            ``None``: nothing to wait for.
        rounds: The fewest interleaved rounds.
        clock: Seconds from an arbitrary origin (tests pass a fake one).

    Returns:
        Per callable, in order: seconds per call of each round (the mean over that round's block).

    Raises:
        ValueError: No callable, `syncs` of another length, or a `min_run_time` or `rounds` that is not
            positive (callers check their users' values first, with distil's errors).
    """
    if not calls or (syncs is not None and len(syncs) != len(calls)):
        raise ValueError(f"time_interleaved: got {len(calls)} callables and {syncs and len(syncs)} syncs.")
    if min_run_time <= 0 or rounds < 1:
        raise ValueError(
            f"time_interleaved: min_run_time and rounds must be positive, got {min_run_time}, {rounds}."
        )
    waits = list(syncs) if syncs is not None else [_no_sync] * len(calls)
    block_s = min_run_time / rounds
    numbers = [_warm_up(call, sync, block_s, clock) for call, sync in zip(calls, waits, strict=True)]
    samples: list[list[float]] = [[] for _ in calls]
    spent = [0.0] * len(calls)
    done = 0
    while done < rounds or (
        min(spent) < min_run_time and done < MAX_LATENCY_ROUNDS // LATENCY_ROUNDS * rounds
    ):
        for i, (call, sync, number) in enumerate(zip(calls, waits, numbers, strict=True)):
            per_call = _time_block(call, sync, number, clock)
            samples[i].append(per_call)
            spent[i] += per_call * number
        done += 1
    return samples
