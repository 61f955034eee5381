"""Image datasets as WebDataset tar shards: written from an image folder or manifest, read per process.

Layout of a ``shards`` folder (what :func:`write_shards` / ``distil data shards SRC OUT`` writes)::

    train-000000.tar, train-000001.tar, ...   WebDataset shards: members NNNNNNNN.<ext> (the image file's
    val-000000.tar ... (optional)             own bytes, not re-encoded) and NNNNNNNN.cls (the label),
    test-000000.tar ... (optional)            written with ``webdataset.TarWriter``
    shards.json                               the index, written last: class names, each shard's size
                                              and its samples' offsets, sizes, labels, image sizes and
                                              modes, and the train split's mean/std

The tars are plain WebDataset shards (``webdataset.WebDataset("OUT/train-{000000..000009}.tar")`` reads
them), but distil reads them map-style: each sample is one seek + read at the offset the index gives,
so the one DataLoader path (`DatasetLoader` workers, `EpochSampler`) serves them with stable sample ids
(``index``: the position in the split, which teacher caches and resume key on) and exact resume.

Which process reads what: with several processes (torchrun / accelerate), the training sampler gives
rank r the shards r, r + world, r + 2 * world, ... of the train split (`ShardSplit.shard_groups`), so
each process reads its own shards only; the order within them is a permutation drawn from (seed, epoch),
and ranks with fewer samples wrap around their own shards so every rank runs the same number of batches
(with drop_last, the longer ones are cut instead). An epoch is a function of (seed, epoch, number of
processes): a run resumed with the same number of processes continues exactly; with another number the
shards are dealt anew. Evaluation splits are read in contiguous ranges per process (as for every
on-disk split), which follow the shard order.

Nothing is decoded at load: every image was opened and decoded when the shards were written (bad files
stop the writer, or are left out with on_bad_sample=skip) and the index records its size (upright, as
decoded) and mode, plus what the scan found (`extra`: files left out by reason, EXIF-rotated, 16-bit
and animated counts). Members keep the image file's bytes under the extension of their content (a
JPEG named .HEIC is a .jpg member); samples decode through the image readers' one `_decode`, so EXIF
orientation, 16-bit scaling and first frames are the same as when reading the folder.
The load only checks that every shard is there with the size the index records; a shard damaged later
names itself and the sample when read. The train split's mean/std come from the index when the whole
train split is used with the recorded preprocessing; a validation carve-out, `limit`, another
`image_size` or `channels` need one pass over the train samples at load (give a val/ split to avoid it).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from distil.data.imagefolder import (
    SHARD_FIX,
    Channels,
    ImageFilesDataset,
    ImageFolderSplit,
    OnBadSample,
    _options,
    _Scan,
    read_imagefolder,
    read_manifest,
    scan_summary,
    warn_summary,
)
from distil.data.registry import DATASETS
from distil.errors import DataError
from distil.fileio import atomic_write_text

FORMAT = "distil-shards/1"
INDEX = "shards.json"
SHARD_SIZE = 1000
"""Default samples per shard (a few MB of small images; use larger shards for large images)."""
INSTALL_HINT = "writing shards needs webdataset: pip install 'distil[shards]' (or pip install webdataset)"

ShardRef = tuple[str, int, int, str]
"""A sample in a shard: (shard file, byte offset of the member's data, its size, member name)."""


class ShardSplit(ImageFolderSplit):
    """Images read from tar shards by offset: references and labels in memory, bytes read on `split[i]`.

    Implements :class:`~distil.data.bundle.SampleSplit` like :class:`ImageFolderSplit` (same decoding,
    resizing and normalization); `paths` holds :data:`ShardRef` tuples. Pickles as its references.
    """

    def _open(self, ref: Any) -> tuple[str | IO[bytes], str | None]:
        file, offset, size, name = ref
        what = f"{name} in shard {file}"
        try:
            with open(file, "rb") as f:
                f.seek(offset)
                blob = f.read(size)
        except OSError as exc:
            raise DataError(f"cannot read {what} ({exc}); {SHARD_FIX}.") from exc
        if len(blob) != size:
            raise DataError(
                f"{what}: the shard ends {size - len(blob)} bytes early (truncated); {SHARD_FIX}."
            )
        return io.BytesIO(blob), what

    @property
    def shard_groups(self) -> list[torch.Tensor]:
        """Positions in this split of each shard's samples, shards in order of first appearance.

        `EpochSampler` deals these groups to the data-parallel ranks, so each rank reads its own shards.
        """
        groups: dict[str, list[int]] = {}
        for i, ref in enumerate(self.paths):
            groups.setdefault(ref[0], []).append(i)
        return [torch.tensor(v, dtype=torch.int64) for v in groups.values()]


@dataclass(frozen=True)
class ShardsDataset(ImageFilesDataset):
    """A shards folder opened from its index (a `LazyDataset`): nothing decoded, shard sizes checked."""

    index_scans: dict[str, _Scan] = field(default_factory=dict)
    stats: dict[str, Any] | None = None
    """The train split's {"channels", "size": [H, W], "mean", "std"} as written, or None."""

    def scans(self) -> dict[str, _Scan]:
        return self.index_scans

    def make_split(
        self,
        refs: list[Any],
        labels: torch.Tensor,
        mode: str,
        size: tuple[int, int] | None,
        shape: tuple[int, ...],
        stats: tuple[tuple[float, ...], tuple[float, ...]],
    ) -> ImageFolderSplit:
        return ShardSplit(refs, labels, mode, size, shape, *stats)

    def known_stats(
        self, mode: str, size_hw: tuple[int, int]
    ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        s = self.stats
        if s is None or s.get("channels") != mode or tuple(s.get("size", ())) != tuple(size_hw):
            return None
        return tuple(float(v) for v in s["mean"]), tuple(float(v) for v in s["std"])


FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "TIFF": "tiff", "JPEG2000": "jp2"}
"""Member extensions of Pillow formats named unlike their usual suffix (others: the name in lower case)."""


def _extension(fmt: str) -> str:
    """The member extension of an image in Pillow format `fmt`: from its content, not the file's suffix
    (a JPEG named photo.HEIC, or a file without a suffix, is stored as .jpg)."""
    return FORMAT_EXTENSIONS.get(fmt, fmt.lower() or "img")


def _shard_entries(
    file: Path, paths: Sequence[str], labels: Sequence[int], formats: Sequence[str], first: int
) -> tuple[list[tuple[str, int, int]], int]:
    """Write one shard (temp name, then rename); returns each image member's (name, offset, size)."""
    try:
        import webdataset as wds
    except ImportError as exc:
        raise DataError(INSTALL_HINT) from exc
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    exts = [_extension(f) for f in formats]
    try:
        with wds.TarWriter(str(tmp)) as sink:
            for j, (path, label) in enumerate(zip(paths, labels, strict=True)):
                sink.write(
                    {"__key__": f"{first + j:08d}", exts[j]: Path(path).read_bytes(), "cls": str(label)}
                )
        with tarfile.open(tmp) as tar:
            members = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
        entries = []
        for j, ext in enumerate(exts):
            name = f"{first + j:08d}.{ext}"
            entries.append((name, *members[name]))
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return entries, file.stat().st_size


def write_shards(
    source: str | Path,
    out: str | Path,
    *,
    shard_size: int = SHARD_SIZE,
    on_bad_sample: OnBadSample = "error",
) -> Path:
    """Write an image folder or a manifest (CSV/JSONL) as WebDataset tar shards plus an index.

    Every image is opened and decoded first (the image readers' load-time check), so a corrupt or
    truncated file stops the writer before anything is written (with on_bad_sample="skip" it is left
    out and counted). Each shard is written to a temporary name and renamed; the index `shards.json`
    is written last, so an interrupted run leaves no folder that reads as complete.

    Args:
        source: an image folder (``root/<class>/...`` or ``root/train|val|test/<class>/...``) or a
            manifest file (see :mod:`distil.data.imagefolder`).
        out: the folder to write (created; must not hold shards already).
        shard_size: samples per shard; more shards than training processes are needed to train on them.
        on_bad_sample: "error" or "skip".

    Returns:
        The index file.

    Raises:
        DataError: a bad source (as for the image readers), an `out` that already holds shards,
            shard_size < 1, or webdataset missing.
    """
    if shard_size < 1:
        raise DataError(f"shard_size must be a positive number of samples, got {shard_size}.")
    source, out = Path(source), Path(out)
    reader = read_manifest if source.is_file() else read_imagefolder
    dataset = reader(source, on_bad_sample=on_bad_sample)  # type: ignore[call-arg]
    assert isinstance(dataset, ImageFilesDataset)
    if (out / INDEX).exists():
        raise DataError(f"{out} already holds shards ({INDEX}); write to another folder or delete it first.")
    scans = dataset.scans()  # every file decoded once: bad input stops here, before any shard is written
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"format": FORMAT, "source": str(source), "class_names": dataset.class_names}
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, scan in scans.items():
        shards = []
        for first in range(0, len(scan.paths), shard_size):
            stop = min(first + shard_size, len(scan.paths))
            file = out / f"{split}-{first // shard_size:06d}.tar"
            entries, size = _shard_entries(
                file, scan.paths[first:stop], scan.labels[first:stop], scan.formats[first:stop], first
            )
            shards.append(
                {
                    "file": file.name,
                    "bytes": size,
                    "members": [e[0] for e in entries],
                    "offsets": [e[1] for e in entries],
                    "sizes": [e[2] for e in entries],
                    "labels": scan.labels[first:stop],
                    "hw": [list(hw) for hw in scan.sizes[first:stop]],
                    "grayscale": scan.grayscale,
                }
            )
        splits[split] = shards
    index["splits"] = splits
    # What the scan found (files left out by reason, EXIF-rotated, 16-bit, animated): said now, and
    # kept in the index so every bundle read from the shards records it as the folder's would.
    summary = scan_summary(list(scans.values()))
    warn_summary(source, summary)
    if summary:
        index["extra"] = summary
    index["stats"] = _train_stats(out, index)
    # Compact: the index holds a few numbers per sample.
    atomic_write_text(out / INDEX, json.dumps(index, separators=(",", ":")) + "\n")
    return out / INDEX


