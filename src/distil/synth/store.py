"""Writing a synthetic transfer set as a dataset distil reads (`npz`), with grids and a report page.

Layout of the output folder (written to a temporary folder and renamed into place, so a killed run
leaves nothing half-written)::

    transfer.npz     x (synthetic inputs, in the data's pixel scale), y (the teacher's classes), target,
                     ids, class_names, mean/std (the teacher's input normalization), synthetic (True),
                     x_test/y_test (the real test split, for measurement; absent when there is none)
    synthetic.json   method, seed, settings, seconds, counts, teacher agreement, real_test, the files
    grids/NN-CLASS.png  up to 16 synthetic inputs the teacher puts in each class
    report.html      the counts and the grids, self-contained

`distil distill --set data.name=npz --set data.root=DIR/transfer.npz` then trains on the synthetic inputs
alone and measures on the real test split. Without one (a teacher whose data the user does not have,
`distil synthesize --no-data`) the npz reader holds out 20% of the synthetic inputs and names what they
measure: agreement with the teacher, not accuracy (`distil.data.npz.SYNTHETIC_TEST_METRIC`). The npz reader normalizes with the recorded mean/std, so the
teacher sees the tensors the synthesis made (up to float32 rounding of x * std + mean).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from distil.data.batch import INPUTS
from distil.data.bundle import DataBundle, SampleSplit
from distil.data.npz import SYNTHETIC_TEST_METRIC
from distil.errors import DataError
from distil.fileio import atomic_dir, atomic_write_json, atomic_write_text
from distil.report.html import image_html, page_html, table_html
from distil.synth.synthesize import SyntheticSet

TRANSFER_FILE = "transfer.npz"
NO_REAL_TEST = (
    "No real test data: distil distill on this set holds out 20% of the synthetic inputs and reports "
    f"{SYNTHETIC_TEST_METRIC}, not accuracy. Give real labelled inputs (even a few) with "
    "distil synthesize --test FILE.npz to measure accuracy."
)
GRID_SAMPLES = 16


def _denormalize(x: torch.Tensor, data: DataBundle) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = torch.tensor(data.mean, dtype=torch.float32).view(shape)
    std = torch.tensor(data.std, dtype=torch.float32).view(shape)
    return x.float() * std + mean


def _raw_split(split: SampleSplit, data: DataBundle) -> tuple[np.ndarray, np.ndarray]:
    parts = [_denormalize(b[INPUTS], data) for b in split.batches(1024)]
    x = torch.cat(parts) if parts else torch.empty((0, *data.input_shape))
    return x.numpy(), split.labels.numpy()


def write_synthetic(
    out: str | Path,
    synthetic: SyntheticSet,
    data: DataBundle,
    *,
    teacher: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `synthetic` (made for a teacher trained on `data`) as the folder `out`; returns the .npz path.

    Args:
        out: the folder to create; it must not exist.
        synthetic: the synthetic set (inputs in the teacher's input space, i.e. normalized as `data`).
        data: the teacher's data: its normalization, class names and real test split are recorded (an
            empty test split: there is no real test data, and synthetic.json and the report say so).
        teacher: how the teacher was given (a checkpoint path, a factory), for the record.
        extra: more fields for synthetic.json.

    Raises:
        DataError: `out` exists, or the inputs do not have the data's sample shape.
    """
    final = Path(out)
    if final.exists():
        raise DataError(f"{final} exists; choose a new --out folder (a synthetic set is never overwritten).")
    if tuple(synthetic.inputs.shape[1:]) != tuple(data.input_shape):
        raise DataError(
            f"synthetic inputs have shape {tuple(synthetic.inputs.shape[1:])}, but the teacher's data has "
            f"{tuple(data.input_shape)}."
        )
    x_test, y_test = _raw_split(data.test, data)
    real_test = len(y_test) > 0
    x = _denormalize(synthetic.inputs, data)
    arrays: dict[str, Any] = {
        "x": x.numpy(),
        "y": synthetic.teacher_labels.numpy().astype(np.int64),
        "ids": np.array(synthetic.ids),
        "class_names": np.array(list(data.class_names)),
        "mean": np.array(data.mean, dtype=np.float64),
        "std": np.array(data.std, dtype=np.float64),
        "synthetic": np.array(True),
    }
    if real_test:  # without one, the npz reader carves a test split and labels what it measures
        arrays.update(x_test=x_test, y_test=y_test.astype(np.int64))
    if synthetic.targets is not None:  # the adversarial generator makes inputs for no class
        arrays["target"] = synthetic.targets.numpy().astype(np.int64)
    record = {
        "method": synthetic.method,
        "seed": synthetic.seed,
        "count": len(synthetic.inputs),
        "seconds": round(synthetic.seconds, 3),
        "settings": synthetic.settings,
        "teacher": teacher,
        "data": {
            "name": data.name,
            "class_names": list(data.class_names),
            "input_shape": list(data.input_shape),
            "mean": list(data.mean),
            "std": list(data.std),
            "test_samples": len(y_test),
        },
        "real_test": real_test,
        **({} if real_test else {"test_note": NO_REAL_TEST}),
        "teacher_agreement": synthetic.teacher_agreement,
        "teacher_class_counts": np.bincount(
            synthetic.teacher_labels.numpy(), minlength=data.num_classes
        ).tolist(),
        "files": {"transfer_set": TRANSFER_FILE, "report": "report.html", "grids": "grids/"},
        **(extra or {}),
    }
    with atomic_dir(final, lambda p: (p / TRANSFER_FILE).is_file()) as tmp:
        np.savez(tmp / TRANSFER_FILE, **arrays)
        grids = write_class_grids(tmp / "grids", x, synthetic.teacher_labels, data.class_names)
        atomic_write_json(tmp / "synthetic.json", record)
        atomic_write_text(tmp / "report.html", _report_page(record, grids))
    return final / TRANSFER_FILE


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    # Each image scaled by its own range: synthetic inputs may leave the data's pixel range.
    flat = images.reshape(len(images), -1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    scaled = (images - lo) / (hi - lo).clamp_min(1e-8)
    return (scaled * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def class_grid(images: torch.Tensor, columns: int = 4, scale: int = 3) -> Image.Image:
    """One PNG-ready grid of (N, C, H, W) images (C 1 or 3), each enlarged `scale` times, 2 px apart."""
    tiles = _to_uint8(images)
    n, c, h, w = tiles.shape
    rows = max(1, math.ceil(n / columns))
    th, tw = h * scale, w * scale
    mode = "L" if c == 1 else "RGB"
    canvas = Image.new(
        mode, (columns * (tw + 2) + 2, rows * (th + 2) + 2), color=255 if c == 1 else (255,) * 3
    )
    for i, tile in enumerate(tiles):
        pixels = tile[0] if c == 1 else np.transpose(tile[:3], (1, 2, 0))
        img = Image.fromarray(pixels, mode=mode).resize((tw, th), Image.Resampling.NEAREST)
        canvas.paste(img, (2 + (i % columns) * (tw + 2), 2 + (i // columns) * (th + 2)))
    return canvas


def write_class_grids(
    folder: Path, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]
) -> dict[str, Path]:
    """Write grids/NN-CLASS.png for every class with at least one image; returns class name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for k, name in enumerate(class_names):
        members = images[labels == k][:GRID_SAMPLES]
        if len(members) == 0 or images.dim() != 4 or images.shape[1] not in (1, 3):
            continue
        safe = "".join(ch if ch.isalnum() else "_" for ch in name)
        path = folder / f"{k:02d}-{safe}.png"
        buffer = io.BytesIO()
        class_grid(members).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue())
        written[name] = path
    return written


def _report_page(record: dict[str, Any], grids: dict[str, Path]) -> str:
    names = record["data"]["class_names"]
    counts = record["teacher_class_counts"]
    rows = [[name, str(counts[k])] for k, name in enumerate(names)]
    body = table_html(["class (the teacher's)", "synthetic inputs"], rows, "class-counts")
    figures = "".join(
        image_html(path.read_bytes(), f"{name}: synthetic inputs") for name, path in grids.items()
    )
    agreement = record["teacher_agreement"]
    intro = (
        f"{record['count']} inputs by {record['method']} (seed {record['seed']}) in {record['seconds']:.0f} s; "
        + (
            f"the teacher gives the class they were made for to {agreement:.1%} of them."
            if agreement is not None
            else "teacher agreement with target classes: n/a (this method makes inputs for no class)."
        )
    )
    if not record.get("real_test", True):
        intro += f" {record['test_note']}"
    return page_html(
        f"Synthetic transfer set: {record['data']['name']}",
        [("Classes", body), ("Synthetic inputs per class", figures or "<p>no image inputs</p>")],
        intro,
    )
