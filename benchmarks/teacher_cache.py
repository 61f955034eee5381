"""Issue-6 benchmark: KD with cached teacher outputs vs student-only training vs KD with a live teacher.

Three arms train the same SmallNet from the same initial weights on the same Fashion-MNIST subset
(augment=none, the case the cache serves), same recipe and thread count, one epoch each, alternating
student-only, cached KD, live KD, ... so drift in machine load hits all arms alike. Only the training
pass is timed (fit's per-epoch `seconds`). The one-time cache build (a teacher pass over the training
set) and the cost of opening it on a hit (fingerprinting teacher weights and data) are reported apart.

    python benchmarks/teacher_cache.py                          # 6000 images, 3 rounds (~5 min, 1 thread)
    python benchmarks/teacher_cache.py --limit 1000 --rounds 1  # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn

from distil.api import distill, train_model
from distil.config import KDConfig, TrainConfig
from distil.data import load_dataset
from distil.models import create_model
from distil.train.cache import open_or_build
from distil.train.checkpoint import load_checkpoint
from distil.train.engine import make_accelerator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=6000, help="training images (Fashion-MNIST subset)")
    ap.add_argument("--rounds", type=int, default=3)
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
    base = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        augment="none",
        channels_last=True,
        teacher_cache_dir=str(cache_dir),
    )
    _, built = open_or_build(teacher, data, cache_dir=cache_dir)
    _, opened = open_or_build(teacher, data, cache_dir=cache_dir)
    assert not built.hit and opened.hit
    size = sum(f.stat().st_size for f in Path(built.path).iterdir())
    accelerator = make_accelerator("cpu")
    steps = len(data.train) // base.batch_size
    print(
        f"fashion-mnist subset: {len(data.train)} train images, batch {base.batch_size}, {steps} steps/epoch, "
        f"{torch.get_num_threads()} thread(s), largenet -> smallnet, channels_last, augment=none"
    )
    print(
        f"cache: built in {built.seconds:.2f}s (one teacher pass), opened on a hit in {opened.seconds:.2f}s, "
        f"{size / 1e6:.2f} MB on disk ({built.rows} x {built.num_classes} fp16)"
    )
    arms: dict[str, list[float]] = {"student only (CE)": [], "KD, cached teacher": [], "KD, live teacher": []}
    for r in range(args.rounds):
        scratch = train_model(student(), data, base, accelerator=accelerator)
        arms["student only (CE)"].append(scratch.history[0]["seconds"])
        cached = distill(
            teacher,
            student(),
            data,
            base.model_copy(update={"teacher_cache": "on"}),
            KDConfig(),
            accelerator=accelerator,
        )
        assert cached.history[0]["teacher_source"] == "cache" and cached.history[0]["teacher_cache"]["hit"]
        arms["KD, cached teacher"].append(cached.history[0]["seconds"])
        live = distill(
            teacher,
            student(),
            data,
            base.model_copy(update={"teacher_cache": "off"}),
            KDConfig(),
            accelerator=accelerator,
        )
        arms["KD, live teacher"].append(live.history[0]["seconds"])
        print("round " + str(r + 1) + ": " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in arms.items()))

    student_only = arms["student only (CE)"]
    med = {k: statistics.median(v) for k, v in arms.items()}
    print()
    print("| epoch | seconds (median) | samples/s | time vs student only |")
    print("|---|---|---|---|")
    for name, m in med.items():
        print(
            f"| {name} | {m:.2f} | {steps * base.batch_size / m:.0f} | {m / med['student only (CE)']:.2f}x |"
        )
    per_round_cached = [c / s for c, s in zip(arms["KD, cached teacher"], student_only, strict=True)]
    per_round_live = [
        lv / c for lv, c in zip(arms["KD, live teacher"], arms["KD, cached teacher"], strict=True)
    ]
    print(
        f"\ncached KD / student-only time per round: {', '.join(f'{x:.3f}' for x in per_round_cached)} "
        f"(median {statistics.median(per_round_cached):.3f}x; target <= 1.15x)"
    )
    print(
        f"live / cached KD time per round: {', '.join(f'{x:.2f}' for x in per_round_live)} "
        f"(median {statistics.median(per_round_live):.2f}x speed-up from the cache)"
    )
    print(f"one-time build = {built.seconds / med['KD, live teacher']:.2f} live-KD epochs")


if __name__ == "__main__":
    main()
