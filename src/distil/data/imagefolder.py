"""Image files on disk: an `imagefolder` (root/<class>/<file>) or a `manifest` (CSV/JSONL of path, label).

Layouts::

    root/<class>/<file>                       one split; a stratified 20% (seed 0) is the test split
    root/train/<class>/<file>, root/test/...  given splits; root/val/<class>/... is optional (without
                                              it `val_fraction` of train is the validation split)
    labels.csv / labels.jsonl                 a manifest: columns path, label and optional split
                                              (train|val|test); paths relative to the manifest's folder

Files are whatever Pillow can read, decided by content, not by suffix (a JPEG named `.HEIC` is read;
in sub-folders of a class folder too); hidden files (.DS_Store, ._x AppleDouble) and Thumbs.db /
desktop.ini are ignored. Class names are the sorted class-folder names, or the manifest's sorted labels
(all non-negative integers: class indices named "0".."max"; `class_names.json` next to the manifest
fixes the list and its order). An empty class folder is an error; with `on_bad_sample="skip"` it is
left out with a warning (the class is dropped, so it is not in `class_names`).

Load time (one pass): every file is opened and fully decoded once (`Image.load()`), so a file that is
not an image, a corrupt or truncated image, an unreadable file or a decompression bomb is reported
before anything trains or is written, not in epoch 7 inside a worker. With `on_bad_sample="skip"`
unidentifiable and corrupt files are left out and counted by reason (`bundle.extra["skipped"]`, e.g.
"not an image Pillow can read (format TXT?)", "unsupported format HEIC: pip install pillow-heif");
unreadable files and bombs are errors either way.

Decoding (`_decode`, shared by every image reader, shards and Hugging Face datasets included): the
first frame of animated images (GIF, APNG, WebP; counted in `extra["animated"]`), turned upright by
its EXIF orientation (`extra["exif_rotated"]`), 16-bit / 32-bit / float grayscale scaled to 8 bits from
its range rather than clipped at 255 (`extra["high_bit_depth"]`, see `_to_8bit`).

Samples: converted to `channels` ("L" or "RGB"; "auto": "L" when every image is grayscale, else
"RGB", so RGBA loses its alpha and palettes are expanded), resized (bilinear) so the shorter side is
`image_size` and center-cropped to `image_size` x `image_size` (default: no resize when every image has
one size, else `image_size` is required), scaled to [0, 1] and normalized with the train split's
per-channel mean/std, computed over every train image in chunks of `STATS_CHUNK`. Only paths and
labels live in memory; pixels are decoded on `split[i]`, so peak memory does not grow with the dataset.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from distil.data.bundle import DataBundle, RangeSplit, batch_ranges
from distil.data.raw import TEST_FRACTION, TEST_SEED
from distil.data.registry import DATASETS, STATS_CHUNK, channel_stats, select_samples, stat_tensors
from distil.data.sampling import stratified_take
from distil.data.validate import validate_bundle
from distil.errors import DataError

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
DEEP_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""Modes with more than 8 bits per pixel: scaled from their range to 8 bits (`_to_8bit`), not clipped."""
SYSTEM_FILES = frozenset({"Thumbs.db", "desktop.ini"})
"""Files operating systems leave in folders; ignored like hidden files (.DS_Store, ._x AppleDouble)."""
EXIF_ORIENTATION = 0x0112
SIDEWAYS = frozenset({5, 6, 7, 8})
"""EXIF orientations that swap width and height."""
HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
PLUGIN_HINTS = {"HEIC": "pip install pillow-heif"}
"""Formats Pillow reads only with a plugin, and how to get it (distil does not depend on them)."""
CORRUPT_REASON = "corrupt or truncated image"
STILL_MULTIFRAME = frozenset({"MPO"})
"""Formats whose extra frames are not animation (not counted as animated; the first frame is the photo)."""
SHOWN_PER_REASON = 3
"""Files named per skip reason in the summary (all are counted)."""
SPLIT_DIRS = ("train", "val", "test")
Channels = Literal["auto", "L", "RGB"]
OnBadSample = Literal["error", "skip"]
CORRUPT_FIX = "re-export or delete it, or set data.on_bad_sample=skip to leave such files out"
SHARD_FIX = "the shard is damaged: rewrite the shards with `distil data shards SRC OUT`"
T = TypeVar("T")


