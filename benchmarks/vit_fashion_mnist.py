"""Issue-26 benchmark: a ViT student of a CNN teacher, DeiT's distillation token against soft KD and scratch.

One LargeNet teacher (``--teacher CKPT``, else trained here on the subset), one ViT (``vit-tiny``: about
SmallNet's parameter count, both counts printed), the same recipe, epochs, augmentation and seeds for every
arm; only the loss (and the token) differ:

    scratch   vit-tiny, cross-entropy on the labels
    soft KD   vit-tiny, distil's kd method (0.1 CE + 0.9 T^2 KL at T=4) on its logits
    DeiT hard vit-tiny with a distillation token: 0.5 CE(class head, y) + 0.5 CE(dist head, argmax teacher);
              tested on the two heads' averaged logits
    optional (``--arms``): "soft KD, DeiT weights" (0.9 CE + 0.1 T^2 KL at T=3, DeiT's soft setting) and
    "DeiT soft token" (0.5 CE on the class head + 0.5 T^2 KL on the distillation head)

DeiT's published ordering on ImageNet is hard-token > soft KD > scratch (Touvron et al. 2021,
their distillation table).
Prints one Markdown table: test accuracy per seed and mean ± std on all 10k test images.

    python benchmarks/vit_fashion_mnist.py                       # 4k images, 8 epochs, seeds 0 1 2
    python benchmarks/vit_fashion_mnist.py --limit 1000 --epochs 1 --seeds 0   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from distil.api import distill, train_model
from distil.config import KDConfig, ModelConfig, TrainConfig
from distil.data import load_dataset
from distil.losses import method_terms
from distil.measure import predict
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint

T = 4.0
# arm -> (distillation token, loss terms or None for plain training)
ARMS: dict[str, tuple[bool, KDConfig | None]] = {
    "scratch": (False, None),
    "soft KD": (False, KDConfig(terms=method_terms("kd"), temperature=T)),
    # DeiT's own soft-distillation setting (tau 3, lambda 0.1): 0.9 CE + 0.1 T^2 KL at T = 3.
    "soft KD, DeiT weights": (False, KDConfig(terms={"ce": 0.9, "kd": 0.1}, temperature=3.0)),
    "DeiT hard token": (True, KDConfig(terms=method_terms("deit"), temperature=T)),
    "DeiT soft token": (True, KDConfig(terms=method_terms("deit_soft"), temperature=T)),
}
DEFAULT_ARMS = ["scratch", "soft KD", "DeiT hard token"]


def accuracy_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model.eval(), x).argmax(1) == y).float().mean())


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=4000, help="training images (subset of the 60k)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    ap.add_argument("--teacher", default=None, help="a LargeNet checkpoint; else one is trained here")
    ap.add_argument("--teacher-epochs", type=int, default=6)
    ap.add_argument("--patch-size", type=int, default=7, help="ViT patch side (7: 4x4 patches of 28x28)")
    ap.add_argument("--out", default="benchmarks/out/vit_fashion_mnist")
    args = ap.parse_args()
    vit = ModelConfig(model="vit-tiny", kwargs={"patch_size": args.patch_size})
    vit_token = ModelConfig(model="vit-tiny", kwargs={"patch_size": args.patch_size, "distill_token": True})
    torch.set_num_threads(1)
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("fashion-mnist", val_fraction=0.0, limit=args.limit)
    # ViTs want AdamW with weight decay and a warm-up (DeiT's recipe, scaled down); every arm uses it.
    cfg = TrainConfig(
        optimizer={"name": "adamw", "weight_decay": 0.05},
        lr=1e-3,
        epochs=args.epochs,
        batch_size=128,
        schedule={"warmup_epochs": 1.0},
        augment="auto",
    )
    # `limit` also shrinks the test split: evaluate on all 10k test images, in the subset's normalisation.
    full = load_dataset("fashion-mnist", val_fraction=0.0)
    m_full, s_full = torch.tensor(full.mean).view(1, -1, 1, 1), torch.tensor(full.std).view(1, -1, 1, 1)
    m_sub, s_sub = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    x_test, y_test = (full.test.x * s_full + m_full - m_sub) / s_sub, full.test.y

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if args.teacher:
        teacher, _ = load_checkpoint(args.teacher)
        teacher_note = f"LargeNet from {args.teacher}"
    else:
        teacher, spec = build_model(ModelConfig(model="largenet"), data, seed=0)
        tcfg = TrainConfig(
            optimizer="sgd",
            lr=0.05,
            epochs=args.teacher_epochs,
            batch_size=128,
            schedule={"warmup_epochs": 0.5},
            augment="auto",
        )
        teacher = train_model(teacher, data, tcfg, description="teacher").model
        save_checkpoint(out / "teacher", teacher, spec, {"data": data.describe()})
        teacher_note = f"LargeNet trained here ({args.teacher_epochs} epochs on the subset)"
    timings["teacher"] = time.perf_counter() - t0
    t_acc = accuracy_of(teacher, x_test, y_test)
    sizes = {
        "largenet": n_params(teacher),
        "smallnet": n_params(build_model(ModelConfig(model="smallnet"), data, seed=0)[0]),
        "vit-tiny": n_params(build_model(vit, data, seed=0)[0]),
        "vit-tiny + distillation token": n_params(build_model(vit_token, data, seed=0)[0]),
    }
    console.print(f"teacher ({teacher_note}): {t_acc:.2%}; parameters {sizes}")

    results: dict[str, list[float]] = {arm: [] for arm in args.arms}
    record: dict[str, Any] = {
        "results": results,
        "timings_s": timings,
        "limit": args.limit,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "teacher": teacher_note,
        "teacher_acc": t_acc,
        "params": sizes,
        "patch_size": args.patch_size,
        "recipe": cfg.model_dump(mode="json"),
    }
    for seed in args.seeds:
        for arm in args.arms:
            token, kd = ARMS[arm]
            student, _ = build_model(vit_token if token else vit, data, seed=seed)
            scfg = cfg.model_copy(update={"seed": seed})
            t0 = time.perf_counter()
            if kd is None:
                model = train_model(student, data, scfg, description=arm).model
            else:
                model = distill(teacher, student, data, scfg, kd, description=arm).model
            timings[f"{arm} s{seed}"] = round(time.perf_counter() - t0, 1)
            results[arm].append(accuracy_of(model, x_test, y_test))
            console.print(f"seed {seed} {arm}: {results[arm][-1]:.2%} ({timings[f'{arm} s{seed}']:.0f} s)")
            (out / "results.json").write_text(json.dumps(record, indent=2))  # partial results survive

    base = statistics.mean(results["scratch"]) if results.get("scratch") else None
    lines = [
        f"| arm (vit-tiny patch {args.patch_size}, {sizes['vit-tiny']:,} params; SmallNet {sizes['smallnet']:,}; {len(data.train)} "
        f"train images, {args.epochs} epochs; {len(y_test)} test images) | "
        + " | ".join(f"seed {s}" for s in args.seeds)
        + " | mean ± std | vs scratch |",
        "|---" * (len(args.seeds) + 3) + "|",
    ]
    for arm, values in results.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        mean = statistics.mean(values)
        gain = f"{100 * (mean - base):+.2f} pt" if base is not None and arm != "scratch" else ""
        per_seed = " | ".join(f"{v:.2%}" for v in values)
        lines.append(f"| {arm} | {per_seed} | {mean:.2%} ± {sd:.2%} | {gain} |")
    lines.append(
        f"| teacher: {teacher_note}, {sizes['largenet']:,} params |"
        + " |" * len(args.seeds)
        + f" {t_acc:.2%} | |"
    )
    table = "\n".join(lines)
    console.print(table, markup=False, highlight=False)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
