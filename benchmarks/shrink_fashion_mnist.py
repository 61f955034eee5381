"""Issue-14 benchmark: compress the LargeNet teacher to three measured latency budgets on Fashion-MNIST.

The budgets are 4x, 10x and 25x below the teacher's ONNX Runtime fp32 batch-1 latency (1 thread),
measured here in a fresh process. For each, `distil.shrink.shrink_model` searches the teacher's width
ladder plus latency-steered pruning of the teacher, ranks the fitting candidates by successive halving,
distils the winner fully and saves `model.onnx`. The baseline is SmallNet + KD with the same recipe and
epochs. At the end every delivered file, the teacher and the baseline are re-measured side by side in
one fresh process (interleaved rounds, so load from other processes hits all alike).

    python benchmarks/shrink_fashion_mnist.py --teacher benchmarks/out/shrink/teacher_run/teacher
    python benchmarks/shrink_fashion_mnist.py --limit 3000 --epochs 1 --factors 4   # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from distil.api import distill, train_model
from distil.compress import export_onnx
from distil.compress.export import onnx_predict
from distil.compress.latency_probe import probe_latency
from distil.compress.quantize import quantize_onnx
from distil.config import AugmentConfig, KDConfig, ShrinkConfig, TrainConfig
from distil.data import Split, load_dataset
from distil.errors import ConfigError
from distil.measure import accuracy
from distil.models import build_from_spec, model_spec
from distil.shrink import shrink_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=None, help="a LargeNet checkpoint; trained here when absent")
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=20000, help="training images (random subset of 57k)")
    ap.add_argument("--epochs", type=int, default=5, help="full distillation of each winner and of SmallNet")
    ap.add_argument("--factors", default="4,10,25", help="budgets = teacher fp32 latency / factor")
    ap.add_argument("--proxy-limit", type=int, default=4000)
    ap.add_argument("--max-candidates", type=int, default=4)
    ap.add_argument("--margin", type=float, default=0.1, help="search margin: median <= (1 - m) x budget")
    ap.add_argument("--out", default="benchmarks/out/shrink_fashion_mnist")
    ap.add_argument(
        "--budget-from-ms",
        type=float,
        default=None,
        help="teacher latency the budgets derive from (a rerun's)",
    )
    args = ap.parse_args()

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full = load_dataset("fashion-mnist", val_fraction=0.05, seed=0)
    keep = torch.randperm(len(full.train), generator=torch.Generator().manual_seed(0))[: args.limit]
    data = dataclasses.replace(full, train=Split(full.train.x[keep], full.train.y[keep]))
    c, h, _ = data.input_shape
    # No augmentation: the teacher's logits are computed once and cached, for every candidate alike.
    train_cfg = TrainConfig(
        epochs=args.epochs, lr=0.05, schedule={"warmup_epochs": 0.5}, augment="none", channels_last=True
    )
    kd = KDConfig(temperature=4.0, kd_weight=0.9, ce_weight=0.1)
    t0 = time.perf_counter()
    if args.teacher:
        teacher, meta = load_checkpoint(args.teacher)
        t_spec = meta["spec"]
        teacher_note = f"loaded {args.teacher}"
    else:
        t_spec = model_spec("largenet", data.num_classes, c, h)
        teacher = build_from_spec(t_spec)
        train_model(
            teacher,
            data,
            train_cfg.model_copy(
                update={"epochs": args.teacher_epochs, "augment": AugmentConfig(ops="auto")}
            ),
        )
        save_checkpoint(out / "teacher", teacher, t_spec, {"data": data.describe()})
        teacher_note = f"trained here, {args.teacher_epochs} epochs on {len(data.train):,} images"
    teacher = teacher.eval()
    t_onnx = export_onnx(teacher, out / "teacher.fp32.onnx", (c, h, h))
    (t_rec,) = probe_latency([t_onnx], threads=1, batch=1, min_run_time=1.0)
    t_ms = t_rec["median_ms"]
    base_ms = args.budget_from_ms or t_ms  # a resumed run keeps the budgets it searched for
    t_acc = accuracy(onnx_predict(t_onnx, data.test.x), data.test.y)
    print(
        f"teacher: {teacher_note}; ONNX fp32 b1 1 thread {t_ms:.3f} ms (IQR {t_rec['iqr_ms']:.3f}); test {t_acc:.2%}"
    )

    # Baseline: SmallNet + KD, same recipe, same epochs, its faster of fp32 / int8.
    s_spec = model_spec("smallnet", data.num_classes, c, h)
    torch.manual_seed(0)
    small = build_from_spec(s_spec)
    if (out / "smallnet_kd.json").is_file():  # a rerun (e.g. after a resumed search) reuses the baseline
        small, s_meta = load_checkpoint(out / "smallnet_kd")
        small_s = float(s_meta["distill_s"])
    else:
        s0 = time.perf_counter()
        distill(teacher, small, data, train_cfg, kd)
        small_s = time.perf_counter() - s0
        save_checkpoint(out / "smallnet_kd", small, s_spec, {"data": data.describe(), "distill_s": small_s})
    s_fp32 = export_onnx(small.eval(), out / "smallnet_kd.fp32.onnx", (c, h, h))
    s_int8 = quantize_onnx(s_fp32, out / "smallnet_kd.int8.onnx", data.train.head(512), (c, h, h)).path
    s_recs = probe_latency([s_fp32, s_int8], threads=1, batch=1, min_run_time=1.0)
    s_best = min(
        zip(("fp32", "int8"), s_recs, (s_fp32, s_int8), strict=True), key=lambda r: r[1]["median_ms"]
    )
    s_acc = accuracy(onnx_predict(s_best[2], data.test.x), data.test.y)
    print(
        f"SmallNet+KD: {s_best[0]} {s_best[1]['median_ms']:.3f} ms, test {s_acc:.2%}, {small_s:.0f} s to distill"
    )

    results = []
    for factor in [float(f) for f in args.factors.split(",")]:
        budget = base_ms / factor
        cfg = ShrinkConfig(
            target_latency_ms=budget,
            latency_margin=args.margin,
            max_candidates=args.max_candidates,
            proxy_limit=args.proxy_limit,
            min_run_time=0.4,
        )
        b0 = time.perf_counter()
        try:
            res = shrink_model(
                teacher, t_spec, data, cfg, out / f"budget_{factor:g}x", train_cfg=train_cfg, kd=kd, log=print
            )
        except ConfigError as exc:
            print(f"{factor:g}x ({budget:.3f} ms): refused: {exc}")
            results.append({"factor": factor, "budget_ms": budget, "refused": str(exc)})
            continue
        fin = res.final
        results.append({"factor": factor, "budget_ms": budget, "wall_s": time.perf_counter() - b0, **fin})
        print(json.dumps({k: v for k, v in results[-1].items() if k not in ("formats",)}, default=str))

    # Everything delivered, side by side in one fresh process.
    files = [t_onnx, s_best[2]] + [Path(r["path"]) for r in results if "path" in r]
    side = probe_latency(files, threads=1, batch=1, min_run_time=3.0, rounds=10)
    (out / "results.json").write_text(
        json.dumps(
            {
                "teacher_ms": t_ms,
                "teacher_acc": t_acc,
                "smallnet": {
                    "format": s_best[0],
                    "ms": s_best[1]["median_ms"],
                    "acc": s_acc,
                    "distill_s": small_s,
                },
                "budgets": results,
                "side_by_side": side,
            },
            indent=1,
            default=str,
        )
    )

    print(
        f"\nFashion-MNIST, {len(data.train):,} training images, full 10k test set; teacher LargeNet ({teacher_note}), "
        f"test {t_acc:.2%}; every student distilled {args.epochs} epochs (T=4, 0.9 KD + 0.1 CE, no augmentation); "
        "latency: ONNX Runtime CPU, batch 1, 1 thread, median (IQR) in a fresh process.\n"
    )
    print(
        "| budget | delivered | format | test acc (ORT) | bytes | latency at search end | re-measured side by side | speed-up vs teacher side by side | meets ms / speed-up | search cost / one full KD run |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| teacher | LargeNet | fp32 | {t_acc:.2%} | {t_onnx.stat().st_size:,} | {t_ms:.3f} ms | {side[0]['median_ms']:.3f} ({side[0]['iqr_ms']:.3f}) ms | | |"
    )
    print(
        f"| baseline | SmallNet + KD | {s_best[0]} | {s_acc:.2%} | {Path(s_best[2]).stat().st_size:,} | {s_best[1]['median_ms']:.3f} ms | {side[1]['median_ms']:.3f} ({side[1]['iqr_ms']:.3f}) ms | | |"
    )
    k = 2
    for r in results:
        if "refused" in r:
            print(f"| {r['factor']:g}x: {r['budget_ms']:.3f} ms | refused | | | | | | | | |")
            continue
        sbs = side[k]
        k += 1
        rm = r["remeasured"]
        ok = rm["median_ms"] <= r["budget_ms"] and sbs["median_ms"] <= r["budget_ms"]
        speed = side[0]["median_ms"] / sbs["median_ms"]  # the budget as a speed-up, in one process
        print(
            f"| {r['factor']:g}x: {r['budget_ms']:.3f} ms | {r['name']} | {r['format']} | {r['test_accuracy']:.2%} | {r['bytes']:,} | "
            f"{rm['median_ms']:.3f} ({rm['iqr_ms']:.3f}) ms | {sbs['median_ms']:.3f} ({sbs['iqr_ms']:.3f}) ms | "
            f"{speed:.1f}x | {'yes' if ok else 'NO'} / {'yes' if speed >= r['factor'] else 'NO'} | "
            f"{r['cost_ratio']:.2f}x |"
        )
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
