"""Issue-6 benchmark: distil's KD epoch vs a plain hand-written PyTorch loop doing identical work.

Both sides train the same SmallNet student from the same initial weights against the same LargeNet
teacher (run live on every batch), on the same Fashion-MNIST subset, with the same batch size,
optimizer (SGD momentum, weight decay on weights only), per-step cosine schedule, gradient clipping,
channels_last layout, Hinton loss (kd_weight*T^2*KL + ce_weight*CE) and thread count. The plain loop
is the best a careful user would write: in-memory tensors, a shuffled index per epoch, no per-step
`.item()`, then one validation pass. Each side is timed as a whole call (set-up, epoch, validation),
by wall clock and by this process's CPU time (the steadier measure on a shared machine), and the two
sides alternate A, B, A, B, ... so drift in machine load hits both alike.

    python benchmarks/kd_loop_overhead.py                      # 3000 images, 5 rounds (~5 min, 1 thread)
    python benchmarks/kd_loop_overhead.py --limit 1000 --rounds 1   # smoke test
    python benchmarks/kd_loop_overhead.py --profile --limit 2000    # where the time of a KD epoch goes
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig, TrainConfig
from distil.data import DataBundle, load_dataset
from distil.models import create_model
from distil.train.checkpoint import load_checkpoint
from distil.train.engine import make_accelerator


def plain_sgd(student: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.SGD:
    """SGD as distil's recipe builds it, written directly: momentum, weight decay on weights only."""
    decay = [p for p in student.parameters() if p.ndim > 1]
    no_decay = [p for p in student.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": cfg.optimizer.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        momentum=cfg.optimizer.momentum,
        fused=fused or None,
    )


def plain_kd_epoch(
    teacher: nn.Module, student: nn.Module, data: DataBundle, cfg: TrainConfig, kd: KDConfig
) -> float:
    """One KD epoch written directly in PyTorch, then a validation pass; returns the val accuracy."""
    opt = plain_sgd(student, cfg)
    n = len(data.train)
    steps = n // cfg.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    x_all, y_all = data.train.x, data.train.y
    t = kd.temperature
    student.to(memory_format=torch.channels_last).train()
    teacher.to(memory_format=torch.channels_last).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n, generator=g)
    total = torch.zeros(())
    for b in range(steps):
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x = x_all[idx].contiguous(memory_format=torch.channels_last)
        y = y_all[idx]
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        kl = F.kl_div(
            F.log_softmax(s_logits / t, dim=1),
            F.log_softmax(t_logits / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        loss = kd.kd_weight * t * t * kl + kd.ce_weight * F.cross_entropy(s_logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip or math.inf)
        opt.step()
        sched.step()
        total += loss.detach()
    if not math.isfinite(float(total)):
        raise SystemExit("plain loop diverged")
    student.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(data.val), 512):
            x = data.val.x[start : start + 512].contiguous(memory_format=torch.channels_last)
            correct += int((student(x).argmax(1) == data.val.y[start : start + 512]).sum())
    return correct / len(data.val)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `fn()`.

    On a shared machine CPU time is the steadier measure: with one thread it counts the work done,
    not the time spent waiting for a core.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def profile(teacher: nn.Module, student: nn.Module, data: DataBundle, cfg: TrainConfig, kd: KDConfig) -> None:
    """Print torch.profiler's top operators and cProfile's top Python functions of one distil KD epoch."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    accelerator = make_accelerator("cpu")
    distill(teacher, student, data, cfg, kd, accelerator=accelerator)  # warm-up (oneDNN primitive caches)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        distill(teacher, student, data, cfg, kd, accelerator=accelerator)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))
    pr = cProfile.Profile()
    pr.enable()
    distill(teacher, student, data, cfg, kd, accelerator=accelerator)
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=3000, help="training images (Fashion-MNIST subset)")
    ap.add_argument("--rounds", type=int, default=5, help="A/B pairs (one epoch each)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--teacher", default=None, help="a distil teacher checkpoint (timing is the same untrained)"
    )
    ap.add_argument("--profile", action="store_true", help="profile one distil KD epoch instead")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", val_fraction=0.05, limit=args.limit)
    cfg = StudentTrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        augment="none",
        channels_last=True,
        teacher_cache="off",  # the plain loop runs its teacher live too
        schedule="cosine",
    )
    kd = KDConfig()
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

    if args.profile:
        profile(teacher, student(), data, cfg, kd)
        return
    accelerator = make_accelerator("cpu")
    print(
        f"fashion-mnist subset: {len(data.train)} train images, batch {cfg.batch_size}, "
        f"{len(data.train) // cfg.batch_size} steps/epoch, {torch.get_num_threads()} thread(s), "
        f"largenet -> smallnet, channels_last, live teacher"
    )
    # Warm-up (untimed): lazy initialisation and oneDNN kernel selection happen on the first calls.
    distill(teacher, student(), data, cfg, kd, accelerator=accelerator)
    plain_kd_epoch(teacher, student(), data, cfg, kd)
    times: dict[str, list[tuple[float, float]]] = {"plain PyTorch": [], "distil": []}
    for r in range(args.rounds):
        times["distil"].append(
            timed(lambda: distill(teacher, student(), data, cfg, kd, accelerator=accelerator))
        )
        times["plain PyTorch"].append(timed(lambda: plain_kd_epoch(teacher, student(), data, cfg, kd)))
        print(
            f"round {r + 1}: "
            + "  ".join(f"{k} {v[-1][0]:.2f}s wall {v[-1][1]:.2f}s cpu" for k, v in times.items())
        )
    samples = (len(data.train) // cfg.batch_size) * cfg.batch_size
    print()
    print(
        "| loop (1 KD epoch + validation) | CPU s (median) | wall s (median) | samples/CPU-s | throughput vs plain (CPU) |"
    )
    print("|---|---|---|---|---|")
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()
    }
    for name, (wall, cpu) in med.items():
        print(
            f"| {name} | {cpu:.2f} | {wall:.2f} | {samples / cpu:.0f} | {med['plain PyTorch'][1] / cpu:.3f}x |"
        )
    for i, what in ((1, "CPU time"), (0, "wall time")):
        ratios = [p[i] / d[i] for p, d in zip(times["plain PyTorch"], times["distil"], strict=True)]
        print(
            f"distil/plain throughput by {what}, per round: {', '.join(f'{x:.3f}' for x in ratios)} "
            f"(median {statistics.median(ratios):.3f}x; target >= 0.95x)"
        )


if __name__ == "__main__":
    main()