class _BadSample(Exception):
    """A file the load-time check may leave out (on_bad_sample="skip"): `reason` groups the summary."""

    def __init__(self, reason: str, detail: BaseException) -> None:
        super().__init__(f"{reason} ({detail})")
        self.reason = reason


def _sniff_format(source: str | IO[bytes]) -> str:
    """A guess at what a file Pillow cannot identify holds: its ISO-BMFF brand, else its suffix."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                head = f.read(12)
        else:
            source.seek(0)
            head = source.read(12)
    except OSError:
        head = b""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in HEIC_BRANDS:
            return "HEIC"
        if brand in (b"avif", b"avis"):
            return "AVIF"
    suffix = Path(source).suffix.lstrip(".").upper() if isinstance(source, str) else ""
    return suffix or "unknown"


def _unidentified_reason(source: str | IO[bytes]) -> str:
    fmt = _sniff_format(source)
    if fmt in PLUGIN_HINTS:
        return f"unsupported format {fmt}: {PLUGIN_HINTS[fmt]}"
    return f"not an image Pillow can read (format {fmt}?)"


def _with_image(source: str | IO[bytes], what: str, use: Callable[[Image.Image], T]) -> T:
    """`use(image)` on the first frame of `source`, fully decoded; Pillow's failures sorted by what they mean.

    Raises:
        DataError: a decompression bomb or a file without read permission (never skipped).
        _BadSample: a file Pillow cannot identify, or a damaged one.
    """
    try:
        with Image.open(source) as im:
            im.load()  # the first frame: Image.open starts there, animated or not
            return use(im)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{what}: {exc} Shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS.") from exc
    except PermissionError as exc:
        raise DataError(f"cannot read {what} ({exc}); make it readable (chmod a+r).") from exc
    except UnidentifiedImageError as exc:
        raise _BadSample(_unidentified_reason(source), exc) from exc
    except DataError:
        raise
    except Exception as exc:  # any decoder failure is a damaged file, whatever Pillow raised
        raise _BadSample(CORRUPT_REASON, exc) from exc


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1: upright; 2..8: flipped and/or rotated), 1 when absent or unreadable."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block: Pillow's own transpose would ignore it too
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(im: Image.Image) -> Image.Image:
    """`im` turned as its EXIF orientation says (phone photos are stored sideways plus a tag)."""
    if _orientation(im) == 1:
        return im
    return ImageOps.exif_transpose(im)


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image scaled to "L" from its range, not clipped at 255.

    I;16*: value / 65535 of white. I: the same when every value fits 16 bits (Pillow reads some 16-bit
    files as I), else the image's own min..max. F: values in 0..1 are fractions of white, values in
    0..255 are levels, anything else the image's own min..max.
    """
    if im.mode not in DEEP_MODES:
        return im
    a = np.nan_to_num(np.asarray(im).astype(np.float64))
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        levels = a / 257.0
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        levels = a * 255.0
    elif im.mode == "F" and lo >= 0 and hi <= 255:
        levels = a
    else:
        levels = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L")


