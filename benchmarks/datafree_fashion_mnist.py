"""Issue-27 benchmark: data-free distillation on Fashion-MNIST (no real training image seen by the student).

Teacher: LargeNet with BatchNorm after each conv (``largenet`` with ``norm: batch``: distil's default
LargeNet has no BatchNorm, so DeepInversion could not invert it), trained on the 60k real training
images (--teacher-epochs, the `fashion-mnist` recipe's optimizer), or loaded from --teacher. Student:
SmallNet. Per seed, each student is scored on the 10k real test images:

* noise: KD on Gaussian noise inputs (N(0, 1) in the teacher's normalized input space), as many as
  the synthetic sets hold;
* deepinversion: `distil.synth` DeepInversion transfer set, written with `write_synthetic` and read
  back through the `npz` reader (the `distil synthesize` path), then KD by distil's loop;
* adversarial: the adversarial generator's transfer set the same way (+ the game's own probe student);
* real: KD on the 60k real training images (the reference).

All KD students use Hinton KD (T 4) with kd weight 1 and no CE (the synthetic and noise inputs have no
true labels), the same optimizer and epochs over their data; synthesis seconds are compared with the
seconds of one real-data KD run.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/datafree_fashion_mnist.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from distil.api import distill, train_model
from distil.config import KDConfig, ModelConfig, load_recipe
from distil.data import DataBundle, Split, load_dataset
from distil.measure import accuracy, predict
from distil.recipes import resolve_recipe
from distil.synth import AdversarialConfig, DeepInversionConfig, SynthesisConfig, synthesize, write_synthetic
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint

TEACHER = ModelConfig(model="largenet", kwargs={"norm": "batch"})
STUDENT = ModelConfig(model="smallnet")


def train_teacher(data: DataBundle, epochs: int, out: Path) -> Path:
    recipe = load_recipe(resolve_recipe("fashion-mnist"))
    cfg = recipe.teacher_train.model_copy(update={"epochs": epochs, "channels_last": False})
    teacher, spec = build_model(TEACHER, data, seed=0)
    t0 = time.perf_counter()
    model = train_model(teacher, data, cfg).model
    seconds = time.perf_counter() - t0
    acc = accuracy(predict(model.eval(), data.test.x), data.test.y)
    save_checkpoint(out / "teacher", model, spec, {"data": data.describe(), "seconds": seconds})
    print(f"teacher LargeNet+BN: {acc:.2%} after {epochs} epoch(s), {seconds:.0f} s", flush=True)
    return out / "teacher"


def whole_test_split(data: DataBundle) -> Split:
    """All 10k test images, normalized with `data`'s statistics (those of its training subset)."""
    full = load_dataset("fashion-mnist", val_fraction=0.0)
    test = full.test
    assert isinstance(test, Split)
    raw = test.x * torch.tensor(full.std).view(1, -1, 1, 1) + torch.tensor(full.mean).view(1, -1, 1, 1)
    x = (raw - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(1, -1, 1, 1)
    return Split(x, test.y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=None, help="a trained BN LargeNet checkpoint (else one is trained)")
    ap.add_argument("--teacher-epochs", type=int, default=1)
    ap.add_argument("--teacher-only", action="store_true", help="train and save the teacher, then stop")
    ap.add_argument("--count", type=int, default=500, help="synthetic (and noise) inputs per seed")
    ap.add_argument("--di-iterations", type=int, default=100)
    ap.add_argument("--di-batch", type=int, default=100)
    ap.add_argument("--adv-steps", type=int, default=150)
    ap.add_argument("--adv-batch", type=int, default=64)
    ap.add_argument("--synthetic-epochs", type=int, default=30, help="KD epochs over a synthetic set")
    ap.add_argument("--real-epochs", type=int, default=1, help="KD epochs over the 60k real images")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="real training images (smoke tests)")
    ap.add_argument("--out", default="benchmarks/out/datafree_fashion_mnist")
    ap.add_argument("--adv-balance", type=float, default=0.0, help="DAFL class-entropy weight (0: DFAD)")
    ap.add_argument("--methods", nargs="+", default=["deepinversion", "adversarial"])
    ap.add_argument("--no-baselines", action="store_true", help="skip the noise and real-data students")
    ap.add_argument("--reuse", default=None, help="an earlier --out: train on its synthetic sets again")
    ap.add_argument(
        "--table",
        nargs="+",
        default=None,
        help="only print the table of these earlier --out folders (merged)",
    )
    args = ap.parse_args()
    if args.table:
        print(write_table([Path(p) for p in args.table], Path(args.out)))
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("fashion-mnist", val_fraction=0.0, limit=args.limit)
    if args.limit:  # fewer training images: measure on the whole test split all the same
        data = replace(data, test=whole_test_split(data))
    teacher_path = Path(args.teacher) if args.teacher else train_teacher(data, args.teacher_epochs, out)
    if args.teacher_only:
        return
    teacher, _ = load_checkpoint(teacher_path)
    teacher.eval().requires_grad_(False)
    test_x, test_y = data.test.x, data.test.y  # type: ignore[attr-defined]
    teacher_acc = accuracy(predict(teacher, test_x), test_y)
    print(f"teacher {teacher_path}: {teacher_acc:.2%}", flush=True)

    base = load_recipe(resolve_recipe("fashion-mnist")).student_train
    kd = KDConfig(temperature=4.0, kd_weight=1.0, ce_weight=0.0)
    rows: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # process CPU seconds: what the work costs on a contended machine

    def record(row: str, acc: float, secs: float, cpu_s: float = 0.0) -> None:
        rows.setdefault(row, []).append(acc)
        seconds.setdefault(row, []).append(secs)
        cpu.setdefault(row, []).append(cpu_s)
        print(f"  {row}: {acc:.2%} ({secs:.0f} s, {cpu_s:.0f} CPU s)", flush=True)

    def kd_student(seed: int, kd_data: DataBundle, epochs: int) -> tuple[float, float, float]:
        student, _ = build_model(STUDENT, data, seed=seed)
        cfg = base.model_copy(
            update={
                "seed": seed,
                "epochs": epochs,
                "channels_last": False,
                "augment": base.augment.model_copy(update={"ops": "none"}),
            }
        )
        if kd_data is not data:
            # Per-epoch evaluation runs on val, else on the 10k test images: a few training inputs keep
            # the many short synthetic epochs cheap (nothing is selected on them).
            train = kd_data.train
            assert isinstance(train, Split)
            kd_data = replace(kd_data, val=Split(train.x[:64], train.y[:64]))
        t0, c0 = time.perf_counter(), time.process_time()
        model = distill(teacher, student, kd_data, cfg, kd).model
        wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        return accuracy(predict(model.eval(), test_x), test_y), wall, cpu_s

    def make_set(name: str, scfg: SynthesisConfig, seed: int) -> Path:
        probe, _ = build_model(STUDENT, data, seed=seed)
        c0 = time.process_time()
        synthetic = synthesize(teacher, tuple(data.input_shape), data.num_classes, scfg, student=probe)
        cpu.setdefault(f"{name} synthesis", []).append(time.process_time() - c0)
        seconds.setdefault(f"{name} synthesis", []).append(synthetic.seconds)
        folder = out / f"{name}_s{seed}"
        if folder.exists():
            shutil.rmtree(folder)
        path = write_synthetic(folder, synthetic, data, teacher=str(teacher_path))
        agreement = synthetic.teacher_agreement  # None: the adversarial method makes no target classes
        agree = "n/a" if agreement is None else f"{agreement:.1%}"
        counts = torch.bincount(synthetic.teacher_labels, minlength=data.num_classes).tolist()
        print(f"  {name}: {synthetic.seconds:.0f} s, teacher agrees with targets {agree}, classes {counts}")
        if synthetic.student is not None:
            record(
                f"{name}: the game's own student", accuracy(predict(synthetic.student, test_x), test_y), 0.0
            )
        return path

    def reuse_set(folder: Path, name: str, seed: int) -> Path:
        # The sets of an earlier run (its results.json has their synthesis costs): students trained longer
        # on the same inputs cost no new synthesis.
        prev = json.loads((folder / "results.json").read_text())
        at = prev["args"]["seeds"].index(seed)
        cpu.setdefault(f"{name} synthesis", []).append(prev["cpu_seconds"][f"{name} synthesis"][at])
        seconds.setdefault(f"{name} synthesis", []).append(prev["seconds"][f"{name} synthesis"][at])
        game = f"{name}: the game's own student"
        if game in prev["accuracy"]:
            record(game, prev["accuracy"][game][at], 0.0)
        return folder / f"{name}_s{seed}" / "transfer.npz"

    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        shape = tuple(data.input_shape)
        # (a) noise inputs in the teacher's input space
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((args.count, *shape), generator=gen)
        noise_data = replace(data, train=Split(noise, torch.zeros(args.count, dtype=torch.int64)))
        if not args.no_baselines:
            record("noise (Gaussian) + KD", *kd_student(seed, noise_data, args.synthetic_epochs))
        # (b), (c) the synthesisers, through write_synthetic and the npz reader
        methods = {
            "deepinversion": SynthesisConfig(
                method="deepinversion",
                count=args.count,
                seed=seed,
                deepinversion=DeepInversionConfig(iterations=args.di_iterations, batch_size=args.di_batch),
            ),
            "adversarial": SynthesisConfig(
                method="adversarial",
                count=args.count,
                seed=seed,
                adversarial=AdversarialConfig(
                    steps=args.adv_steps, batch_size=args.adv_batch, balance_weight=args.adv_balance
                ),
            ),
        }
        for name, scfg in ((n, methods[n]) for n in args.methods):
            path = reuse_set(Path(args.reuse), name, seed) if args.reuse else make_set(name, scfg, seed)
            synth_data = load_dataset("npz", path, val_fraction=0.0)
            record(f"{name} transfer set + KD", *kd_student(seed, synth_data, args.synthetic_epochs))
        # (d) the reference: KD on the real training images
        if not args.no_baselines:
            record("real training data + KD", *kd_student(seed, data, args.real_epochs))
        (out / "results.json").write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "teacher_accuracy": teacher_acc,
                    "accuracy": rows,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                },
                indent=2,
            )
        )

    print(write_table([out], out), flush=True)


