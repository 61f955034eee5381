"""Issue-12 benchmark: KD from a teacher cache of augmented *views* vs a live teacher vs student-only.

The `fashion-mnist` recipe (LargeNet teacher -> SmallNet student, random crop pad 2 + horizontal flip,
10 epochs, batch 128, SGD cosine) with three arms per seed, run one after the other in the same process
with the same thread count, so their per-epoch times are ratios measured side by side:

* student-only: the student trained on the labels (a new augmentation draw every epoch);
* live KD: the teacher runs on every batch (a new draw every epoch, teacher and student see it);
* views KD: `teacher_cache: {views: V}`: V draws per sample are fixed, the teacher's outputs on exactly
  those inputs are cached once (reported apart, as a fraction of the live KD run), and epoch e replays
  view v(e, id) to the student.

Per-epoch cost is the mean of the records' training seconds (evaluation excluded; the same for all arms).
After the seeds, views KD is repeated at other V for the first seed (accuracy against V). Results are
rewritten after every arm to `<out>/results.json` and `<out>/table.md`, so a partial run reports what
finished.

    python benchmarks/views_cache.py                                # full recipe: 60k images, 3 seeds
    python benchmarks/views_cache.py --limit 2000 --epochs 1 --seeds 0 --sweep 1  # smoke test
    python benchmarks/views_cache.py --limit 3000 --timing-rounds 5  # per-epoch cost only, CPU time too

`--timing-rounds R` measures cost only: R rounds of one epoch each of student-only, views KD (cache
built before) and live KD, alternating so drift in machine load hits all arms alike, each timed by wall
clock and by this process's CPU time (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import distil
from distil.api import distill, train_model
from distil.config import TeacherCacheConfig, load_recipe
from distil.data import load_dataset
from distil.fileio import atomic_write_json
from distil.models import create_model
from distil.train.checkpoint import load_checkpoint
from distil.train.engine import make_accelerator


def epoch_seconds(history: list[dict[str, Any]]) -> float:
    return statistics.mean(r["seconds"] for r in history)


def table(results: dict[str, Any]) -> str:
    """The markdown summary of what has finished so far."""
    lines = [
        f"Fashion-MNIST `fashion-mnist` recipe, {results['train_images']} training images, "
        f"{results['epochs']} epochs, threads={results['threads']}, teacher {results['teacher']}",
        "",
        "| seed | student-only acc | live KD acc | views KD acc (V="
        f"{results['views']}) | live/student epoch | views/student epoch | cache build / live KD run |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:

        def pct(k: str, run: dict[str, Any] = run) -> str:
            return f"{100 * run[k]:.2f}%" if k in run else "-"

        def ratio(k: str, run: dict[str, Any] = run) -> str:
            return f"{run[k]:.2f}x" if k in run else "-"

        lines.append(
            f"| {run['seed']} | {pct('student_acc')} | {pct('live_acc')} | {pct('views_acc')} | "
            f"{ratio('live_over_student')} | {ratio('views_over_student')} | {ratio('build_over_live_run')} |"
        )
    done = [r for r in results["runs"] if "views_acc" in r and "live_acc" in r]
    if done:
        live = statistics.mean(r["live_acc"] for r in done)
        views = statistics.mean(r["views_acc"] for r in done)
        lines.append(
            f"| mean of {len(done)} | {100 * statistics.mean(r['student_acc'] for r in done):.2f}% | "
            f"{100 * live:.2f}% | {100 * views:.2f}% ({100 * (views - live):+.2f} pt) | "
            f"{statistics.mean(r['live_over_student'] for r in done):.2f}x | "
            f"{statistics.mean(r['views_over_student'] for r in done):.2f}x | "
            f"{statistics.mean(r['build_over_live_run'] for r in done):.2f}x |"
        )
    if results["sweep"]:
        seed = results["runs"][0]["seed"]
        lines += ["", f"| V (seed {seed}) | views KD acc | views/student epoch | cache build / live KD run |"]
        lines.append("|---|---|---|---|")
        for row in sorted(results["sweep"], key=lambda r: r["views"]):
            lines.append(
                f"| {row['views']} | {100 * row['views_acc']:.2f}% | {row['views_over_student']:.2f}x | "
                f"{row['build_over_live_run']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def timing(
    rounds: int,
    teacher: nn.Module,
    data: Any,
    base: Any,
    recipe: Any,
    accelerator: Any,
    cache_dir: Path,
    views: int,
    out: Path,
    student: Any,
) -> None:
    """Per-epoch cost of the three arms, alternating, by wall clock and process CPU time."""
    one = base.model_copy(update={"epochs": 1, "seed": 0})
    cached = one.model_copy(update={"teacher_cache": TeacherCacheConfig(views=views, dir=str(cache_dir))})
    wall, cpu = time.perf_counter(), time.process_time()
    distill(teacher, student(0), data, cached, recipe.kd, accelerator=accelerator)  # builds the cache
    build = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    arms: dict[str, Any] = {
        "student": lambda: train_model(student(0), data, one, accelerator=accelerator),
        "views_kd": lambda: distill(teacher, student(0), data, cached, recipe.kd, accelerator=accelerator),
        "live_kd": lambda: distill(teacher, student(0), data, one, recipe.kd, accelerator=accelerator),
    }
    # wall/cpu: the whole call (set-up, opening the cache, the epoch, evaluation); loop: the epoch's
    # training loop alone (its record's seconds, wall clock).
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "loop": []} for k in arms}
    for _ in range(rounds):
        for name, fn in arms.items():
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["loop"].append(result.history[0]["seconds"])
    med = {k: {m: statistics.median(v) for m, v in t.items()} for k, t in times.items()}
    result = {
        "train_images": len(data.train),
        "rounds": rounds,
        "views": views,
        "median_epoch_s": med,
        "views_over_student": {m: med["views_kd"][m] / med["student"][m] for m in ("wall", "cpu", "loop")},
        "live_over_student": {m: med["live_kd"][m] / med["student"][m] for m in ("wall", "cpu", "loop")},
        "build_over_live_epoch": {m: build[f"{m}_s"] / med["live_kd"][m] for m in ("wall", "cpu")},
        "build": build,
    }
    atomic_write_json(out / "timing.json", result)
    print(json.dumps(result, indent=1), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="training images (default: all 60k)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's (10)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--views", type=int, default=4, help="V of the per-seed comparison")
    ap.add_argument("--sweep", type=int, nargs="*", default=[1, 2, 8], help="more V at the first seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher", default="/work/bench/kd/teacher", help="a LargeNet checkpoint")
    ap.add_argument("--out", default="/work/bench/views")
    ap.add_argument("--timing-rounds", type=int, default=0, help="only time alternating 1-epoch arms")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(Path(distil.__file__).parent / "recipes" / "fashion-mnist.yaml")
    data = load_dataset("fashion-mnist", val_fraction=recipe.data.val_fraction, limit=args.limit)
    base = recipe.student_train.model_copy(update={"epochs": args.epochs or recipe.student_train.epochs})
    if Path(args.teacher + ".safetensors").exists():
        teacher, _ = load_checkpoint(args.teacher)
        teacher_name = f"{args.teacher} (trained LargeNet)"
    else:
        print(f"no teacher at {args.teacher}: training one with the recipe's teacher_train")
        torch.manual_seed(0)
        model = create_model("largenet", num_classes=10, in_channels=1, image_size=28)
        teacher = train_model(
            model, data, recipe.teacher_train.model_copy(update={"epochs": base.epochs})
        ).model
        teacher_name = "LargeNet trained here"
    cache_dir = Path(tempfile.mkdtemp(prefix="distil-views-bench-"))
    accelerator = make_accelerator("cpu")
    results: dict[str, Any] = {
        "train_images": len(data.train),
        "epochs": base.epochs,
        "threads": args.threads,
        "teacher": teacher_name,
        "augment": data.augment,
        "views": args.views,
        "runs": [],
        "sweep": [],
    }

    def save() -> None:
        atomic_write_json(out / "results.json", results)
        (out / "table.md").write_text(table(results), encoding="utf-8")
        print(table(results), flush=True)

    def student(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return create_model("smallnet", num_classes=10, in_channels=1, image_size=28)

    def views_arm(seed: int, views: int, cfg: Any, row: dict[str, Any]) -> None:
        started = time.perf_counter()
        res = distill(
            teacher,
            student(seed),
            data,
            cfg.model_copy(update={"teacher_cache": TeacherCacheConfig(views=views, dir=str(cache_dir))}),
            recipe.kd,
            accelerator=accelerator,
        )
        cache = res.history[0]["teacher_cache"]
        assert res.history[0]["teacher_source"] == "cache" and not cache["hit"], res.history[0]
        row.update(
            views=views,
            views_acc=res.final_accuracy,
            views_epoch_s=epoch_seconds(res.history),
            views_run_s=time.perf_counter() - started,
            build_s=cache["seconds"],
        )

    # Warm-up (untimed): lazy initialisation and oneDNN kernel selection happen on the first calls.
    small = load_dataset("fashion-mnist", val_fraction=0.5, limit=1024)
    warm = base.model_copy(update={"epochs": 1})
    train_model(student(0), small, warm, accelerator=accelerator)
    distill(teacher, student(0), small, warm, recipe.kd, accelerator=accelerator)

    if args.timing_rounds:
        timing(
            args.timing_rounds, teacher, data, base, recipe, accelerator, cache_dir, args.views, out, student
        )
        return

    for seed in args.seeds:
        cfg = base.model_copy(update={"seed": seed})
        row: dict[str, Any] = {"seed": seed}
        results["runs"].append(row)
        scratch = train_model(student(seed), data, cfg, accelerator=accelerator)
        row.update(student_acc=scratch.final_accuracy, student_epoch_s=epoch_seconds(scratch.history))
        save()
        started = time.perf_counter()
        live = distill(teacher, student(seed), data, cfg, recipe.kd, accelerator=accelerator)
        assert live.history[0]["teacher_source"] == "live", live.history[0]
        row.update(
            live_acc=live.final_accuracy,
            live_epoch_s=epoch_seconds(live.history),
            live_run_s=time.perf_counter() - started,
        )
        row["live_over_student"] = row["live_epoch_s"] / row["student_epoch_s"]
        save()
        views_arm(seed, args.views, cfg, row)
        row["views_over_student"] = row["views_epoch_s"] / row["student_epoch_s"]
        row["build_over_live_run"] = row["build_s"] / row["live_run_s"]
        save()
    first = results["runs"][0]
    cfg = base.model_copy(update={"seed": first["seed"]})
    for views in args.sweep:
        row = {}
        views_arm(first["seed"], views, cfg, row)
        row["views_over_student"] = row["views_epoch_s"] / first["student_epoch_s"]
        row["build_over_live_run"] = row["build_s"] / first["live_run_s"]
        results["sweep"].append(row)
        save()
    results["sweep"].append(
        {
            "views": first["views"],
            "views_acc": first["views_acc"],
            "views_over_student": first["views_over_student"],
            "build_over_live_run": first["build_over_live_run"],
        }
    )
    save()


if __name__ == "__main__":
    main()