def _train_stats(out: Path, index: dict[str, Any]) -> dict[str, Any] | None:
    """Mean/std of the whole train split as the shards read back (None when sizes differ: no default)."""
    dataset = _open_index(out, index, image_size=None, channels="auto")
    scans = dataset.scans()
    if len({hw for s in scans.values() for hw in s.sizes}) != 1:
        return None
    bundle = dataset.build_bundle("shards", val_fraction=0.0, seed=0, limit=None)
    mode = "L" if bundle.input_shape[0] == 1 else "RGB"
    return {"channels": mode, "size": list(bundle.input_shape[1:]), "mean": bundle.mean, "std": bundle.std}


def _open_index(
    folder: Path, index: dict[str, Any], *, image_size: int | None, channels: Channels
) -> ShardsDataset:
    scans: dict[str, _Scan] = {}
    try:
        names = [str(c) for c in index["class_names"]]
        for split, shards in index["splits"].items():
            refs: list[ShardRef] = []
            labels: list[int] = []
            sizes: list[tuple[int, int]] = []
            grayscale = True
            for shard in shards:
                file = folder / str(shard["file"])
                if Path(shard["file"]).name != shard["file"]:
                    raise DataError(f"{folder / INDEX} names shard {shard['file']!r} outside its folder.")
                on_disk = file.stat().st_size if file.is_file() else None
                if on_disk is None or on_disk != shard["bytes"]:
                    found = "is missing" if on_disk is None else f"is {on_disk} bytes, not {shard['bytes']}"
                    raise DataError(f"shard {file} {found} (truncated or replaced); {SHARD_FIX}.")
                n = len(shard["members"])
                columns = (shard["offsets"], shard["sizes"], shard["labels"], shard["hw"])
                if any(len(c) != n for c in columns):
                    raise DataError(f"{folder / INDEX}: the columns of shard {file.name} differ in length.")
                for m, o, s in zip(shard["members"], shard["offsets"], shard["sizes"], strict=True):
                    if not (isinstance(o, int) and isinstance(s, int) and o >= 0 and 0 <= s <= on_disk - o):
                        raise DataError(f"{folder / INDEX}: member {m!r} lies outside shard {file.name}.")
                    refs.append((str(file), o, s, str(m)))
                labels.extend(int(v) for v in shard["labels"])
                sizes.extend((int(h), int(w)) for h, w in shard["hw"])
                grayscale = grayscale and bool(shard["grayscale"])
            if any(not 0 <= v < len(names) for v in labels):
                raise DataError(f"{folder / INDEX}: a {split} label is outside the {len(names)} classes.")
            scans[str(split)] = _Scan(refs, labels, sizes, grayscale)
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(
            f"{folder / INDEX} is not a distil shards index ({type(exc).__name__}: {exc}); {SHARD_FIX}."
        ) from exc
    if "train" not in scans or not scans["train"].paths:
        raise DataError(f"{folder / INDEX} lists no train shards; {SHARD_FIX}.")
    stats = index.get("stats")
    recorded = index.get("extra")
    extra = {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
    if index.get("skipped"):  # written before the index kept the whole summary
        extra["skipped"] = str(index["skipped"])
    return ShardsDataset(
        source=folder,
        class_names=names,
        splits={},
        image_size=image_size,
        channels=channels,
        extra=extra,
        index_scans=scans,
        stats=stats if isinstance(stats, dict) else None,
    )


@DATASETS.register("shards")
def read_shards(
    root: Path | None = None, *, image_size: int | None = None, channels: Channels = "auto"
) -> ShardsDataset:
    """Open a shards folder (see the module docstring) from its index; samples are read on demand.

    Args:
        root: the folder written by `distil data shards` (or its shards.json).
        image_size, channels: as for the image readers (applied when samples are decoded).

    Raises:
        DataError: a missing or malformed index, or a shard that is missing or has another size.
    """
    _options(image_size, channels, "error")
    if root is None:
        raise DataError(
            "dataset 'shards' needs the folder: pass --data-root DIR (written by distil data shards)."
        )
    folder = Path(root)
    folder = folder.parent if folder.name == INDEX else folder
    index_file = folder / INDEX
    if not index_file.is_file():
        hint = " (its writer was interrupted?)" if any(folder.glob("*.tar")) else ""
        raise DataError(
            f"{folder} has no {INDEX}{hint}; write the shards with `distil data shards SRC {folder}`."
        )
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {index_file} as JSON ({exc}); {SHARD_FIX}.") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{index_file} is not a distil shards index (format {FORMAT}); {SHARD_FIX}.")
    return _open_index(folder, index, image_size=image_size, channels=channels)


__all__ = ["ShardSplit", "ShardsDataset", "read_shards", "write_shards"]