def _decode(
    path: str | IO[bytes], mode: str, size: tuple[int, int] | None, what: str | None = None
) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3), decoded as every image reader decodes.

    The first frame, turned upright by its EXIF orientation, 16-bit/float scaled to 8 bits, converted
    to `mode`, then resized + center-cropped to `size`. Every reader decodes through here (folders,
    manifests, shards, Hugging Face datasets), so all of them see the same pixels. `path` is a file or
    its bytes (a shard member); `what` names it in errors (default: the path).
    """
    what = what or str(path)
    fix = CORRUPT_FIX if isinstance(path, str) else SHARD_FIX
    try:
        img = _with_image(path, what, lambda im: _to_8bit(_upright(im)).convert(mode))
    except _BadSample as bad:
        raise DataError(f"{what} is not a readable image: {bad}; {fix}.") from bad
    if size is not None and img.size != size[::-1]:
        img = _resize_crop(img, size[0])
    return np.asarray(img, dtype=np.uint8)


def _resize_crop(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - side) // 2, (nh - side) // 2
    return img.crop((left, top, left + side, top + side))


def _to_tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, dtype=torch.uint8)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.float().div_(255.0)


class ImageFolderSplit(RangeSplit):
    """Image files decoded on demand: paths and labels in memory, pixels read on `split[i]`.

    Implements :class:`~distil.data.bundle.SampleSplit`; pickles as its paths (workers decode).

    Args:
        paths: the image files, in split order.
        labels: (len(paths),) int64.
        mode: Pillow mode to convert to ("L" or "RGB").
        size: (H, W) every sample is resized + cropped to, or None when all files have one size.
        sample_shape: (C, H, W).
        mean, std: the bundle's normalization.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: torch.Tensor,
        mode: str,
        size: tuple[int, int] | None,
        sample_shape: tuple[int, ...],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.paths = list(paths)
        self._labels = labels
        self.mode, self.size = mode, size
        self._shape = sample_shape
        self.mean, self.std = mean, std
        self._m, self._s = stat_tensors(mean, std, 4)

    def __len__(self) -> int:
        return len(self.paths)

    def _open(self, ref: Any) -> tuple[str | IO[bytes], str | None]:
        """What Pillow opens for sample reference `ref`, and its name in errors (a file: its path)."""
        return ref, None

    def raw(self, start: int, stop: int) -> torch.Tensor:
        """Samples start..stop-1 scaled to [0, 1], before normalization: (n, C, H, W) float32."""
        refs = self.paths[start:stop]
        if not refs:  # e.g. the empty val split of val_fraction=0
            return torch.empty((0, *self._shape))
        return _to_tensor([_decode(*self._decode_args(p)) for p in refs])

    def _decode_args(self, ref: Any) -> tuple[str | IO[bytes], str, tuple[int, int] | None, str | None]:
        source, what = self._open(ref)
        return source, self.mode, self.size, what

    def _read(self, start: int, stop: int) -> torch.Tensor:
        return self.raw(start, stop).sub_(self._m).div_(self._s)

    def take(self, index: torch.Tensor) -> ImageFolderSplit:
        paths = [self.paths[int(i)] for i in index]
        return self._like(paths, self._labels[index])

    def _like(self, paths: list[Any], labels: torch.Tensor) -> ImageFolderSplit:
        """A split of the same kind and preprocessing over other samples (`take` of subclasses too)."""
        return type(self)(paths, labels, self.mode, self.size, self._shape, self.mean, self.std)


