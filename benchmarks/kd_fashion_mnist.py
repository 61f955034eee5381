"""Issue-2 benchmark: LargeNet teacher -> SmallNet student on Fashion-MNIST, same recipe and budget.

Trains the teacher once, then for each seed a student from scratch and a distilled student (both from
the same initial weights), and prints one Markdown table with test accuracies (mean ± std over seeds),
parameter ratio and latency ratio measured side by side in this run.

    python benchmarks/kd_fashion_mnist.py                       # 10 epochs, seeds 0 1 (about 40 min, 2 cores)
    python benchmarks/kd_fashion_mnist.py --epochs 1 --limit 2000 --seeds 0   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console

from distil.api import distill, train_model
from distil.config import load_recipe
from distil.data import load_dataset
from distil.measure import compare, measure_model, predict
from distil.recipes import resolve_recipe
from distil.report.progress import make_progress
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--limit", type=int, default=None, help="train on at most this many images (smoke tests)")
    ap.add_argument(
        "--teacher", default=None, help="reuse a distil teacher checkpoint instead of training one"
    )
    ap.add_argument("--out", default="benchmarks/out/kd_fashion_mnist")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    args = ap.parse_args()

    console = Console()
    recipe = load_recipe(
        resolve_recipe(args.recipe),
        [f"teacher_train.epochs={args.epochs}", f"student_train.epochs={args.epochs}", *args.overrides]
        + ([f"data.limit={args.limit}"] if args.limit else []),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(
        recipe.data.name, recipe.data.root, val_fraction=recipe.data.val_fraction, limit=recipe.data.limit
    )
    console.print(
        f"{data.name}: {len(data.train)} train / {len(data.test)} test images, "
        f"{torch.get_num_threads()} threads"
    )
    results: dict[str, list[float]] = {"student_scratch": [], "student_kd": []}
    timings: dict[str, float] = {}
    with make_progress(console) as progress:
        if args.teacher:
            teacher, _ = load_checkpoint(args.teacher)
            teacher_spec = None
        else:
            teacher, teacher_spec = build_model(recipe.teacher, data, seed=recipe.teacher_train.seed)
            t0 = time.perf_counter()
            teacher = train_model(
                teacher, data, recipe.teacher_train, progress=progress, description="teacher"
            ).model
            timings["teacher_train_s"] = time.perf_counter() - t0
            save_checkpoint(out / "teacher", teacher, teacher_spec, {"data": data.describe()})
        for seed in args.seeds:
            cfg = recipe.student_train.model_copy(update={"seed": seed})
            scratch, _ = build_model(recipe.student, data, seed=seed)
            kd_student, _ = build_model(recipe.student, data, seed=seed)
            t0 = time.perf_counter()
            scratch = train_model(scratch, data, cfg, progress=progress, description=f"scratch s{seed}").model
            timings[f"scratch_s{seed}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            kd_student = distill(
                teacher, kd_student, data, cfg, recipe.kd, progress=progress, description=f"kd s{seed}"
            ).model
            timings[f"kd_s{seed}_s"] = time.perf_counter() - t0
            for name, model in (("student_scratch", scratch), ("student_kd", kd_student)):
                logits = predict(model.eval(), data.test.x)
                results[name].append(float((logits.argmax(1) == data.test.y).float().mean()))
            console.print(
                f"seed {seed}: scratch {results['student_scratch'][-1]:.2%}, "
                f"KD {results['student_kd'][-1]:.2%}"
            )

    teacher = teacher.to(memory_format=torch.contiguous_format).eval()
    kd_student = kd_student.to(memory_format=torch.contiguous_format).eval()
    shape = data.input_shape
    t_metrics = measure_model(
        "teacher", teacher, data.test.x, data.test.y, input_shape=shape, min_run_time=1.0
    )
    s_metrics = measure_model(
        "student",
        kd_student,
        data.test.x,
        data.test.y,
        input_shape=shape,
        teacher_logits=predict(teacher, data.test.x),
        min_run_time=1.0,
    )
    ratios = compare(t_metrics, s_metrics)

    def fmt(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2%} ± {sd:.2%}"

    table = "\n".join(
        [
            f"| {data.name}, {args.epochs} epochs, seeds {args.seeds} | value |",
            "|---|---|",
            f"| teacher (LargeNet) test accuracy | {t_metrics.accuracy:.2%} |",
            f"| student (SmallNet) from scratch | {fmt(results['student_scratch'])} |",
            f"| student (SmallNet) distilled (KD, T={recipe.kd.temperature}, kd_weight={recipe.kd.kd_weight}) "
            f"| {fmt(results['student_kd'])} |",
            f"| KD gain over scratch | {100 * (statistics.mean(results['student_kd']) - statistics.mean(results['student_scratch'])):+.2f} pt |",
            f"| parameters teacher / student | {t_metrics.params:,} / {s_metrics.params:,} = {ratios['compression']:.1f}x |",
            f"| latency batch 1, teacher / student | {t_metrics.latency_b1_ms:.3f} / {s_metrics.latency_b1_ms:.3f} ms "
            f"= {ratios['speedup_b1']:.2f}x |",
            f"| throughput batch 256, student / teacher | {s_metrics.throughput_b256:,.0f} / "
            f"{t_metrics.throughput_b256:,.0f} img/s = {ratios['throughput_ratio']:.2f}x |",
        ]
    )
    console.print(table, markup=False, highlight=False)
    record = {
        "recipe": recipe.model_dump(mode="json"),
        "epochs": args.epochs,
        "seeds": args.seeds,
        "accuracy": results,
        "teacher": t_metrics.to_dict(),
        "student": s_metrics.to_dict(),
        "ratios": ratios,
        "timings_s": timings,
        "threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
