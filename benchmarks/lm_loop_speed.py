"""Issue-13 benchmark: distil's token-level KD loop vs a hand-written PyTorch loop doing identical work.

Both sides train the same tiny llama-style student (``hf-causal-lm``) from the same initial weights
against the same teacher (run live on every batch), on the same blocks of the python-stdlib corpus
(byte tokenizer), in the same shuffled order, with the same batch size, AdamW (weight decay on weights
only), per-step cosine schedule, gradient clipping and loss: kd_weight * T^2 * KL(teacher || student)
+ ce_weight * CE over every token. The hand-written loop is what a careful user would write: batches
read from the same memory-mapped blocks, no per-step ``.item()``, then one validation pass computing
perplexity. Each side is timed as a whole call (set-up, epoch, validation) by wall clock and by this
process's CPU time (the steadier measure on a shared machine); the sides alternate A, B, A, B, ... so
drift in machine load hits both alike. The figure is tokens/s of distil over the hand-written loop.

    python benchmarks/lm_loop_speed.py                  # 96 blocks of 64 tokens, 5 rounds, 1 thread
    python benchmarks/lm_loop_speed.py --rounds 1 --blocks 32   # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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
from distil.train.engine import make_accelerator

TEACHER = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
}
STUDENT = {
    **TEACHER,
    "hidden_size": 32,
    "intermediate_size": 96,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}


def plain_kd_epoch(
    teacher: nn.Module, student: nn.Module, data: DataBundle, cfg: TrainConfig, kd: KDConfig
) -> float:
    """One token-level KD epoch written directly in PyTorch, then validation; returns val perplexity."""
    decay = [p for p in student.parameters() if p.ndim > 1]
    no_decay = [p for p in student.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optimizer.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    n = len(data.train)
    steps = n // cfg.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    t = kd.temperature
    student.train()
    teacher.eval()
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n, generator=g)
    total = torch.zeros(())
    for b in range(steps):
        batch = next(
            data.train.take(order[b * cfg.batch_size : (b + 1) * cfg.batch_size]).batches(cfg.batch_size)
        )
        x, y = batch["inputs"], batch["labels"]
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        s_rows, t_rows = s_logits.flatten(0, 1).float(), t_logits.flatten(0, 1).float()
        kl = F.kl_div(
            F.log_softmax(s_rows / t, dim=1),
            F.log_softmax(t_rows / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        loss = kd.kd_weight * t * t * kl + kd.ce_weight * F.cross_entropy(
            s_rows, y.reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip or math.inf)
        opt.step()
        sched.step()
        total += loss.detach()
    if not math.isfinite(float(total)):
        raise SystemExit("plain loop diverged")
    student.eval()
    nll, count = torch.zeros((), dtype=torch.float64), 0
    with torch.inference_mode():
        for batch in data.val.batches(32):
            logits = student(batch["inputs"])
            labels = batch["labels"].reshape(-1)
            nll += F.cross_entropy(
                logits.flatten(0, 1).float(), labels, ignore_index=-100, reduction="sum"
            ).double()
            count += int((labels != -100).sum())
    return math.exp(float(nll) / count)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=96, help="training blocks")
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5, help="A/B pairs (one epoch each)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    full = load_dataset("python-stdlib", options={"block_size": args.block_size})
    pick = torch.randperm(len(full.train), generator=torch.Generator().manual_seed(0))[: args.blocks]
    data = dataclasses.replace(
        full,
        train=full.train.take(pick.sort().values),
        val=full.val.take(torch.arange(min(16, len(full.val)))),
    )
    cfg = StudentTrainConfig(
        optimizer={"name": "adamw", "weight_decay": 0.01},
        lr=3e-3,
        epochs=1,
        batch_size=args.batch_size,
        grad_clip=1.0,
        teacher_cache="off",  # the plain loop runs its teacher live too
        schedule="cosine",
    )
    kd = KDConfig(temperature=1.0, kd_weight=0.7, ce_weight=0.3)
    vocab = data.num_classes
    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=vocab, config=TEACHER)
    torch.manual_seed(1)
    init = create_model("hf-causal-lm", num_classes=vocab, config=STUDENT).state_dict()

    def student() -> nn.Module:
        model = create_model("hf-causal-lm", num_classes=vocab, config=STUDENT)
        model.load_state_dict(init)
        return model

    accelerator = make_accelerator("cpu")
    steps = len(data.train) // cfg.batch_size
    tokens = steps * cfg.batch_size * args.block_size
    print(
        f"python-stdlib: {len(data.train)} blocks of {args.block_size} tokens, batch {cfg.batch_size}, {steps} "
        f"steps/epoch, {torch.get_num_threads()} thread(s), live teacher"
    )
    # Warm-up (untimed): lazy initialisation happens on the first calls.
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
            + "  ".join(f"{k} {v[-1][0]:.2f}s wall {v[-1][1]:.2f}s cpu" for k, v in times.items()),
            flush=True,
        )
    print()
    print(
        "| loop (1 KD epoch + validation) | CPU s (median) | wall s (median) | tokens/CPU-s | vs plain (CPU) |"
    )
    print("|---|---|---|---|---|")
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()
    }
    for name, (wall, cpu) in med.items():
        print(
            f"| {name} | {cpu:.2f} | {wall:.2f} | {tokens / cpu:.0f} | {med['plain PyTorch'][1] / cpu:.3f}x |"
        )
    for i, what in ((1, "CPU time"), (0, "wall time")):
        ratios = [p[i] / d[i] for p, d in zip(times["plain PyTorch"], times["distil"], strict=True)]
        print(
            f"distil/plain tokens/s by {what}, per round: {', '.join(f'{x:.3f}' for x in ratios)} "
            f"(median {statistics.median(ratios):.3f}x; target >= 0.95x)"
        )


if __name__ == "__main__":
    main()
