"""Hugging Face `datasets` with an image and a label column: saved with `save_to_disk`, or parquet files.

    DIR/                      `DatasetDict.save_to_disk(DIR)` (splits train, optional validation/val
                              and test) or `Dataset.save_to_disk(DIR)` (one split: train)
    DIR/*.parquet, FILE.parquet  parquet files (`Dataset.to_parquet`); a file whose name starts with
                              test / val / validation is that split, any other is train

The image column is the one with an `Image` feature (else one named image/img), the label column the
one with a `ClassLabel` feature (else one named label/labels, integer class indices); class names come
from the ClassLabel, else "0".."max". Rows are read on demand from the memory-mapped Arrow data and
decoded with Pillow exactly as image files are (`data.image_size`, `data.channels`), after every image
is checked once at load (`data.on_bad_sample`). Needs the `datasets` package (`pip install
'distil[hf-datasets]'`); parquet files are converted once into its cache (~/.cache/huggingface).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from distil.data.imagefolder import (
    Channels,
    ImageFilesDataset,
    ImageFolderSplit,
    OnBadSample,
    _options,
    _Scan,
    _scan,
)
from distil.data.registry import DATASETS
from distil.errors import DataError

INSTALL_HINT = "dataset 'hf-datasets' needs the datasets package: pip install 'distil[hf-datasets]'"
SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}
_OPEN: dict[tuple[str, str], Any] = {}
"""Each process's opened splits (memory-mapped Arrow tables), keyed by (root, split)."""

HFRef = tuple[str, str, int]
"""A row: (root, split name in the source, row number)."""


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(INSTALL_HINT) from exc
    return datasets


def _load(root: str) -> dict[str, Any]:
    """The source's splits by their own names, image columns left undecoded."""
    datasets = _datasets()
    path = Path(root)
    try:
        if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
            files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
            groups: dict[str, list[str]] = {}
            for f in files:
                name = next((k for k in ("validation", "val", "test") if f.name.startswith(k)), "train")
                groups.setdefault(name, []).append(str(f))
            loaded = datasets.load_dataset("parquet", data_files=groups)
        else:
            loaded = datasets.load_from_disk(str(path))
    except DataError:
        raise
    except Exception as exc:  # datasets raises many kinds for a folder that is not one of its datasets
        raise DataError(
            f"cannot read {root} as a Hugging Face dataset ({type(exc).__name__}: {exc}); save it with "
            "save_to_disk(DIR) or to_parquet(FILE.parquet)."
        ) from exc
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _columns(split: Any, root: str) -> tuple[str, str]:
    datasets = _datasets()
    feats = split.features
    images = [k for k, v in feats.items() if isinstance(v, datasets.Image)] or [
        k for k in ("image", "img") if k in feats
    ]
    labels = [k for k, v in feats.items() if isinstance(v, datasets.ClassLabel)] or [
        k for k in ("label", "labels") if k in feats
    ]
    if len(images) != 1 or len(labels) != 1:
        raise DataError(
            f"{root}: need one image column and one label column, found columns {list(feats)}; give the "
            "images an Image() feature and the labels a ClassLabel (or name them image and label)."
        )
    return images[0], labels[0]


def _opened(root: str, split: str) -> tuple[Any, str]:
    if (root, split) not in _OPEN:
        table = _load(root)[split]
        image_col, _ = _columns(table, root)
        _OPEN[(root, split)] = (table.cast_column(image_col, _datasets().Image(decode=False)), image_col)
    return _OPEN[(root, split)]  # type: ignore[no-any-return]


def _image_source(ref: HFRef) -> tuple[IO[bytes] | str, str]:
    root, split, row = ref
    table, image_col = _opened(root, split)
    value = table[row][image_col]
    what = f"{split} row {row} of {root}"
    if value is None:
        raise DataError(f"{what} has no image; fill it or drop the row.")
    if value.get("bytes") is not None:
        return io.BytesIO(value["bytes"]), what
    return str(value["path"]), what


class HFSplit(ImageFolderSplit):
    """Rows of a Hugging Face dataset decoded on demand; `paths` holds :data:`HFRef` tuples."""

    def _open(self, ref: Any) -> tuple[str | IO[bytes], str | None]:
        return _image_source(ref)


@dataclass(frozen=True)
class HFImageDataset(ImageFilesDataset):
    """A Hugging Face image dataset: rows become references, checked by `scans` (a `LazyDataset`)."""

    def scans(self) -> dict[str, _Scan]:
        return {k: _scan(v, self.on_bad_sample, _image_source) for k, v in self.splits.items()}

    def make_split(
        self,
        refs: list[Any],
        labels: Any,
        mode: str,
        size: tuple[int, int] | None,
        shape: tuple[int, ...],
        stats: tuple[tuple[float, ...], tuple[float, ...]],
    ) -> ImageFolderSplit:
        return HFSplit(refs, labels, mode, size, shape, *stats)


@DATASETS.register("hf-datasets")
def read_hf_datasets(
    root: Path | None = None,
    *,
    image_size: int | None = None,
    channels: Channels = "auto",
    on_bad_sample: OnBadSample = "error",
) -> HFImageDataset:
    """Open a Hugging Face image dataset (see the module docstring); rows are decoded on demand.

    Raises:
        DataError: datasets missing, a source it cannot read, no single image/label column, or a
            label that is not a class index.
    """
    options = _options(image_size, channels, on_bad_sample)
    if root is None:
        raise DataError("dataset 'hf-datasets' needs --data-root DIR (save_to_disk) or FILE.parquet.")
    if not Path(root).exists():
        raise DataError(f"{root} does not exist; pass the save_to_disk folder or the parquet file(s).")
    source = str(Path(root).resolve())
    loaded = _load(source)
    unknown = sorted(set(loaded) - set(SPLIT_NAMES))
    if unknown or "train" not in loaded:
        raise DataError(f"{root}: splits {sorted(loaded)}; need train (and optional validation/val, test).")
    _, label_col = _columns(loaded["train"], source)
    feature = loaded["train"].features[label_col]
    names = list(getattr(feature, "names", []) or [])
    splits: dict[str, list[tuple[Any, int]]] = {}
    for name, table in loaded.items():
        _columns(table, source)
        labels = table[label_col]
        bad = [v for v in labels if not isinstance(v, int) or isinstance(v, bool) or v < 0]
        if bad:
            raise DataError(
                f"{root}: {name} labels must be class indices >= 0 (a ClassLabel), e.g. {bad[:3]}."
            )
        splits[SPLIT_NAMES[name]] = [((source, name, i), int(v)) for i, v in enumerate(labels)]
    top = max((v for entries in splits.values() for _, v in entries), default=-1)
    if not names:
        names = [str(i) for i in range(top + 1)]
    elif top >= len(names):
        raise DataError(f"{root}: label {top} is outside the {len(names)} classes {names}.")
    return HFImageDataset(source=Path(source), class_names=names, splits=splits, **options)  # type: ignore[arg-type]


__all__ = ["HFSplit", "read_hf_datasets"]
