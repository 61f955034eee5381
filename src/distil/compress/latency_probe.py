"""Latency of ONNX files measured in a separate, warmed-up process, as the deployment backend runs them.

The parent process (the search) has torch, its thread pools and its allocations loaded, and would time
ONNX Runtime next to them. This module therefore runs as its own process with nothing but numpy and
onnxruntime imported, one warmed-up session per file, and prints JSON::

    python -m distil.compress.latency_probe model.onnx [more.onnx ...] --threads 1 --batch 1

    [{"path": "model.onnx", "median_ms": 0.081, "q1_ms": 0.079, "q3_ms": 0.085, "iqr_ms": 0.006, ...}]

Files are timed in interleaved rounds (file A, file B, file A, ...) so that a burst of load from other
processes hits every file alike, and the spread (quartiles over the rounds) is reported with the median;
the loop and the sessions are distil's own (:mod:`distil.measure.timing`, :mod:`distil.measure.onnxrt`),
loaded by path, so the probe's figures mean what every other latency in distil means. :func:`probe_latency` runs it with :mod:`subprocess` and returns the parsed records.

The script half imports no part of distil (running it by path skips the package's torch import).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "probe_latency"]


def _shared(name: str) -> Any:
    """distil's module ``distil/measure/NAME.py``, loaded by path: the timing loop and the session factory
    are the ones every other measurement uses, and they import nothing but the standard library
    (importing the ``distil`` package would load torch into the timed process)."""
    key = f"_distil_probe_{name}"
    if key in sys.modules:
        return sys.modules[key]
    path = Path(__file__).resolve().parent.parent / "measure" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # before running it: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _feed(session: Any, batch: int) -> dict[str, Any]:
    import numpy as np

    inp = session.get_inputs()[0]
    dims = list(inp.shape)
    shape = [batch] + [int(d) if isinstance(d, int) else -1 for d in dims[1:]]
    if any(d < 1 for d in shape[1:]):
        raise SystemExit(
            f"{inp.name} has a symbolic non-batch dimension {dims}; export with a fixed sample shape"
        )
    rng = np.random.default_rng(0)
    return {inp.name: rng.standard_normal(shape).astype(np.float32)}


def measure(
    paths: Sequence[str], *, threads: int = 1, batch: int = 1, min_run_time: float = 0.5, rounds: int = 5
) -> list[dict[str, Any]]:
    """Time each file in interleaved rounds (at least `rounds`, about ``min_run_time / rounds`` seconds of
    runs per file each) with distil's one timing loop, each in a session from its one factory."""
    timing, onnxrt = _shared("timing"), _shared("onnxrt")
    sessions = [onnxrt.onnx_session(p, threads) for p in paths]
    calls = [functools.partial(s.run, None, _feed(s, batch)) for s in sessions]
    samples = timing.time_interleaved(calls, min_run_time=min_run_time, rounds=max(rounds, 1))
    records = []
    for p, t in zip(paths, samples, strict=True):
        result = timing.latency_result(t, batch, threads)
        cuts = statistics.quantiles(t, n=20, method="inclusive")  # the quartiles of result.iqr_ms
        records.append(
            {
                "path": p,
                "median_ms": result.median_ms,
                "q1_ms": cuts[4] * 1e3,
                "q3_ms": cuts[14] * 1e3,
                "iqr_ms": result.iqr_ms,
                "spread": result.spread,
                "min_ms": min(t) * 1e3,
                "runs": len(t),
                "threads": threads,
                "batch": batch,
                "bytes": os.path.getsize(p),
            }
        )
    return records


def probe_latency(
    paths: Sequence[str | Path],
    *,
    threads: int = 1,
    batch: int = 1,
    min_run_time: float = 0.5,
    rounds: int = 5,
    timeout: float = 300.0,
) -> list[dict[str, Any]]:
    """Measure ONNX files in a fresh process (see the module docstring); one record per file, in order.

    Args:
        paths: ``.onnx`` files with a dynamic or matching batch axis.
        threads: ONNX Runtime intra-op threads (inter-op is 1).
        batch: Samples per run.
        min_run_time: Seconds of timed runs per file, split over `rounds` interleaved rounds.
        rounds: Interleaved rounds.
        timeout: Seconds before the probe is killed.

    Returns:
        ``[{"path", "median_ms", "q1_ms", "q3_ms", "iqr_ms", "spread", "min_ms", "runs" (timed rounds),
        "threads", "batch", "bytes"}]``.

    Raises:
        DistilError: The probe failed (its stderr is quoted) or a file is missing.
    """
    from distil.errors import DistilError

    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise DistilError(f"ONNX file(s) not found for the latency probe: {missing}; export them first.")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        *[str(p) for p in paths],
        "--threads",
        str(threads),
        "--batch",
        str(batch),
        "--min-run-time",
        str(min_run_time),
        "--rounds",
        str(rounds),
    ]
    env = dict(os.environ)
    # The probe's own thread pools are set by ORT's session options; keep OpenMP/MKL from adding more.
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DistilError(f"the latency probe failed (exit {proc.returncode}): {' | '.join(tail)}")
    records: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return records


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time ONNX files with ONNX Runtime; prints JSON records.")
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    records = measure(
        args.paths, threads=args.threads, batch=args.batch, min_run_time=args.min_run_time, rounds=args.rounds
    )
    print(json.dumps(records))


if __name__ == "__main__":
    main()
