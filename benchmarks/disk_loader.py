"""Data on disk vs in memory: one epoch of training batches, and the peak memory of loading them.

Each mode runs in its own child process (peak RSS is per process): `memory` loads the dataset into
tensors (TensorLoader), `disk` opens the same samples as an npy-dir folder (memory-mapped, DatasetLoader
with --workers processes). It prints load time, epoch time (batches only, no model) and peak RSS side by
side; the data folder is exported once into --dir.

    python benchmarks/disk_loader.py                              # fashion-mnist, all 60000 images
    python benchmarks/disk_loader.py --dataset digits --workers 0  # smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(mode: str, dataset: str, folder: str, workers: int, batch_size: int) -> None:
    from distil.config import LoaderConfig, TrainConfig
    from distil.data import load_dataset
    from distil.train.engine import make_accelerator, train_loader

    started = time.perf_counter()
    data = load_dataset(dataset) if mode == "memory" else load_dataset("npy-dir", folder)
    loaded = time.perf_counter() - started
    cfg = TrainConfig(
        batch_size=batch_size,
        augment="none",
        loader=LoaderConfig(num_workers=workers if mode == "disk" else 0),
    )
    loader = train_loader(data, cfg, make_accelerator("cpu"))
    started = time.perf_counter()
    samples = sum(int(b["labels"].shape[0]) for b in loader)
    epoch = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kind = type(loader).__name__
    print(
        json.dumps(
            {
                "mode": mode,
                "loader": kind,
                "load_s": loaded,
                "epoch_s": epoch,
                "samples": samples,
                "peak_rss_mib": peak_mib,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--dir", default=None, help="npy-dir folder to (re)use; default: a temp dir")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.dataset, args.child[1], args.workers, args.batch_size)
        return
    from distil.data import export_npy_dir

    folder = Path(args.dir or tempfile.mkdtemp(prefix="distil-npy-"))
    if not (folder / "x_train.npy").is_file():
        export_npy_dir(args.dataset, folder)
    rows = []
    for mode in ("memory", "disk"):
        cmd = [sys.executable, __file__, "--dataset", args.dataset, "--workers", str(args.workers)]
        cmd += ["--batch-size", str(args.batch_size), "--child", mode, str(folder)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"{args.dataset}: {rows[0]['samples']} train samples per epoch, batch {args.batch_size}, disk workers {args.workers}"
    )
    print(f"{'mode':8} {'loader':14} {'load s':>8} {'epoch s':>8} {'peak RSS MiB':>13}")
    for r in rows:
        print(
            f"{r['mode']:8} {r['loader']:14} {r['load_s']:8.2f} {r['epoch_s']:8.2f} {r['peak_rss_mib']:13.0f}"
        )
    m, d = rows
    print(
        f"disk/memory: epoch time x{d['epoch_s'] / m['epoch_s']:.2f}, peak RSS x{d['peak_rss_mib'] / m['peak_rss_mib']:.2f}"
    )


if __name__ == "__main__":
    main()