def write_table(outs: list[Path], dest: Path) -> str:
    """The markdown table of the results.json of `outs` (e.g. one folder per seed), written to dest/table.md.

    Rows missing from a folder (a run with --no-baselines) are left out of its seeds; the gap column
    needs the real-data KD row.
    """
    runs = [json.loads((out / "results.json").read_text()) for out in outs]
    args = runs[0]["args"]
    rows: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for run in runs:
        for merged, key in ((rows, "accuracy"), (seconds, "seconds"), (cpu, "cpu_seconds")):
            for row, values in run[key].items():
                merged.setdefault(row, []).extend(values)

    def fmt(v: list[float]) -> str:
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):.2%} ± {sd:.2%} (n={len(v)})"

    reference = "real training data + KD"
    real = statistics.mean(rows[reference]) if reference in rows else None
    real_cpu = statistics.mean(cpu[reference]) if reference in cpu else None
    seeds = sorted({seed for run in runs for seed in run["args"]["seeds"]})
    lines = [
        f"Fashion-MNIST, teacher LargeNet+BatchNorm {runs[0]['teacher_accuracy']:.2%}, student SmallNet, "
        f"seeds {seeds}, all 10k real test images; {args['count']} synthetic/noise inputs per seed, "
        f"{args['synthetic_epochs']} KD epochs over them; real-data KD {args['real_epochs']} epoch(s) over "
        f"{args['limit'] or 60000} real training images",
        "",
        "| student (what it saw) | test accuracy (mean ± sd) | vs real-data KD | synthesis CPU s "
        "(x one real KD run) | KD CPU s (wall s) |",
        "|---|---|---|---|---|",
    ]
    for row, v in rows.items():
        gap = "" if real is None else f"{100 * (statistics.mean(v) - real):+.2f} pt"
        game = "game" in row
        synth = cpu.get(f"{row.split(' ')[0].rstrip(':')} synthesis")
        cost = ""
        if synth and not game:
            ratio = f" ({statistics.mean(synth) / real_cpu:.1f}x)" if real_cpu else ""
            cost = f"{statistics.mean(synth):.0f}{ratio}"
        kd_s = (
            "(inside the synthesis)"
            if game
            else f"{statistics.mean(cpu[row]):.0f} ({statistics.mean(seconds[row]):.0f})"
        )
        lines.append(f"| {row} | {fmt(v)} | {gap} | {cost} | {kd_s} |")
    if real_cpu is not None:
        real_s = statistics.mean(seconds[reference])
        lines += [
            "",
            f"one real-data KD run: {real_cpu:.0f} CPU s, {real_s:.0f} s wall (1 thread; a shared 2-core "
            "machine: wall time depends on the other jobs, CPU time on the work)",
        ]
    table = "\n".join(lines)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "table.md").write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
