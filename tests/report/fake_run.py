"""A finished run directory written by hand (no training), with known numbers, for report tests."""

from __future__ import annotations

import json
from pathlib import Path

CLASS_NAMES = ["cat", "dog", "bird"]

METRICS = [
    {"name": "teacher", "accuracy": 0.9, "agreement": None, "params": 100_000, "bytes": 400_000,
     "macs": 2_000_000, "latency_b1_ms": 2.0, "throughput_b256": 5000.0},
    {"name": "student_scratch", "accuracy": 0.7, "agreement": 0.72, "params": 10_000, "bytes": 40_000,
     "macs": 200_000, "latency_b1_ms": 0.5, "throughput_b256": 20000.0},
    {"name": "student_kd", "accuracy": 0.8, "agreement": 0.85, "params": 10_000, "bytes": 40_000,
     "macs": 200_000, "latency_b1_ms": 0.5, "throughput_b256": 20000.0},
]  # fmt: skip

PER_CLASS = {"teacher": [1.0, 0.8, None], "student_scratch": [0.6, 0.7, None], "student_kd": [0.9, 0.7, None]}


# Timed in interleaved rounds, on a quiet machine: a small spread, every figure reliable.
STEADY = {"teacher": (2.0, 0.02, True), "student_scratch": (0.5, 0.04, True), "student_kd": (0.5, 0.03, True)}
# The digits demo on a busy machine: the twin students measured 71.95 and 0.606 ms, the second one noisy.
BUSY = {
    "teacher": (2.0, 0.02, True),
    "student_scratch": (71.95, 0.04, False),
    "student_kd": (0.606, 0.9, False),
}


def make_run(
    root: Path,
    name: str = "toy-run",
    *,
    accuracy_shift: float = 0.0,
    latency: bool = True,
    timing: dict[str, tuple[float, float, bool]] | None = None,
    metrics: list[dict] | None = None,
) -> Path:
    """Write summary.json, metrics.jsonl, recipe.yaml and sidecars for three models into root/name.

    `timing` gives (latency ms, spread, reliable) per model, as a run timed in rounds records them;
    `metrics` replaces the three models' rows.
    """
    run = root / name
    run.mkdir(parents=True)
    metrics = [dict(m, accuracy=m["accuracy"] + accuracy_shift) for m in (metrics or METRICS)]
    if not latency:
        for m in metrics:
            m["latency_b1_ms"] = m["throughput_b256"] = None
    for m in metrics:
        if timing and m["name"] in timing:
            ms, spread, reliable = timing[m["name"]]
            m.update(latency_b1_ms=ms, latency_b1_spread=spread, latency_reliable=reliable)
    summary = {
        "recipe": "toy",
        "data": {
            "name": "toyset",
            "source": "memory",
            "num_classes": 3,
            "class_names": CLASS_NAMES,
            "sizes": {"train": 90, "val": 0, "test": 30},
        },
        "metrics": metrics,
        "ratios": {},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    records = [
        {
            "stage": stage,
            "epoch": e,
            "train_loss": 2.0 / e + i,
            "eval_accuracy": 0.3 * e / 3 + 0.1 * i,
            "lr": 0.1,
        }
        for i, stage in enumerate(("teacher", "student_scratch", "student_kd"))
        for e in (1, 2, 3)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "recipe.yaml").write_text("name: toy\nkd:\n  temperature: 4.0\n")
    for m in metrics:
        sidecar = {"format": "distil-checkpoint/1", "per_class_accuracy": PER_CLASS.get(m["name"])}
        (run / f"{m['name']}.json").write_text(json.dumps(sidecar))
    return run
