"""Issue-16 benchmark: feature-vector (tabular) data, distil vs a plain PyTorch MLP on the same split.

For scikit-learn's bundled breast-cancer and wine sets, one run prints side by side, on the same
stratified 80/20 split (seed 0) and the same seed:

* distil's `tabular-wine` recipe (data.name switched per set): the MLP teacher, the small MLP student
  trained from scratch, and the student distilled from the teacher (KD);
* a plain PyTorch loop written here without distil: the features standardised per feature with the
  training split's statistics, the same two MLP shapes, AdamW with a cosine schedule, same epochs.

    python benchmarks/tabular_sklearn.py              # ~1 min on 2 busy CPU cores
    python benchmarks/tabular_sklearn.py --epochs 20  # smoke
"""

from __future__ import annotations

import argparse
import itertools
import math

import torch
from rich.console import Console
from torch import nn

from distil.config import load_recipe
from distil.data.raw import split_off_test
from distil.data.tabular import _read_sklearn_csv
from distil.recipes import resolve_recipe
from distil.run import run_pipeline


def plain_mlp_accuracy(name: str, hidden: list[int], epochs: int, lr: float, wd: float, seed: int) -> float:
    """Test accuracy of an MLP trained by a textbook PyTorch loop (no distil code but the split)."""
    features, target, _ = _read_sklearn_csv(name)
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(target)
    x_train, y_train, x_test, y_test = split_off_test(x, y)  # the split distil's reader makes
    mean, std = x_train.mean(0), x_train.std(0, unbiased=False).clamp_min(1e-8)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(seed)
    sizes = [x.shape[1], *hidden, int(y.max()) + 1]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*layers)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    batch = 32
    steps = epochs * math.ceil(len(y_train) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y_train), generator=g)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (both models)")
    ap.add_argument(
        "--seed", type=int, default=None, help="training seed of every model (the split stays fixed)"
    )
    ap.add_argument("--out", default="benchmarks/out/tabular_sklearn")
    args = ap.parse_args()
    torch.set_num_threads(1)
    console = Console(width=200)
    rows = []
    for name in ("breast-cancer", "wine"):
        sets = [f"data.name={name}", f"name=tabular-{name}"]
        if args.epochs:
            sets += [f"teacher_train.epochs={args.epochs}", f"student_train.epochs={args.epochs}"]
        if args.seed is not None:
            sets += [f"teacher_train.seed={args.seed}", f"student_train.seed={args.seed}"]
        recipe = load_recipe(resolve_recipe("tabular-wine"), sets)
        result = run_pipeline(
            recipe, args.out, console=Console(quiet=True), show_progress=False, measure_latency=False
        )
        acc = {m.name: m.accuracy for m in result.metrics}
        params = {m.name: m.params for m in result.metrics}
        cfg = recipe.teacher_train
        plain = {
            role: plain_mlp_accuracy(
                name, list(spec.kwargs["hidden"]), cfg.epochs, cfg.lr, cfg.optimizer.weight_decay, cfg.seed
            )
            for role, spec in (("teacher", recipe.teacher), ("student", recipe.student))
        }
        rows.append((name, acc, params, plain, recipe))
    console.print(
        "| data | test n | params teacher / student | distil teacher | plain MLP (teacher shape) "
        "| distil student scratch | distil student KD | plain MLP (student shape) |"
    )
    console.print("|---|---|---|---|---|---|---|---|")
    for name, acc, params, plain, _ in rows:
        n = len(split_off_test(*(torch.tensor(a) for a in _read_sklearn_csv(name)[:2]))[3])
        console.print(
            f"| {name} | {n} | {params['teacher']:,} / {params['student_kd']:,} | {acc['teacher']:.2%} | {plain['teacher']:.2%} | {acc['student_scratch']:.2%} "
            f"| {acc['student_kd']:.2%} | {plain['student']:.2%} |"
        )
    r = rows[0][-1]
    console.print(
        f"teacher mlp hidden={r.teacher.kwargs['hidden']}, student mlp hidden={r.student.kwargs['hidden']}, "
        f"{r.teacher_train.epochs} epochs, {r.teacher_train.optimizer.name} lr {r.teacher_train.lr}, seed "
        f"{r.teacher_train.seed}; one test sample is {1 / 36:.1%} of wine and {1 / 114:.1%} of breast-cancer"
    )


if __name__ == "__main__":
    main()
