"""Issue-2 benchmark: LargeNet teacher -> SmallNet student on Fashion-MNIST, same recipe and budget.

The teacher is trained once; then, for each seed, a student from scratch and a distilled student that
start from the same initial weights and use the same recipe (only the loss differs). The table gives
test accuracies (mean ± std over seeds), the parameter ratio and the latency ratio measured side by
side in one process.

    python benchmarks/kd_fashion_mnist.py                     # everything, seeds 0 1 (~40 min on 2 idle cores)

The stages can run as separate processes (e.g. one per seed, in parallel, one thread each):

    python benchmarks/kd_fashion_mnist.py --stage teacher
    python benchmarks/kd_fashion_mnist.py --stage students --seeds 0 --threads 1 &
    python benchmarks/kd_fashion_mnist.py --stage students --seeds 1 --threads 1
    python benchmarks/kd_fashion_mnist.py --stage table      # latency measured here, side by side

Smoke test: add `--epochs 1 --limit 2000 --out /tmp/kd`.
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
from distil.config import Recipe, load_recipe
from distil.data import DataBundle, load_dataset
from distil.measure import accuracy, compare, measure_model, predict
from distil.recipes import resolve_recipe
from distil.report.progress import make_progress
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint

console = Console()


def stage_teacher(recipe: Recipe, data: DataBundle, out: Path) -> None:
    teacher, spec = build_model(recipe.teacher, data, seed=recipe.teacher_train.seed)
    started = time.perf_counter()
    with make_progress(console) as progress:
        result = train_model(teacher, data, recipe.teacher_train, progress=progress, description="teacher")
    seconds = time.perf_counter() - started
    model = result.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    acc = accuracy(predict(model, data.test.x), data.test.y)
    save_checkpoint(out / "teacher", model, spec, {"data": data.describe(), "history": result.history})
    (out / "teacher_result.json").write_text(json.dumps({"accuracy": acc, "train_seconds": seconds}))
    console.print(f"teacher: test accuracy {acc:.2%} after {seconds:.0f} s")


def stage_students(recipe: Recipe, data: DataBundle, out: Path, seeds: list[int]) -> None:
    teacher, _ = load_checkpoint(out / "teacher")
    for seed in seeds:
        cfg = recipe.student_train.model_copy(update={"seed": seed})
        record: dict[str, object] = {"seed": seed}
        for name in ("student_scratch", "student_kd"):
            student, spec = build_model(recipe.student, data, seed=seed)  # same init for both
            started = time.perf_counter()
            with make_progress(console) as progress:
                if name == "student_kd":
                    result = distill(
                        teacher, student, data, cfg, recipe.kd, progress=progress, description=name
                    )
                else:
                    result = train_model(student, data, cfg, progress=progress, description=name)
            model = result.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
            record[name] = accuracy(predict(model, data.test.x), data.test.y)
            record[f"{name}_seconds"] = time.perf_counter() - started
            save_checkpoint(out / f"{name}_s{seed}", model, spec, {"data": data.describe()})
        (out / f"students_s{seed}.json").write_text(json.dumps(record))
        console.print(f"seed {seed}: scratch {record['student_scratch']:.2%}, KD {record['student_kd']:.2%}")


def stage_table(recipe: Recipe, data: DataBundle, out: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("students_s*.json"))]
    if not runs:
        raise SystemExit(f"no students_s*.json in {out}: run --stage students first")
    teacher, _ = load_checkpoint(out / "teacher")
    student, _ = load_checkpoint(out / f"student_kd_s{runs[0]['seed']}")
    shape = data.input_shape
    t = measure_model("teacher", teacher, data.test.x, data.test.y, input_shape=shape, min_run_time=2.0)
    s = measure_model(
        "student",
        student,
        data.test.x,
        data.test.y,
        input_shape=shape,
        teacher_logits=predict(teacher, data.test.x),
        min_run_time=2.0,
    )
    r = compare(t, s)

    def stats(key: str) -> tuple[float, float]:
        values = [float(run[key]) for run in runs]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    (scratch_mean, scratch_sd), (kd_mean, kd_sd) = stats("student_scratch"), stats("student_kd")
    seeds = [run["seed"] for run in runs]
    epochs = recipe.student_train.epochs
    per_seed = ", ".join(
        f"s{run['seed']}: {run['student_scratch']:.2%} / {run['student_kd']:.2%}" for run in runs
    )
    rows = [
        f"| Fashion-MNIST test set (10k), {epochs} epochs each, student seeds {seeds} | |",
        "|---|---|",
        f"| teacher LargeNet | {t.accuracy:.2%} |",
        f"| student SmallNet from scratch (mean ± sd) | {scratch_mean:.2%} ± {scratch_sd:.2%} |",
        f"| student SmallNet distilled, T={recipe.kd.temperature:g}, kd_weight={recipe.kd.kd_weight:g}, "
        f"ce_weight={recipe.kd.ce_weight:g} | {kd_mean:.2%} ± {kd_sd:.2%} |",
        f"| per seed (scratch / KD) | {per_seed} |",
        f"| KD gain over scratch | {100 * (kd_mean - scratch_mean):+.2f} pt |",
        f"| KD student agreement with teacher (seed {seeds[0]}) | {s.agreement:.2%} |",
        f"| parameters teacher / student | {t.params:,} / {s.params:,} = {r['params_ratio']:.1f}x |",
        f"| weights on disk teacher / student | {t.bytes / 1e6:.2f} MB / {s.bytes / 1e3:.0f} kB = {r['bytes_ratio']:.1f}x |",
        f"| MACs per image teacher / student | {t.macs / 1e6:.2f}M / {s.macs / 1e6:.3f}M = {r['macs_ratio']:.1f}x |",
        f"| CPU latency batch 1 ({torch.get_num_threads()} threads) teacher / student | "
        f"{t.latency_b1_ms:.3f} / {s.latency_b1_ms:.3f} ms = {r['speedup_b1']:.2f}x |",
        f"| CPU throughput batch 256 student / teacher | {s.throughput_b256:,.0f} / {t.throughput_b256:,.0f} "
        f"img/s = {r['throughput_ratio']:.2f}x |",
    ]
    table = "\n".join(rows)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(
        json.dumps({"runs": runs, "teacher": t.to_dict(), "student": s.to_dict(), "ratios": r}, indent=2)
    )
    print(table)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["all", "teacher", "students", "table"], default="all")
    ap.add_argument("--recipe", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--limit", type=int, default=None, help="train on at most this many images (smoke tests)")
    ap.add_argument("--out", default="benchmarks/out/kd_fashion_mnist")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        f"teacher_train.epochs={args.epochs}",
        f"student_train.epochs={args.epochs}",
        *args.overrides,
    ]
    recipe = load_recipe(
        resolve_recipe(args.recipe), overrides + ([f"data.limit={args.limit}"] if args.limit else [])
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = recipe.data
    data = load_dataset(d.name, d.root, val_fraction=d.val_fraction, limit=d.limit)
    console.print(
        f"{data.name}: {len(data.train)} train / {len(data.test)} test, {torch.get_num_threads()} threads"
    )
    if args.stage in ("all", "teacher"):
        stage_teacher(recipe, data, out)
    if args.stage in ("all", "students"):
        stage_students(recipe, data, out, args.seeds)
    if args.stage in ("all", "table"):
        stage_table(recipe, data, out)


if __name__ == "__main__":
    main()