@dataclass(frozen=True)
class _Scan:
    """One split after the load-time check: the kept samples and what was noticed on the way."""

    paths: list[Any]
    labels: list[int]
    sizes: list[tuple[int, int]]
    """(H, W) of each kept image as decoded: upright, so a sideways phone photo counts as turned."""
    grayscale: bool
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Files left out by on_bad_sample="skip": reason -> the files, named as in errors."""
    formats: list[str] = field(default_factory=list)
    """Pillow's format of each kept image (JPEG, PNG, GIF...), whatever the file's suffix says."""
    rotated: int = 0
    """Images turned upright by their EXIF orientation."""
    deep: int = 0
    """16-bit, 32-bit integer or float images, scaled to 8 bits from their range."""
    animated: int = 0
    """Animated images (GIF, APNG, WebP) read as their first frame."""


@dataclass(frozen=True)
class _Probe:
    hw: tuple[int, int]
    mode: str
    format: str
    rotated: bool
    animated: bool


def _probe(im: Image.Image) -> _Probe:
    """What the scan records of a decoded image: its upright (H, W), mode, format and quirks."""
    w, h = im.size
    orientation = _orientation(im)
    if orientation in SIDEWAYS:
        w, h = h, w
    # A phone's MPO JPEG holds the photo plus a preview: two frames, but not an animation.
    animated = bool(getattr(im, "is_animated", False)) and im.format not in STILL_MULTIFRAME
    return _Probe((h, w), im.mode, im.format or "", orientation != 1, animated)


def _as_file(ref: Any) -> tuple[str | IO[bytes], str]:
    return ref, str(ref)


def _scan(
    entries: Sequence[tuple[Any, int]],
    on_bad_sample: OnBadSample,
    source_of: Callable[[Any], tuple[str | IO[bytes], str]] = _as_file,
) -> _Scan:
    """Open and decode every image once (see the module docstring); drop or report the bad ones.

    Args:
        entries: (sample reference, label) pairs; `source_of(ref)` gives what Pillow opens and its
            name in errors (default: the reference is a file path).
        on_bad_sample: "skip" leaves unidentifiable and damaged files out, counted by reason.

    Raises:
        DataError: a bad file under on_bad_sample="error"; a decompression bomb or an unreadable file.
    """
    paths: list[Any] = []
    labels: list[int] = []
    sizes: list[tuple[int, int]] = []
    formats: list[str] = []
    skipped: dict[str, list[str]] = {}
    counts = {"rotated": 0, "deep": 0, "animated": 0}
    grayscale = True
    for ref, label in entries:
        source, what = source_of(ref)
        try:
            probe = _with_image(source, what, _probe)
        except _BadSample as bad:
            if on_bad_sample == "skip":
                skipped.setdefault(bad.reason, []).append(what)
                continue
            raise DataError(f"{what} is not a readable image: {bad}; {CORRUPT_FIX}.") from bad
        paths.append(ref)
        labels.append(label)
        sizes.append(probe.hw)
        formats.append(probe.format)
        counts["rotated"] += probe.rotated
        counts["deep"] += probe.mode in DEEP_MODES
        counts["animated"] += probe.animated
        grayscale = grayscale and probe.mode in GRAYSCALE_MODES
    return _Scan(paths, labels, sizes, grayscale, skipped, formats, **counts)


def scan_summary(scans: Sequence[_Scan]) -> dict[str, str]:
    """What the load-time check of `scans` tells the user, as `DataBundle.extra` entries (only non-empty).

    "skipped": every file left out, counted by reason with the first few per reason; "exif_rotated",
    "high_bit_depth", "animated": how many images needed that treatment to decode right.
    """
    by_reason: dict[str, list[str]] = {}
    for scan in scans:
        for reason, files in scan.skipped.items():
            by_reason.setdefault(reason, []).extend(files)
    out: dict[str, str] = {}
    if by_reason:
        total = sum(len(v) for v in by_reason.values())
        parts = [f"{len(v)} {reason}, e.g. {v[:SHOWN_PER_REASON]}" for reason, v in sorted(by_reason.items())]
        out["skipped"] = f"{total} unreadable file(s) left out: " + "; ".join(parts)
    notes = {
        "exif_rotated": (sum(s.rotated for s in scans), "image(s) turned upright by their EXIF orientation"),
        "high_bit_depth": (sum(s.deep for s in scans), "16-bit/32-bit/float image(s) scaled to 8 bits"),
        "animated": (sum(s.animated for s in scans), "animated image(s): first frame used"),
    }
    out.update({key: f"{n} {text}" for key, (n, text) in notes.items() if n})
    return out


def warn_summary(source: Any, summary: dict[str, str]) -> None:
    """Say what `scan_summary` found (a UserWarning, printed where the command runs)."""
    if "skipped" in summary:
        warnings.warn(f"{source}: {summary['skipped']} (on_bad_sample=skip).", UserWarning, stacklevel=3)
    notes = [v for k, v in summary.items() if k != "skipped"]
    if notes:
        warnings.warn(f"{source}: {'; '.join(notes)}.", UserWarning, stacklevel=3)


@dataclass(frozen=True)
class ImageFilesDataset:
    """Image files grouped into given splits (a `LazyDataset`): scanned, not yet decoded."""

    source: Path
    class_names: list[str]
    splits: dict[str, list[tuple[str, int]]]
    """"train" and optional "val"/"test": (path, label) in a fixed (sorted) order."""
    image_size: int | None = None
    channels: Channels = "auto"
    on_bad_sample: OnBadSample = "error"
    extra: dict[str, str] = field(default_factory=dict)

    def scans(self) -> dict[str, _Scan]:
        """Every split's files opened and decoded once (the load-time check); bad ones per on_bad_sample."""
        return {k: _scan(v, self.on_bad_sample) for k, v in self.splits.items()}

    def make_split(
        self,
        refs: list[Any],
        labels: torch.Tensor,
        mode: str,
        size: tuple[int, int] | None,
        shape: tuple[int, ...],
        stats: tuple[tuple[float, ...], tuple[float, ...]],
    ) -> ImageFolderSplit:
        """The split over sample references `refs` (here: file paths)."""
        return ImageFolderSplit(refs, labels, mode, size, shape, *stats)

    def known_stats(
        self, mode: str, size_hw: tuple[int, int]
    ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Mean/std of the whole train split read as `mode` at `size_hw`, when known without a pass."""
        del mode, size_hw
        return None

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle:
        scans = self.scans()
        summary = scan_summary(list(scans.values()))
        warn_summary(self.source, summary)
        extra = {**self.extra, **summary}
        class_names = list(self.class_names)
        if self.on_bad_sample == "skip":
            listed = {label for _, label in self.splits["train"]}
            scans, class_names, emptied = _drop_classes_without_images(scans, class_names, listed)
            if emptied:
                warnings.warn(
                    f"{self.source}: class(es) {emptied} have no readable training image left "
                    "(on_bad_sample=skip): the class is dropped, with its val/test images.",
                    UserWarning,
                    stacklevel=2,
                )
                extra["unreadable_classes"] = f"left out (no readable training image): {emptied}"
        train = scans["train"]
        if not train.paths:
            raise DataError(f"dataset {name!r}: no readable training images under {self.source}.")
        y_all = torch.tensor(train.labels, dtype=torch.int64)
        if "test" in scans:
            test_paths, y_test_all = (
                scans["test"].paths,
                torch.tensor(scans["test"].labels, dtype=torch.int64),
            )
            train_rows = torch.arange(len(y_all))
        else:
            if len(y_all) < 2 or round(len(y_all) * TEST_FRACTION) < 1:
                raise DataError(
                    f"{self.source}: only {len(y_all)} image(s) and no test split; add images or a test/ folder."
                )
            taken, rest = stratified_take(y_all.numpy(), round(len(y_all) * TEST_FRACTION), TEST_SEED)
            test_paths = [train.paths[i] for i in taken]
            y_test_all = y_all[torch.from_numpy(taken)]
            train_rows = torch.from_numpy(np.sort(rest))
            extra["test_split"] = (
                f"carved: {len(taken)} of {len(y_all)} images ({TEST_FRACTION:.0%}, stratified, seed "
                f"{TEST_SEED}) because {self.source} has no test split"
            )
            warnings.warn(
                f"{self.source}: no test split; a stratified {TEST_FRACTION:.0%} of the images is the test split.",
                UserWarning,
                stacklevel=2,
            )
        train_paths = [train.paths[int(i)] for i in train_rows]
        y_train = y_all[train_rows]
        given_val = "val" in scans
        ti, vi, tei = select_samples(
            y_train, y_test_all, val_fraction=0.0 if given_val else val_fraction, seed=seed, limit=limit
        )
        if given_val:
            val_paths = scans["val"].paths
            y_val = torch.tensor(scans["val"].labels, dtype=torch.int64)
            vi_given = torch.arange(len(val_paths))
            if limit is not None and max(1, limit // 5) < len(val_paths):
                vi_given = torch.from_numpy(stratified_take(y_val.numpy(), max(1, limit // 5), seed)[0])
        sizes = {s for scan in scans.values() for s in scan.sizes}
        if self.image_size is not None:
            size: tuple[int, int] | None = (self.image_size, self.image_size)
            shape_hw: tuple[int, int] = (self.image_size, self.image_size)
        elif len(sizes) == 1:
            size, shape_hw = None, next(iter(sizes))
        else:
            raise DataError(
                f"{self.source}: images have {len(sizes)} different sizes (e.g. {sorted(sizes)[:3]} as HxW); "
                "set data.image_size=N to resize and center-crop them all to N x N."
            )
        if self.channels == "auto":
            mode = "L" if all(s.grayscale for s in scans.values()) else "RGB"
        else:
            mode = self.channels
        shape: tuple[int, ...] = (1 if mode == "L" else 3, *shape_hw)
        ones = tuple([0.0] * shape[0]), tuple([1.0] * shape[0])

        def split(
            paths: Sequence[Any], labels: torch.Tensor, rows: torch.Tensor, stats: Any
        ) -> ImageFolderSplit:
            return self.make_split([paths[int(i)] for i in rows], labels[rows], mode, size, shape, stats)

        known = self.known_stats(mode, shape_hw) if len(ti) == len(train_paths) else None
        if known is None:
            raw_train = split(train_paths, y_train, ti, ones)
            chunks = (raw_train.raw(b, e) for b, e in batch_ranges(len(raw_train), STATS_CHUNK))
            known = channel_stats(chunks)
        mean, std = stats = known
        if given_val:
            val = split(val_paths, y_val, vi_given, stats)
        else:
            val = split(train_paths, y_train, vi, stats)
        bundle = DataBundle(
            name=name,
            train=split(train_paths, y_train, ti, stats),
            val=val,
            test=split(test_paths, y_test_all, tei, stats),
            class_names=class_names,
            mean=mean,
            std=std,
            source=str(self.source),
            extra=extra,
            # Resolved, so a later command on the same folder decodes exactly these samples.
            options={
                "image_size": shape_hw[0] if shape_hw[0] == shape_hw[1] else None,
                "channels": mode,
                "on_bad_sample": self.on_bad_sample,
            },
        )
        validate_bundle(bundle)
        return bundle


def _drop_classes_without_images(
    scans: dict[str, _Scan], names: list[str], listed: set[int]
) -> tuple[dict[str, _Scan], list[str], list[str]]:
    """Leave out the classes whose every training file was skipped, as an empty class folder is.

    Without it the model would get an output for a class it never sees, and the recorded classes would
    name it. Only classes with training files (`listed`) before the scan are dropped. Returns the scans
    (labels renumbered, the dropped classes' val/test images left out), the kept class names and the
    dropped ones.
    """
    gone = listed - set(scans["train"].labels)
    kept = [i for i in range(len(names)) if i not in gone]
    if len(kept) == len(names):
        return scans, names, []
    new_id = {old: new for new, old in enumerate(kept)}

    def relabel(scan: _Scan) -> _Scan:
        rows = [j for j, label in enumerate(scan.labels) if label in new_id]
        return replace(
            scan,
            paths=[scan.paths[j] for j in rows],
            labels=[new_id[scan.labels[j]] for j in rows],
            sizes=[scan.sizes[j] for j in rows],
            formats=[scan.formats[j] for j in rows] if scan.formats else [],
        )

    dropped = [names[i] for i in sorted(gone)]
    return {k: relabel(s) for k, s in scans.items()}, [names[i] for i in kept], dropped


def _ignored(parts: Sequence[str]) -> bool:
    """Hidden (.DS_Store, ._x AppleDouble, .git/...) and system (Thumbs.db) files: never samples."""
    return any(part.startswith(".") for part in parts) or parts[-1] in SYSTEM_FILES


def _image_files(folder: Path) -> list[str]:
    """Every file under `folder` but hidden/system ones: the scan decides by content what is an image."""
    files = [p for p in folder.rglob("*") if not _ignored(p.relative_to(folder).parts) and p.is_file()]
    return sorted(str(p) for p in files)


def _class_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError as exc:
        raise DataError(f"cannot list {folder} ({exc}); make it readable (chmod a+rx).") from exc


@dataclass(frozen=True)
class _Classes:
    names: list[str]
    entries: list[tuple[str, int]]
    dropped: list[str]
    """Class folders left out (on_bad_sample="skip") because they hold no files."""


def _read_classes(folder: Path, class_names: list[str] | None, on_bad_sample: OnBadSample) -> _Classes:
    """The classes and files of `folder`/<class>/...; `class_names`: the train split's (val/test folders).

    An empty class folder is refused, or with on_bad_sample="skip" left out with a warning: a train
    class folder drops the class (later class indices shift down, as recorded in class_names), and a
    val/test folder of a class dropped from train is left out too.
    """
    dirs = _class_dirs(folder)
    if not dirs:
        raise DataError(
            f"{folder} has no class folders; lay images out as {folder}/<class>/<image>.png "
            f"(or {folder}/train/<class>/... and {folder}/test/<class>/...)."
        )
    files = {d.name: _image_files(d) for d in dirs}
    empty = [d for d in dirs if not files[d.name]]
    if empty and on_bad_sample != "skip":
        raise DataError(
            f"class folder {empty[0]} holds no image files; add images or remove it, or set "
            "data.on_bad_sample=skip to leave empty class folders out."
        )
    for d in empty:
        warnings.warn(
            f"class folder {d} holds no image files: left out (on_bad_sample=skip)"
            + ("; the class is dropped." if class_names is None else "."),
            UserWarning,
            stacklevel=3,
        )
    names = class_names if class_names is not None else [d.name for d in dirs if files[d.name]]
    if not names:
        raise DataError(f"every class folder under {folder} is empty; add images.")
    entries: list[tuple[str, int]] = []
    for d in dirs:
        if not files[d.name]:
            continue
        if d.name not in names:
            raise DataError(
                f"{d} is a class folder, but {d.name!r} is not a class of the train split {names}; "
                "rename or remove it, or add the class to train/."
            )
        entries.extend((f, names.index(d.name)) for f in files[d.name])
    return _Classes(names, entries, [d.name for d in empty])


def _options(image_size: int | None, channels: str, on_bad_sample: str) -> dict[str, Any]:
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}.")
    if channels not in ("auto", "L", "RGB"):
        raise DataError(f"channels must be auto, L or RGB, got {channels!r}.")
    if on_bad_sample not in ("error", "skip"):
        raise DataError(f"on_bad_sample must be error or skip, got {on_bad_sample!r}.")
    return {"image_size": image_size, "channels": channels, "on_bad_sample": on_bad_sample}


@DATASETS.register("imagefolder")
def read_imagefolder(
    root: Path | None = None,
    *,
    image_size: int | None = None,
    channels: Channels = "auto",
    on_bad_sample: OnBadSample = "error",
) -> ImageFilesDataset:
    """Find the images of an image folder (see the module docstring); they are decoded by `build_bundle`.

    Args:
        root: the folder (required).
        image_size: resize + center-crop every image to this square side; None: the images' own size.
        channels: "auto", "L" or "RGB".
        on_bad_sample: "error" or "skip" (corrupt/truncated images are left out and counted).

    Raises:
        DataError: when the folder is missing, has no class folders, an empty class folder, or a
            val/test class that train lacks.
    """
    options = _options(image_size, channels, on_bad_sample)
    if root is None:
        raise DataError("dataset 'imagefolder' needs the folder: pass --data-root DIR (DIR/<class>/<image>).")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; pass --data-root DIR.")
    if (root / "train").is_dir() and any((root / s).is_dir() for s in ("val", "test")):
        train = _read_classes(root / "train", None, on_bad_sample)
        names, dropped, splits = train.names, list(train.dropped), {"train": train.entries}
        for s in ("val", "test"):
            if (root / s).is_dir():
                given = _read_classes(root / s, names + train.dropped, on_bad_sample)
                # A class dropped from train has no output in the model: its val/test images go too.
                left_out = [f for f, i in given.entries if i >= len(names)]
                if left_out:
                    warnings.warn(
                        f"{root / s}: {len(left_out)} image(s) of dropped class(es) {train.dropped} "
                        "left out.",
                        UserWarning,
                        stacklevel=2,
                    )
                splits[s] = [(f, i) for f, i in given.entries if i < len(names)]
    else:
        classes = _read_classes(root, None, on_bad_sample)
        names, dropped, splits = classes.names, classes.dropped, {"train": classes.entries}
    extra = {"empty_classes": f"left out (empty folders): {dropped}"} if dropped else {}
    return ImageFilesDataset(source=root, class_names=names, splits=splits, extra=extra, **options)


def _manifest_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError as exc:
        raise DataError(f"cannot read {path} ({exc}); make it readable (chmod a+r).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read manifest {path} as UTF-8 text ({exc}).") from exc
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n} is not JSON ({exc}); write one object per line.") from exc
            if not isinstance(row, dict):
                raise DataError(f'{path} line {n} is not an object; write {{"path": ..., "label": ...}}.')
            rows.append(row)
        return rows
    if path.suffix.lower() != ".csv":
        raise DataError(f"manifest {path} must be a .csv or .jsonl file (columns path, label).")
    try:
        reader = csv.DictReader(text.splitlines())
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"cannot parse {path} as CSV ({exc}).") from exc
    if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
        raise DataError(f"{path} needs a header with columns path,label (found {reader.fieldnames}).")
    return rows


def _is_index(label: Any) -> bool:
    if isinstance(label, bool):
        return False
    if isinstance(label, int):
        return label >= 0
    return isinstance(label, str) and label.isdecimal()


def _class_names(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as a JSON list of class names ({exc}).") from exc
    if not isinstance(names, list) or not names or len({str(c) for c in names}) != len(names):
        raise DataError(f'{path} must be a JSON list of distinct class names, e.g. ["cat", "dog"].')
    return [str(c) for c in names]


@DATASETS.register("manifest")
def read_manifest(
    root: Path | None = None,
    *,
    image_size: int | None = None,
    channels: Channels = "auto",
    on_bad_sample: OnBadSample = "error",
) -> ImageFilesDataset:
    """Read a CSV/JSONL manifest of images (see the module docstring).

    Args:
        root: the manifest file (required); its `path`s are relative to its folder.
        image_size, channels, on_bad_sample: as for `read_imagefolder`.

    Raises:
        DataError: when the manifest is missing or malformed, a row lacks a path or label, a path
            points outside the manifest's folder or to no file, or a label is not a class.
    """
    options = _options(image_size, channels, on_bad_sample)
    if root is None:
        raise DataError("dataset 'manifest' needs the file: pass --data-root FILE.csv (columns path, label).")
    path = Path(root)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; pass --data-root FILE.csv or FILE.jsonl.")
    rows = _manifest_rows(path)
    if not rows:
        raise DataError(f"manifest {path} lists no images.")
    base = path.parent.resolve()
    names_file = path.parent / "class_names.json"
    given = _class_names(names_file) if names_file.is_file() else None
    labels: list[Any] = [row.get("label") for row in rows]
    for n, row in enumerate(rows, 1):
        if row.get("path") in (None, "") or row.get("label") in (None, ""):
            raise DataError(f"{path} row {n} lacks a path or a label: {row}.")
    as_index = given is None and all(_is_index(label) for label in labels)
    if given is not None:
        names = given
    elif as_index:
        names = [str(i) for i in range(max(int(label) for label in labels) + 1)]
    else:
        names = sorted({str(label) for label in labels})
    splits: dict[str, list[tuple[str, int]]] = {}
    for n, row in enumerate(rows, 1):
        label = row["label"]
        if as_index or (given is not None and _is_index(label) and str(label) not in names):
            index = int(label)
            if index >= len(names):
                raise DataError(f"{path} row {n}: label {label} is outside the {len(names)} classes {names}.")
        elif str(label) in names:
            index = names.index(str(label))
        else:
            raise DataError(
                f"{path} row {n}: label {label!r} is not a class of {names_file} {names}; fix the row or the list."
            )
        try:
            target = (base / str(row["path"])).resolve()
        except (OSError, ValueError) as exc:  # e.g. an embedded NUL byte, a symlink loop
            raise DataError(f"{path} row {n}: {row['path']!r} is not a usable path ({exc}).") from exc
        if not target.is_relative_to(base):
            raise DataError(
                f"{path} row {n}: {row['path']!r} points outside the manifest's folder {base}; "
                "keep images under it and use relative paths."
            )
        if not target.is_file():
            raise DataError(f"{path} row {n}: {row['path']!r} is not a file under {base}.")
        split = str(row.get("split") or "train")
        if split not in SPLIT_DIRS:
            raise DataError(f"{path} row {n}: split {split!r} is not one of {list(SPLIT_DIRS)}.")
        splits.setdefault(split, []).append((str(target), index))
    if "train" not in splits:
        raise DataError(
            f"manifest {path} has no train rows; mark some rows split=train (or leave split out)."
        )
    return ImageFilesDataset(source=path, class_names=names, splits=splits, **options)
