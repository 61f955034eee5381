"""Issue-6 benchmark: KD with cached teacher outputs vs student-only training vs KD with a live teacher.

Three arms train the same SmallNet from the same initial weights on the same Fashion-MNIST subset
(augment=none, the case the cache serves), same recipe and thread count, one epoch each, alternating
student-only, cached KD, live KD, ... so drift in machine load hits all arms alike. Each arm is timed as a
whole call (set-up, epoch, validation; opening the cache on a hit included), by wall clock and by
this process's CPU time (steadier on a shared machine). The one-time cache build (a teacher pass over the training
set) and the cost of opening it on a hit (fingerprinting teacher weights and data) are reported apart.

    python benchmarks/teacher_cache.py                          # 3000 images, 5 rounds (~5 min, 1 thread)
    python benchmarks/teacher_cache.py --limit 1000 --rounds 1  # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from distil.api import distill, train_model
from distil.config import KDConfig, StudentTrainConfig, TeacherCacheConfig
from distil.data import load_dataset
from distil.models import create_model
from distil.teachers.cache import open_or_build
from distil.train.checkpoint import load_checkpoint
from distil.train.engine import make_accelerator


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `fn()`; CPU time is steadier on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=3000, help="training images (Fashion-MNIST subset)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--teacher", default=None, help="a distil teacher checkpoint (timing is the same untrained)"
    )
    ap.add_argument("--cache-dir", default=None, help="default: a fresh temporary directory")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", val_fraction=0.05, limit=args.limit)
    if args.teacher:
        teacher, _ = load_checkpoint(args.teacher)
    else:
        torch.manual_seed(0)
        teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=28)
    torch.manual_seed(1)
    init = create_model("smallnet", num_classes=10, in_channels=1, image_size=28).state_dict()

    def student() -> nn.Module:
        model = create_model("smallnet", num_classes=10, in_channels=1, image_size=28)
        model.load_state_dict(init)
        return model

    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="distil-cache-bench-"))
    base = StudentTrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        augment="none",
        channels_last=True,
        teacher_cache=TeacherCacheConfig(dir=str(cache_dir)),
    )
    accelerator = make_accelerator("cpu")
    # Warm-up (untimed): lazy initialisation and oneDNN kernel selection happen on the first calls.
    train_model(student(), data, base, accelerator=accelerator)
    distill(
        teacher,
        student(),
        data,
        base.model_copy(update={"teacher_cache": base.teacher_cache.model_copy(update={"mode": "off"})}),
        KDConfig(),
        accelerator=accelerator,
    )
    _, built = open_or_build(teacher, data, cache_dir=cache_dir, channels_last=True)
    _, opened = open_or_build(teacher, data, cache_dir=cache_dir, channels_last=True)
    assert not built.hit and opened.hit
    size = sum(f.stat().st_size for f in Path(built.path).iterdir())
    steps = len(data.train) // base.batch_size
    print(
        f"fashion-mnist subset: {len(data.train)} train images, batch {base.batch_size}, {steps} steps/epoch, "
        f"{torch.get_num_threads()} thread(s), largenet -> smallnet, channels_last, augment=none"
    )
    print(
        f"cache: built in {built.seconds:.2f}s (one teacher pass), opened on a hit in {opened.seconds:.2f}s, "
        f"{size / 1e6:.2f} MB on disk ({built.rows} x {built.num_classes} fp16)"
    )
    arms: dict[str, list[tuple[float, float]]] = {
        "student only (CE)": [],
        "KD, cached teacher": [],
        "KD, live teacher": [],
    }
    cached_cfg = base.model_copy(
        update={"teacher_cache": base.teacher_cache.model_copy(update={"mode": "on"})}
    )
    live_cfg = base.model_copy(
        update={"teacher_cache": base.teacher_cache.model_copy(update={"mode": "off"})}
    )
    records: list[dict] = []
    for r in range(args.rounds):
        arms["student only (CE)"].append(
            timed(lambda: train_model(student(), data, base, accelerator=accelerator))
        )
        arms["KD, cached teacher"].append(
            timed(
                lambda: records.append(
                    distill(
                        teacher, student(), data, cached_cfg, KDConfig(), accelerator=accelerator
                    ).history[0]
                )
            )
        )
        arms["KD, live teacher"].append(
            timed(lambda: distill(teacher, student(), data, live_cfg, KDConfig(), accelerator=accelerator))
        )
        print(
            f"round {r + 1}: "
            + "  ".join(f"{k} {v[-1][0]:.2f}s wall {v[-1][1]:.2f}s cpu" for k, v in arms.items())
        )
    assert all(rec["teacher_source"] == "cache" and rec["teacher_cache"]["hit"] for rec in records)

    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in arms.items()
    }
    base_cpu = med["student only (CE)"][1]
    print()
    print(
        "| 1 epoch + validation | CPU s (median) | wall s (median) | samples/CPU-s | CPU time vs student only |"
    )
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in med.items():
        print(
            f"| {name} | {cpu:.2f} | {wall:.2f} | {steps * base.batch_size / cpu:.0f} | {cpu / base_cpu:.2f}x |"
        )
    for i, what in ((1, "CPU time"), (0, "wall time")):
        cached = [
            c[i] / s[i] for c, s in zip(arms["KD, cached teacher"], arms["student only (CE)"], strict=True)
        ]
        live = [
            lv[i] / c[i] for lv, c in zip(arms["KD, live teacher"], arms["KD, cached teacher"], strict=True)
        ]
        print(
            f"by {what}: cached KD / student-only per round {', '.join(f'{x:.3f}' for x in cached)} "
            f"(median {statistics.median(cached):.3f}x; target <= 1.15x); live / cached KD "
            f"{', '.join(f'{x:.2f}' for x in live)} (median {statistics.median(live):.2f}x)"
        )
    print(f"one-time cache build = {built.seconds / med['KD, live teacher'][0]:.2f} live-KD epochs (wall)")


if __name__ == "__main__":
    main()
