"""Fashion-MNIST as a PNG image folder vs the IDX files: the same recipe, the same accuracy?

Issue 12: real images on disk, decoded by `imagefolder` through the DatasetLoader workers, should
train to the test accuracy of the in-memory IDX path (`fashion-mnist`) within seed noise. Both
paths train the same student (SmallNet, no augmentation, SGD from the same seed) for the same epochs;
each seed prints both accuracies side by side, then the mean/std of each path and their difference.

The folder is written by benchmarks/write_image_folder.py (lossless PNG of the reader's raw pixels),
if it is not there yet:

    python benchmarks/png_vs_idx.py /tmp/fm-60k --epochs 2 --seeds 0 1 2
    python benchmarks/png_vs_idx.py /tmp/fm-6k --limit 6000 --epochs 3   # smaller, faster

Measured (2026-12-01, full 60k: 54k train / 6k val / 10k test, 2 epochs, seeds 0 1 2, shared CPU):

    seed  IDX (memory)    PNG folder  PNG - IDX
       0        89.19%        89.14%     -0.05
       1        89.39%        89.53%     +0.14
       2        89.08%        88.93%     -0.15
    mean   89.22 ± 0.16   89.20 ± 0.30     -0.02

The two paths differ only in sample order within the split (folder order is by class, IDX by file),
so the validation carve-out and the shuffles draw other samples: a difference within seed noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from distil.api import train_model
from distil.config import LoaderConfig, TrainConfig
from distil.data import DataBundle, load_dataset
from distil.measure import accuracy, predict_split
from distil.models import create_model


def train_and_test(data: DataBundle, cfg: TrainConfig, model_name: str) -> float:
    """Test accuracy of `model_name` trained on `data` with `cfg` (seeded by cfg.seed)."""
    torch.manual_seed(cfg.seed)
    c, h, _ = data.input_shape
    model = create_model(model_name, num_classes=data.num_classes, in_channels=c, image_size=h)
    trained = train_model(model, data, cfg).model.cpu().eval()
    return accuracy(predict_split(trained, data.test), data.test.labels)


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="the PNG folder (written first if missing)")
    parser.add_argument("--limit", type=int, default=None, help="train samples of both paths (None: 60k)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="smallnet")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the folder path")
    args = parser.parse_args()
    if not (args.folder / "train").is_dir():
        script = Path(__file__).with_name("write_image_folder.py")
        limit = ["--limit", str(args.limit)] if args.limit else []
        subprocess.run([sys.executable, str(script), str(args.folder), *limit], check=True)
    rows = []
    for seed in args.seeds:
        cfg = TrainConfig(epochs=args.epochs, lr=0.05, batch_size=128, augment="none", seed=seed)
        row: dict[str, object] = {"seed": seed}
        for path, name, root, workers in (
            ("idx", "fashion-mnist", None, 0),
            ("png", "imagefolder", str(args.folder), args.workers),
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = load_dataset(name, root, val_fraction=0.1, seed=seed, limit=args.limit)
            started = time.perf_counter()
            acc = train_and_test(
                data, cfg.model_copy(update={"loader": LoaderConfig(num_workers=workers)}), args.model
            )
            row[f"{path}_acc"] = acc
            row[f"{path}_s"] = round(time.perf_counter() - started, 1)
            row[f"{path}_train"] = len(data.train)
            row[f"{path}_test"] = len(data.test)
        rows.append(row)
        print(json.dumps(row), flush=True)
    idx = [float(r["idx_acc"]) for r in rows]  # type: ignore[arg-type]
    png = [float(r["png_acc"]) for r in rows]  # type: ignore[arg-type]
    print(f"\n{args.model}, {args.epochs} epoch(s), augment none, seeds {args.seeds}")
    print(f"{'seed':>4}  {'IDX (memory)':>12}  {'PNG folder':>12}  {'PNG - IDX':>9}")
    for r, a, b in zip(rows, idx, png, strict=True):
        print(f"{r['seed']:>4}  {100 * a:>11.2f}%  {100 * b:>11.2f}%  {100 * (b - a):>+8.2f}")
    print(
        f"mean  {100 * statistics.mean(idx):>6.2f} ± {100 * sd(idx):.2f}  "
        f"{100 * statistics.mean(png):>6.2f} ± {100 * sd(png):.2f}  "
        f"{100 * (statistics.mean(png) - statistics.mean(idx)):>+8.2f}"
    )


if __name__ == "__main__":
    main()
