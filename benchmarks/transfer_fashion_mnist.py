"""Issue-3 benchmark: parameter transfer vs distillation vs both, for a thinner LargeNet on Fashion-MNIST.

Teacher: the seed's LargeNet (a trained checkpoint via --teacher, or trained here on the same subset).
Student: LargeNet at --width (0.5 = half the channels/units of every layer, same layout).
Four ways to get the student, each with the same recipe, seed and epoch budget:

* random     : random init, cross-entropy on labels;
* transfer   : init by weight selection from the teacher (uniform channels), cross-entropy;
* kd         : random init, Hinton KD from the teacher;
* transfer+kd: weight-selection init, then Hinton KD.

Each budget (--budgets, e.g. 1 and 3 epochs) is a separate run with its own cosine schedule; the test
accuracy after the run is reported (mean ± std over --seeds), plus the accuracy of the transferred
student before any training.

    python benchmarks/transfer_fashion_mnist.py --limit 10000 --budgets 1 3 --seeds 0 1
    python benchmarks/transfer_fashion_mnist.py --teacher benchmarks/out/kd_fashion_mnist/teacher
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
from distil.config import ModelConfig, TransferConfig, load_recipe
from distil.data import load_dataset
from distil.measure import accuracy, predict
from distil.recipes import resolve_recipe
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint
from distil.transfer import transfer_parameters, transferred_kd, transferred_lr_scale

METHODS = ("random", "transfer", "kd", "transfer+kd")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=None, help="a trained LargeNet distil checkpoint to reuse")
    ap.add_argument("--teacher-epochs", type=int, default=3, help="epochs when the teacher is trained here")
    ap.add_argument("--width", type=float, default=0.5, help="student width relative to the teacher")
    ap.add_argument("--selection", default="uniform", choices=["uniform", "first", "l1"])
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--limit", type=int, default=10000, help="training images (the test set is always all 10k)"
    )
    ap.add_argument("--out", default="benchmarks/out/transfer_fashion_mnist")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    ap.add_argument(
        "--kd-lr-scale",
        type=float,
        default=None,
        help="transfer+kd trains at lr times this (default: distil's transfer.lr_scale rule, "
        "distil.transfer.TRANSFERRED_LR_SCALE)",
    )
    ap.add_argument(
        "--transfer-lr-scale",
        type=float,
        default=1.0,
        help="transfer (cross-entropy) trains at lr times this",
    )
    ap.add_argument("--kd-warmup", type=float, default=None, help="transfer+kd: kd.warmup={kd: N} epochs")
    ap.add_argument(
        "--kd-temperature",
        type=float,
        default=None,
        help="transfer+kd's temperature (default: distil's transfer.kd_temperature rule, "
        "distil.transfer.TRANSFERRED_KD_TEMPERATURE)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # another benchmark may share the machine; one thread keeps timings steady

    console = Console()
    recipe = load_recipe(
        resolve_recipe("fashion-mnist"),
        [f"data.limit={args.limit}", f"teacher_train.epochs={args.teacher_epochs}", *args.overrides],
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(
        recipe.data.name, recipe.data.root, val_fraction=recipe.data.val_fraction, limit=args.limit
    )
    # `limit` also shrinks the test split; score on all 10k test images instead, normalised with this
    # subset's training statistics (exactly what the limited bundle would do to them).
    full = load_dataset(recipe.data.name, recipe.data.root, val_fraction=recipe.data.val_fraction)
    shape = (1, -1, 1, 1)
    raw = full.test.x * torch.tensor(full.std).view(shape) + torch.tensor(full.mean).view(shape)
    test_x = (raw - torch.tensor(data.mean).view(shape)) / torch.tensor(data.std).view(shape)
    test_y = full.test.y
    del full
    console.print(f"{data.name}: {len(data.train)} train / {len(test_y)} test images, 1 thread")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if args.teacher:
        teacher, _ = load_checkpoint(args.teacher)
        teacher_source = f"checkpoint {args.teacher}"
    else:
        teacher, spec = build_model(recipe.teacher, data, seed=0)
        teacher = train_model(teacher, data, recipe.teacher_train, description="teacher").model
        save_checkpoint(
            out / "teacher", teacher, spec, {"recipe": recipe.teacher_train.model_dump(mode="json")}
        )
        teacher_source = f"trained here: {args.teacher_epochs} epochs on {len(data.train)} images"
    teacher = teacher.to(memory_format=torch.contiguous_format).eval()
    timings["teacher_s"] = time.perf_counter() - t0
    teacher_acc = accuracy(predict(teacher, test_x), test_y)
    console.print(f"teacher ({teacher_source}): {teacher_acc:.2%}")

    student_cfg = ModelConfig(model="largenet", kwargs={"width": args.width})
    if args.kd_lr_scale is None:
        kd_scale = transferred_lr_scale(TransferConfig(init="teacher"))
    else:
        kd_scale = args.kd_lr_scale
    results: dict[str, dict[str, list[float]]] = {str(b): {m: [] for m in args.methods} for b in args.budgets}
    zero_shot: list[float] = []
    example = data.train.x[:2]
    for seed in args.seeds:
        for budget in args.budgets:
            cfg = recipe.student_train.model_copy(update={"seed": seed, "epochs": budget})
            for method in args.methods:
                # What `distil distill --init teacher` does: the transferred student's lr scale.
                scale = {"transfer": args.transfer_lr_scale, "transfer+kd": kd_scale}.get(method, 1.0)
                run_cfg = cfg.model_copy(update={"lr": cfg.lr * scale})
                student, _ = build_model(student_cfg, data, seed=seed)
                if method.startswith("transfer"):
                    transfer_parameters(teacher, student, selection=args.selection, example_inputs=example)
                    first_transfer = next(m for m in args.methods if m.startswith("transfer"))
                    if budget == args.budgets[0] and method == first_transfer:
                        zero_shot.append(accuracy(predict(student.eval(), test_x), test_y))
                t1 = time.perf_counter()
                if method.endswith("kd"):
                    kd = recipe.kd
                    if method == "transfer+kd":  # what `distil distill --init teacher` does
                        rule = TransferConfig(init="teacher", kd_temperature=args.kd_temperature)
                        kd = transferred_kd(rule, kd)
                    if method == "transfer+kd" and args.kd_warmup:
                        kd = kd.model_copy(update={"warmup": {"kd": args.kd_warmup}})
                    model = distill(teacher, student, data, run_cfg, kd, description=method).model
                else:
                    model = train_model(student, data, run_cfg, description=method).model
                timings[f"{method}_e{budget}_s{seed}"] = time.perf_counter() - t1
                model = model.to(memory_format=torch.contiguous_format).eval()
                acc = accuracy(predict(model, test_x), test_y)
                results[str(budget)][method].append(acc)
                console.print(f"seed {seed}, {budget} epoch(s), {method}: {acc:.2%}")

    def fmt(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2%} ± {sd:.2%}"

    params_t = sum(p.numel() for p in teacher.parameters())
    params_s = sum(p.numel() for p in build_model(student_cfg, data)[0].parameters())
    head = " | ".join(f"{b} epoch{'s' if b > 1 else ''}" for b in args.budgets)
    lines = [
        f"Fashion-MNIST, {len(data.train)} training images, full 10k test set, seeds {args.seeds}; teacher "
        f"LargeNet ({params_t:,} params, {teacher_acc:.2%}, {teacher_source}); student LargeNet width "
        f"{args.width} ({params_s:,} params), {args.selection} selection; lr {recipe.student_train.lr} x "
        f"{args.transfer_lr_scale} for transfer, x {kd_scale} for transfer+kd"
        + f"; transfer+kd at T {transferred_kd(TransferConfig(init='teacher', kd_temperature=args.kd_temperature), recipe.kd).temperature:g}"
        + (f" (kd warm-up {args.kd_warmup} epochs)" if args.kd_warmup else "")
        + ".",
        "",
        f"| student init / loss | {head} |",
        "|---|" + "---|" * len(args.budgets),
    ]
    for method in args.methods:
        cells = " | ".join(fmt(results[str(b)][method]) for b in args.budgets)
        lines.append(f"| {method} | {cells} |")
    if zero_shot:
        lines += ["", f"Transferred student before any training: {fmt(zero_shot)}."]
    table = "\n".join(lines)
    console.print(table, markup=False, highlight=False)
    record = {
        "args": vars(args),
        "teacher_accuracy": teacher_acc,
        "teacher_source": teacher_source,
        "params": {"teacher": params_t, "student": params_s},
        "accuracy": results,
        "zero_shot_transfer": zero_shot,
        "timings_s": timings,
        "recipe": recipe.student_train.model_dump(mode="json"),
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
