"""Issue-4 benchmark: distillation methods side by side on a Fashion-MNIST subset, same budget.

One LargeNet teacher (the issue-2 benchmark's checkpoint when present, else trained here), one SmallNet
student architecture, the same recipe, epochs and seeds for every method; only the loss differs:

    scratch (CE only), KD, DKD, FitNets, AT, RKD, two-teacher KD (the teacher + a half-width LargeNet
    trained here), deep mutual learning (two SmallNets, no teacher; the first student is reported).

Prints one Markdown table: test accuracy mean ± std over seeds, and the gain over scratch.

    python benchmarks/methods_fashion_mnist.py                      # 5k images, 3 epochs, seeds 0 1
    python benchmarks/methods_fashion_mnist.py --limit 1000 --epochs 1 --seeds 0   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console

from distil.api import distill, mutual_learning, train_model
from distil.config import KDConfig, ModelConfig, TrainConfig
from distil.data import load_dataset
from distil.measure import predict
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint

T = 4.0
# Term weights follow the published recipes (RepDistiller / mdistiller), see distil.losses.METHODS.
METHODS: dict[str, KDConfig | None] = {
    "scratch": None,
    "KD": KDConfig(terms={"ce": 0.1, "kd": 0.9}, temperature=T),
    "DKD": KDConfig(terms={"ce": 1.0, "dkd": 1.0}, temperature=T),
    "FitNets": KDConfig(
        terms={"ce": 1.0, "fitnet": 100.0}, feature_pairs=[("relu2", "relu2")], temperature=T
    ),
    "AT": KDConfig(terms={"ce": 1.0, "at": 1000.0}, feature_pairs=[("relu1", "relu1"), ("relu2", "relu2")]),
    "RKD": KDConfig(terms={"ce": 1.0, "rkd": 1.0}, feature_pairs=[("relu3", "relu3")]),
    "KD, two teachers": KDConfig(terms={"ce": 0.1, "kd": 0.9}, temperature=T),
    "mutual learning": None,
}


def accuracy_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model.eval(), x).argmax(1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=5000, help="training images (subset of the 60k)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--teacher", default="benchmarks/out/kd_fashion_mnist/teacher.safetensors")
    ap.add_argument("--teacher-epochs", type=int, default=3, help="when the teacher checkpoint is missing")
    ap.add_argument("--wait-teacher", type=float, default=0, help="seconds to wait for --teacher to appear")
    ap.add_argument("--out", default="benchmarks/out/methods_fashion_mnist")
    ap.add_argument("--only", nargs="*", default=None, help="run only these methods")
    args = ap.parse_args()
    torch.set_num_threads(1)
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("fashion-mnist", val_fraction=0.0, limit=args.limit)
    cfg = TrainConfig(
        optimizer="sgd",
        lr=0.05,
        epochs=args.epochs,
        batch_size=128,
        schedule={"warmup_epochs": 0.5},
        augment="auto",
    )
    # `limit` also shrinks the test split (limit // 5): evaluate on all 10k test images instead, put in
    # the subset's normalisation (its mean/std are computed on the subset).
    full = load_dataset("fashion-mnist", val_fraction=0.0)
    m_full, s_full = torch.tensor(full.mean).view(1, -1, 1, 1), torch.tensor(full.std).view(1, -1, 1, 1)
    m_sub, s_sub = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    x_test, y_test = (full.test.x * s_full + m_full - m_sub) / s_sub, full.test.y
    timings: dict[str, float] = {}

    results: dict[str, list[float]] = {m: [] for m in METHODS if args.only is None or m in args.only}
    student_cfg = ModelConfig(model="smallnet")

    def run(method: str, seed: int, teachers: list[torch.nn.Module]) -> None:
        scfg = cfg.model_copy(update={"seed": seed})
        kd = METHODS[method]
        student, _ = build_model(student_cfg, data, seed=seed)
        t0 = time.perf_counter()
        if method == "scratch":
            model = train_model(student, data, scfg, description=method).model
        elif method == "mutual learning":
            peer, _ = build_model(student_cfg, data, seed=seed + 1000)
            model = mutual_learning([student, peer], data, scfg, temperature=1.0).models[0]
        elif method == "KD, two teachers":
            assert kd is not None
            model = distill(teachers, student, data, scfg, kd, teacher_weights=[0.5, 0.5]).model
        else:
            assert kd is not None
            model = distill(teachers[0], student, data, scfg, kd, description=method).model
        timings[f"{method} s{seed}"] = time.perf_counter() - t0
        results[method].append(accuracy_of(model, x_test, y_test))
        console.print(
            f"seed {seed} {method}: {results[method][-1]:.2%} ({timings[f'{method} s{seed}']:.0f} s)"
        )

    # Methods without a teacher first: the teacher checkpoint may still be in training elsewhere.
    free = [m for m in results if m in ("scratch", "mutual learning")]
    for seed in args.seeds:
        for method in free:
            run(method, seed, [])
    # The second teacher of the ensemble: a half-width LargeNet, trained briefly on the same subset.
    t0 = time.perf_counter()
    teacher2, _ = build_model(ModelConfig(model="largenet", kwargs={"width": 0.5}), data, seed=1)
    teacher2 = train_model(teacher2, data, cfg.model_copy(update={"epochs": 2}), description="teacher2").model
    timings["teacher2"] = time.perf_counter() - t0
    deadline = time.monotonic() + args.wait_teacher
    while not Path(args.teacher).is_file() and time.monotonic() < deadline:
        time.sleep(10)
    t0 = time.perf_counter()
    if Path(args.teacher).is_file():
        teacher, _ = load_checkpoint(args.teacher)
        teacher_note = f"LargeNet from {args.teacher}"
    else:
        teacher, spec = build_model(ModelConfig(model="largenet"), data, seed=0)
        tcfg = cfg.model_copy(update={"epochs": args.teacher_epochs})
        teacher = train_model(teacher, data, tcfg, description="teacher").model
        save_checkpoint(out / "teacher", teacher, spec, {"data": data.describe()})
        teacher_note = f"LargeNet trained here ({args.teacher_epochs} epochs on the subset)"
    timings["teacher"] = time.perf_counter() - t0
    t_acc, t2_acc = accuracy_of(teacher, x_test, y_test), accuracy_of(teacher2, x_test, y_test)
    console.print(f"teacher {t_acc:.2%}, second teacher (width 0.5, 2 epochs) {t2_acc:.2%}")
    for seed in args.seeds:
        for method in results:
            if method not in free:
                run(method, seed, [teacher, teacher2])

    def mean(v: list[float]) -> float:
        return statistics.mean(v)

    base = mean(results["scratch"]) if results.get("scratch") else None
    lines = [
        f"| method (SmallNet student, {len(data.train)} train images, {args.epochs} epochs, seeds {args.seeds}; "
        f"{len(y_test)} test images) "
        "| test accuracy | vs scratch |",
        "|---|---|---|",
    ]
    for method, values in results.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        gain = f"{100 * (mean(values) - base):+.2f} pt" if base is not None and method != "scratch" else ""
        lines.append(f"| {method} | {mean(values):.2%} ± {sd:.2%} | {gain} |")
    lines.append(f"| teacher: {teacher_note} | {t_acc:.2%} | |")
    lines.append(f"| second teacher: LargeNet width 0.5, 2 epochs | {t2_acc:.2%} | |")
    table = "\n".join(lines)
    console.print(table, markup=False, highlight=False)
    (out / "table.md").write_text(table + "\n")
    record = {
        "results": results,
        "timings_s": timings,
        "limit": args.limit,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "teacher": teacher_note,
        "teacher_acc": t_acc,
        "teacher2_acc": t2_acc,
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
