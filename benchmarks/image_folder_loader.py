"""An image folder at two sizes: load time, one epoch of batches, and peak memory side by side.

Each folder is read in its own child process (peak RSS is per process) with `imagefolder`, and one
epoch of training batches (no model) goes through the loop's DatasetLoader. Peak memory should not
grow with the number of images (issue 12: < 20% apart at 6k vs 60k). Write the folders first:

    python benchmarks/write_image_folder.py --limit 6000 data/fm-6k
    python benchmarks/write_image_folder.py data/fm-60k
    python benchmarks/image_folder_loader.py data/fm-6k data/fm-60k
    distil data shards data/fm-6k data/fm-6k-shards; distil data shards data/fm-60k data/fm-60k-shards
    python benchmarks/image_folder_loader.py --dataset shards data/fm-6k-shards data/fm-60k-shards
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def child(folder: str, workers: int, batch_size: int, dataset: str = "imagefolder") -> None:
    from distil.config import LoaderConfig, TrainConfig
    from distil.data import load_dataset
    from distil.train.engine import make_accelerator, train_loader

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_dataset(dataset, folder)
    loaded = time.perf_counter() - started
    cfg = TrainConfig(batch_size=batch_size, augment="none", loader=LoaderConfig(num_workers=workers))
    loader = train_loader(data, cfg, make_accelerator("cpu"))
    started = time.perf_counter()
    samples = sum(int(b["labels"].shape[0]) for b in loader)
    epoch = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    row = {"folder": folder, "loader": type(loader).__name__, "load_s": loaded, "epoch_s": epoch}
    row.update(samples=samples, peak_rss_mib=peak, worker_peak_rss_mib=workers_peak)
    print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--dataset",
        default="imagefolder",
        help="imagefolder, or shards for folders written by distil data shards",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers, args.batch_size, args.dataset)
        return
    rows = []
    for folder in args.folders:
        cmd = [
            sys.executable,
            __file__,
            "x",
            "--workers",
            str(args.workers),
            "--batch-size",
            str(args.batch_size),
            "--dataset",
            args.dataset,
        ]
        out = subprocess.run([*cmd, "--child", folder], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"{args.dataset}, batch {args.batch_size}, workers {args.workers} (load = scan + decode check + stats)"
    )
    print(
        f"{'folder':24} {'train imgs':>10} {'load s':>8} {'epoch s':>8} {'peak RSS MiB':>13} {'worker MiB':>11}"
    )
    for r in rows:
        print(
            f"{r['folder']:24} {r['samples']:10d} {r['load_s']:8.2f} {r['epoch_s']:8.2f} "
            f"{r['peak_rss_mib']:13.0f} {r['worker_peak_rss_mib']:11.0f}"
        )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(
            f"last/first: images x{b['samples'] / a['samples']:.1f}, epoch time x{b['epoch_s'] / a['epoch_s']:.2f}, "
            f"peak RSS x{b['peak_rss_mib'] / a['peak_rss_mib']:.2f}"
        )


if __name__ == "__main__":
    main()
