"""Issue-15 benchmark: where distillation pays on Fashion-MNIST, with a teacher trained on every label.

Teacher: a trained LargeNet distil checkpoint (--teacher; e.g. the `fashion-mnist` recipe, 10 epochs on
all 60k labels). Student: the seed's SmallNet. A stratified subset of --limit training images (the
full data's normalization, which the teacher was trained with); every model is scored on all 10,000
test images; mean ± sd over --seeds. Two parts:

* ``--part labels``: the students keep the labels of --fractions of the subset (stratified,
  `data.unlabeled.keep_fraction`). scratch = the labelled images alone, repeated to the subset's size so
  it takes as many steps (`distil.data.unlabeled.labeled_part`); kd = Hinton KD (T 4, kd 0.9, ce 0.1) on
  the whole subset, CE on the labelled images only. No augmentation, so the teacher's logits are cached.
* ``--part patient``: all labels of the subset, crop + flip; scratch vs plain KD vs function matching
  (Beyer et al. 2022: mixup views seen by teacher and student alike, KD term only; the
  `fashion-mnist-patient` recipe's student settings) at equal epochs.

    python benchmarks/unlabeled_fashion_mnist.py --teacher /work/bench/kd/teacher --part labels
    python benchmarks/unlabeled_fashion_mnist.py --teacher /work/bench/kd/teacher --part patient
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from distil.api import distill, train_model
from distil.config import KDConfig, UnlabeledConfig, load_recipe
from distil.data import load_dataset
from distil.data.sampling import stratified_take
from distil.data.unlabeled import labeled_part, transfer_set
from distil.measure import accuracy, predict
from distil.recipes import resolve_recipe
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="a trained LargeNet distil checkpoint")
    ap.add_argument("--part", choices=["labels", "patient"], required=True)
    ap.add_argument("--limit", type=int, default=10000, help="training images (stratified subset)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/out/unlabeled_fashion_mnist")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    full = load_dataset("fashion-mnist", val_fraction=0.0)
    subset, _ = stratified_take(full.train.labels.numpy(), args.limit, seed=0)
    data = replace(full, train=full.train.take(torch.as_tensor(subset)))
    teacher, _ = load_checkpoint(args.teacher)
    teacher = teacher.to(memory_format=torch.contiguous_format).eval()
    test_x, test_y = full.test.x, full.test.y
    teacher_acc = accuracy(predict(teacher, test_x), test_y)
    base = load_recipe(resolve_recipe("fashion-mnist")).student_train.model_copy(
        update={"epochs": args.epochs, "channels_last": False}
    )
    rows: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}

    def score(model: torch.nn.Module) -> float:
        return accuracy(predict(model.eval(), test_x), test_y)

    def run(row: str, seed: int, fn) -> None:  # type: ignore[no-untyped-def]
        student, _ = build_model(load_recipe(resolve_recipe("fashion-mnist")).student, data, seed=seed)
        t0 = time.perf_counter()
        acc = score(fn(student))
        seconds[f"{row} s{seed}"] = time.perf_counter() - t0
        rows.setdefault(row, []).append(acc)
        print(f"{row}, seed {seed}: {acc:.2%} ({seconds[f'{row} s{seed}']:.0f} s)", flush=True)

    hinton = KDConfig()
    if args.part == "labels":
        cfg0 = base.model_copy(update={"augment": base.augment.model_copy(update={"ops": "none"})})
        for frac in args.fractions:
            kd_data = transfer_set(data, UnlabeledConfig(keep_fraction=frac)) if frac < 1 else data
            scratch_data = labeled_part(kd_data)
            n_lab = int((kd_data.train.labels >= 0).sum())
            for seed in args.seeds:
                cfg = cfg0.model_copy(update={"seed": seed})
                run(
                    f"{frac:.0%} labels ({n_lab}): scratch",
                    seed,
                    lambda s, d=scratch_data, c=cfg: train_model(s, d, c).model,
                )
                run(
                    f"{frac:.0%} labels ({n_lab}): kd + {len(data.train) - n_lab} unlabelled",
                    seed,
                    lambda s, d=kd_data, c=cfg: distill(teacher, s, d, c, hinton).model,
                )
    else:
        patient = load_recipe(resolve_recipe("fashion-mnist-patient"))
        fm_cfg = patient.student_train.model_copy(update={"epochs": args.epochs, "channels_last": False})
        for seed in args.seeds:
            cfg = base.model_copy(update={"seed": seed})
            run("scratch", seed, lambda s, c=cfg: train_model(s, data, c).model)
            run(
                "kd (T 4, kd 0.9 + ce 0.1)", seed, lambda s, c=cfg: distill(teacher, s, data, c, hinton).model
            )
            fm = fm_cfg.model_copy(update={"seed": seed})
            run(
                f"function matching ({fm.augment.mixing}, kd only, T {patient.kd.temperature:g})",
                seed,
                lambda s, c=fm: distill(teacher, s, data, c, patient.kd).model,
            )

    def fmt(v: list[float]) -> str:
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):.2%} ± {sd:.2%}"

    scratch_of = {
        r: next((s for s in rows if s.split(":")[0] == r.split(":")[0] and "scratch" in s), None)
        for r in rows
    }
    head = (
        f"Fashion-MNIST, {len(data.train)} training images (stratified subset), {args.epochs} epochs, "
        f"seeds {args.seeds}, all 10k test images; teacher LargeNet {teacher_acc:.2%} ({args.teacher}); "
        "student SmallNet"
    )
    lines = [head, "", "| student (what it saw) | test accuracy | vs scratch |", "|---|---|---|"]
    for row, v in rows.items():
        ref = scratch_of.get(row) if args.part == "labels" else "scratch"
        gain = (
            ""
            if ref in (None, row)
            else f"{statistics.mean(v) - statistics.mean(rows[ref]):+.2%}".replace("%", " pt")
        )
        lines.append(f"| {row} | {fmt(v)} | {gain} |")
    per_run = statistics.mean(seconds.values()) if seconds else 0.0
    lines += [
        "",
        f"mean wall time per student run: {per_run:.0f} s ({args.threads} thread(s), shared machine)",
    ]
    table = "\n".join(lines)
    print(table, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.part}.md").write_text(table + "\n")
    (out / f"{args.part}.json").write_text(
        json.dumps(
            {"args": vars(args), "teacher_accuracy": teacher_acc, "accuracy": rows, "seconds": seconds},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
