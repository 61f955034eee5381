"""FSDP on real GPUs: the same distillation with the student and teacher replicated (DDP) and sharded (FSDP).

Run it under torchrun on a machine with N >= 2 GPUs (NCCL). For each of the two runs it prints, per rank,
the peak GPU memory, tokens/s and the final validation numbers, then checks and exits non-zero when one
fails:

- FSDP shards both models: each rank holds ~1/N of the teacher's and of the student's parameters;
- FSDP's peak GPU memory per rank is below DDP's (the teacher dominates: it is the larger model);
- both learn (the training loss falls) and end close to each other (bf16: 5% on the validation loss);
- every rank returns the same whole student, which reloads into a plain model whose one-process
  evaluation agrees with the one FSDP reported (bf16 compute in the run: 2%).

    torchrun --nproc_per_node 2 benchmarks/gpu_fsdp_check.py --out /tmp/fsdp-check
    torchrun --nproc_per_node 8 benchmarks/gpu_fsdp_check.py --hidden 2048 --layers 16   # bigger teacher
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 benchmarks/gpu_fsdp_check.py --device cpu --hidden 32 \\
        --layers 2 --precision no            # the script's own smoke test on CPU gloo ranks (no memory check)

The data is a synthetic corpus written to --out (random words), tokenized by bytes; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from distil.api import distill
from distil.config import TrainConfig
from distil.data import load_dataset
from distil.measure import split_metrics
from distil.models import create_model
from distil.train.engine import make_accelerator


def _corpus(root: Path, files: int, words: int) -> Path:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(200)] + ["the", "a", "of", "and", "to", "in"] * 20
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"doc{i:03d}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(words)))
    return root


def _llama(hidden: int, layers: int) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(2, hidden // 64),
        "num_key_value_heads": max(2, hidden // 64),
        "max_position_embeddings": 512,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/distil-fsdp-check"))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--precision", default="bf16", choices=["bf16", "no"])
    ap.add_argument("--hidden", type=int, default=1024, help="teacher width (the student is half as wide)")
    ap.add_argument("--layers", type=int, default=8, help="teacher blocks (the student has half as many)")
    ap.add_argument("--block", type=int, default=256, help="tokens per sample")
    ap.add_argument("--batch", type=int, default=8, help="samples per process per step")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--files", type=int, default=64)
    args = ap.parse_args()

    acc = make_accelerator(args.device, args.precision)
    rank, world = acc.process_index, acc.num_processes
    if world < 2:
        print("launch with torchrun --nproc_per_node N (N >= 2)", file=sys.stderr)
        return 2
    if acc.is_main_process:
        _corpus(args.out / "corpus", args.files, 4 * args.block)
    acc.wait_for_everyone()
    data = load_dataset("text", args.out / "corpus", options={"block_size": args.block})
    teacher_cfg = _llama(args.hidden, args.layers)
    student_cfg = _llama(args.hidden // 2, max(1, args.layers // 2))
    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=data.num_classes, config=teacher_cfg)

    runs: dict[str, dict[str, Any]] = {}
    for kind in ("ddp", "fsdp"):
        teacher.cpu()  # where a loaded teacher is: DDP moves it to the device, FSDP shards a copy of it
        torch.manual_seed(1)
        student = create_model("hf-causal-lm", num_classes=data.num_classes, config=student_cfg)
        cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch,
            lr=1e-3,
            optimizer={"name": "adamw", "weight_decay": 0.0},
            grad_clip=1.0,
            fsdp=kind == "fsdp",
        )
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = distill(teacher, student, data, cfg, accelerator=acc)
        peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
        last = result.history[-1]
        runs[kind] = {
            "peak_mib": peak,
            "seconds": round(time.perf_counter() - started, 1),
            "tokens_per_s": last.get("tokens_per_s"),
            "train_loss": [r["train_loss"] for r in result.history],
            "val_loss": last["val_loss"],
            "val_perplexity": last["val_perplexity"],
            "teacher_fsdp": last.get("teacher_fsdp"),
            "fsdp": last.get("fsdp"),
        }
        if kind == "fsdp":
            model = result.model  # whole, on the CPU
            checksum = torch.tensor([float(sum(p.double().sum() for p in model.parameters()))])
            sums = acc.gather(checksum.to(acc.device)).cpu()
            runs[kind]["ranks_agree"] = bool((sums == sums[0]).all())
            single, _ = split_metrics(model.to(acc.device), data.val, data.task, batch_size=8)
            runs[kind]["single_process_val_loss"] = single["loss"]
        # Free the run's device memory before the next one.
        result.model.cpu()
        del result, student
        acc.free_memory()

    checks: dict[str, bool] = {}
    fsdp, ddp = runs["fsdp"], runs["ddp"]
    for what in ("teacher_fsdp", "fsdp"):
        info = fsdp[what]
        checks[f"{what} holds ~1/{world} per rank"] = (
            abs(info["local"] - info["parameters"] / world) < 0.02 * info["parameters"]
        )
    if args.device == "cuda":
        checks["fsdp peak memory < ddp peak memory"] = fsdp["peak_mib"] < ddp["peak_mib"]
    for kind, run in runs.items():
        checks[f"{kind} loss falls"] = run["train_loss"][-1] < run["train_loss"][0]
    tolerance = 0.05 if args.precision == "bf16" else 1e-3
    checks["fsdp val loss close to ddp's"] = (
        abs(fsdp["val_loss"] - ddp["val_loss"]) <= tolerance * ddp["val_loss"]
    )
    checks["every rank returns the same student"] = fsdp["ranks_agree"]
    reported_tolerance = 0.02 if args.precision == "bf16" else 1e-4
    checks["saved student = reported evaluation"] = (
        abs(fsdp["single_process_val_loss"] - fsdp["val_loss"]) <= reported_tolerance * fsdp["val_loss"]
    )
    report = {"rank": rank, "world": world, "device": args.device, "precision": args.precision, "runs": runs}
    report["checks"] = checks
    print(json.dumps(report, indent=1), flush=True)
    if acc.is_main_process:
        (args.out / "report.json").write_text(json.dumps(report, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
