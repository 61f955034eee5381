"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), raw or gzip-compressed.

The header is parsed by hand and the declared size is checked against the bytes actually present
before any array is allocated, so a corrupt or hostile header cannot make us allocate gigabytes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from distil.data.raw import RawDataset
from distil.data.registry import DATASETS
from distil.errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
_CHUNK = 1 << 20

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
_HINT = {
    "fashion-mnist": "for fashion-mnist: `apt-get install dataset-fashion-mnist` or pass --data-root DIR",
    "mnist": "for mnist: pass --data-root DIR",
    "kmnist": "for kmnist: pass --data-root DIR",
}


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _corrupt(path: Path, why: str) -> DataError:
    return DataError(f"{path} is corrupt or truncated ({why}); re-download or reinstall it.")


def _read_exact(stream: _Readable, size: int, path: Path) -> bytearray:
    """Read exactly `size` bytes in chunks, failing as soon as the stream holds more or fewer.

    Chunked reads keep memory bounded by what the stream really holds, not by what a header claims.
    """
    data = bytearray()  # writable, so numpy/torch views need no copy
    while len(data) <= size:
        chunk = stream.read(min(_CHUNK, size + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    got = len(data)
    if got != size:
        more = "more than" if got > size else f"only {got} of"
        raise _corrupt(path, f"header declares {size} data bytes but the file holds {more} them")
    return data


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking magic, dims and size before allocating.

    Args:
        path: the file; a `.gz` suffix means gzip-compressed.
        magic: the expected magic number (`IMAGES_MAGIC` or `LABELS_MAGIC`).

    Returns:
        A uint8 array shaped by the header's dims.

    Raises:
        DataError: on a wrong magic, zero dims, a size mismatch, or a truncated/corrupt file.
    """
    ndim = magic & 0xFF
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            head = stream.read(4)
            if len(head) < 4:
                raise _corrupt(path, f"only {len(head)} header bytes")
            (found,) = struct.unpack(">I", head)
            if found != magic:
                raise DataError(
                    f"{path} has magic 0x{found:08x}, expected 0x{magic:08x}; it is not an IDX "
                    f"{'image' if magic == IMAGES_MAGIC else 'label'} file (were files swapped or renamed?)."
                )
            raw_dims = stream.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise _corrupt(path, "header ends before its dimensions")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            # No items, or one item larger than 2 GiB, is no dataset: refuse before numpy sees the shape.
            if min(dims) == 0 or math.prod(dims[1:]) > 1 << 31:
                raise _corrupt(path, f"header declares dims {dims}")
            size = math.prod(dims)
            if not isinstance(stream, gzip.GzipFile):
                # Raw files: compare with the file length before reading anything.
                present = path.stat().st_size - 4 - len(raw_dims)
                if present != size:
                    raise _corrupt(path, f"header declares {size} data bytes but the file holds {present}")
            data = _read_exact(stream, size, path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _corrupt(path, str(exc) or type(exc).__name__) from exc
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find(root: Path, base: str) -> Path:
    for candidate in (root / base, root / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    found = sorted(p.name for p in root.iterdir())
    raise DataError(
        f"{root} lacks {base} (or {base}.gz); found: {', '.join(found[:20]) or 'nothing'}. "
        f"The directory needs {', '.join(FILES)} (each optionally .gz)."
    )


def read_idx_dir(root: Path, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read the four IDX files of a directory as (x_train, y_train, x_test, y_test) tensors.

    Images are float32 (N, 1, H, W) in [0, 1], labels int64.

    Raises:
        DataError: when the directory or a file is missing, corrupt, or the files disagree.
    """
    if not root.is_dir():
        raise DataError(
            f"dataset directory {root} does not exist; {_HINT.get(name, 'pass --data-root DIR')} "
            f"containing {', '.join(f + '(.gz)' for f in FILES)}."
        )
    paths = [_find(root, base) for base in FILES]
    out: list[torch.Tensor] = []
    for split in (0, 2):
        images = read_idx(paths[split], IMAGES_MAGIC)
        labels = read_idx(paths[split + 1], LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{paths[split]} holds {images.shape[0]} images but {paths[split + 1]} holds "
                f"{labels.shape[0]} labels; re-download or reinstall the dataset."
            )
        out.append(torch.from_numpy(images).unsqueeze(1).float().div_(255.0))
        out.append(torch.from_numpy(labels.astype(np.int64)))
    return out[0], out[1], out[2], out[3]


def _reader(name: str, class_names: list[str], augment: str, default_root: Path | None) -> None:
    def read(root: Path | None = None) -> RawDataset:
        directory = root if root is not None else default_root
        if directory is None:
            raise DataError(
                f"dataset {name!r} has no default location; pass --data-root DIR containing "
                f"{', '.join(f + '(.gz)' for f in FILES)}."
            )
        x_train, y_train, x_test, y_test = read_idx_dir(Path(directory), name)
        return RawDataset(
            x_train,
            y_train,
            x_test,
            y_test,
            list(class_names),
            augment=augment,
            crop_padding=2,
            source=str(directory),
        )

    read.__doc__ = f"Read {name} from IDX files (default root: {default_root})."
    DATASETS.register(name)(read)


_reader("fashion-mnist", FASHION_CLASSES, "crop_flip", FASHION_MNIST_ROOT)
_reader("mnist", [str(i) for i in range(10)], "crop", None)
_reader("kmnist", KMNIST_CLASSES, "crop", None)
