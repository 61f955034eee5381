"""Write a registered image dataset (default Fashion-MNIST) as a PNG image folder for `imagefolder`.

Layout: OUT/train/<class>/<n>.png and OUT/test/<class>/<n>.png (class names with "/" get "-"), the
raw pixels of the dataset's reader (before normalization). Each file is written to a temporary name
and renamed, so an interrupted run leaves no half-written image; rerunning skips existing files.

    python benchmarks/write_image_folder.py --limit 6000 data/fm-6k
    distil train --set data.name=imagefolder --set data.root=data/fm-6k
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_split(x: torch.Tensor, y: torch.Tensor, names: list[str], out: Path) -> int:
    """Write (N, C, H, W) images in [0, 1] as out/<class>/<n>.png; returns the number written."""
    written = 0
    for i in range(len(y)):
        folder = out / names[int(y[i])].replace("/", "-")
        target = folder / f"{i:06d}.png"
        if target.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.rint(x[i].clamp(0, 1).numpy() * 255).astype(np.uint8)
        img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        tmp = folder / f".{i:06d}.{os.getpid()}.png"
        img.save(tmp, format="PNG")
        os.replace(tmp, target)
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--root", default=None, help="the dataset's data root (default: its reader's)")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many train images (test: limit//5)"
    )
    args = parser.parse_args()
    from distil.data import DATASETS
    from distil.data.raw import RawDataset
    from distil.data.registry import select_samples

    raw = DATASETS.get(args.dataset)(Path(args.root) if args.root else None)
    assert isinstance(raw, RawDataset), f"{args.dataset} is already on disk"
    train, _, test = select_samples(raw.y_train, raw.y_test, val_fraction=0.0, seed=0, limit=args.limit)
    names = list(raw.class_names)
    n = write_split(raw.x_train[train], raw.y_train[train], names, args.out / "train")
    n += write_split(raw.x_test[test], raw.y_test[test], names, args.out / "test")
    print(f"wrote {n} images ({len(train)} train, {len(test)} test) under {args.out}")


if __name__ == "__main__":
    main()
