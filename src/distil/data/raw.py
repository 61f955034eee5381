"""What a reader returns before splitting and normalization, and the array-layout rules readers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from distil.data.sampling import stratified_take
from distil.errors import DataError

if TYPE_CHECKING:
    from distil.data.bundle import DataBundle

TEST_FRACTION = 0.2
"""Share of the samples held out as test by readers whose source has no test split."""
# The carved test split must never move between runs or seeds, so its seed is fixed, not user-supplied.
TEST_SEED = 0


NORMALIZE_MODES = ("auto", "none")
"""`auto`: standardize each channel (images) or each feature (vectors) with training-split statistics;
`none`: keep the values (for a model that normalizes its inputs itself, e.g. CREPE normalizing each
1024-sample audio frame, where per-position statistics would distort every frame)."""


def check_normalize(mode: str | None, what: str) -> str:
    """The normalization mode a reader was given (None: ``auto``).

    Raises:
        DataError: a mode that is not one of `NORMALIZE_MODES`.
    """
    if mode is None:
        return "auto"
    if mode not in NORMALIZE_MODES:
        raise DataError(
            f"data.normalize={mode!r} for {what}; valid: {', '.join(NORMALIZE_MODES)} (none keeps the values, "
            "for a model that normalizes its own inputs)."
        )
    return mode


def normalize_options(mode: str) -> dict[str, str]:
    """The reader options a bundle records for `mode`: none for the default, so other keys stay unchanged."""
    return {} if mode == "auto" else {"normalize": mode}


@dataclass(frozen=True)
class RawDataset:
    """Train/test arrays as read from disk: `x` float32 (N, C, H, W) images in the file's pixel scale, or
    (N, F) feature vectors (tabular data); `y` int64 class indices, or float32 (N,)/(N, D) targets
    (multilabel rows, regression targets: `distil.data.targets`).

    `load_dataset` turns this into a `DataBundle` (limit, validation split, normalization).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    augment: str = "none"
    crop_padding: int = 0
    source: str = ""
    label_fix: str = ""
    """How the user fixes labels outside [0, len(class_names)) with this reader; "" = a fixed class list."""
    extra: dict[str, str] = field(default_factory=dict)
    """Notes about how the data was read (e.g. a carved test split), kept in `DataBundle.describe()`."""
    normalize: str = "auto"
    """One of `NORMALIZE_MODES`: how `load_dataset` normalizes the samples."""


class LazyDataset(Protocol):
    """What a reader returns for data that stays on disk (e.g. `distil.data.npydir.NpyDirDataset`):
    only labels are in memory, and it builds the bundle itself from `registry.select_samples` and
    `registry.channel_stats`, so it selects and normalizes exactly as an in-memory `RawDataset` would."""

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle: ...


def to_nchw_float(array: Any, what: str) -> torch.Tensor:
    """Convert images to float32 (N, C, H, W).

    Layout rule (arrays carry no layout tag, so it is inferred from the shape):
    (N, H, W) gains a channel dim; (N, H, W, C) with C in (1, 3) is transposed to NCHW; any other
    4-d array is taken as NCHW already. uint8 pixels are divided by 255 (to [0, 1]); other dtypes keep their values.

    Args:
        array: numpy array or tensor of images.
        what: name used in error messages (e.g. "x_train in data.npz").

    Raises:
        DataError: when the array is not 3-d or 4-d, or not numeric.
    """
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {arr.dtype}; expected numeric pixels (uint8 or float).")
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{what} has shape {tuple(arr.shape)}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) images, "
            "or (N, F) feature vectors."
        )
    is_uint8 = arr.dtype == np.uint8
    converted = np.ascontiguousarray(arr, dtype=np.float32)
    if converted.strides != _c_strides(converted):
        # numpy calls an array with odd strides on size-1 dims (an added or transposed channel) contiguous
        # and keeps them; conv kernels then pick another (channels-last) algorithm, so the same images
        # would train differently depending on how they were read. One canonical layout for all.
        converted = converted.copy(order="C")
    out = torch.from_numpy(converted)
    # div_(255), as the idx and CIFAR readers do: the same pixels give the same floats from every source.
    return out.div_(255.0) if is_uint8 else out


def _c_strides(arr: np.ndarray) -> tuple[int, ...]:
    strides, step = [], arr.itemsize
    for size in reversed(arr.shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def split_off_test(
    x: torch.Tensor, y: torch.Tensor, fraction: float = TEST_FRACTION, seed: int = TEST_SEED
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out a stratified `fraction` of (x, y) as a test split, the same one every run.

    Returns:
        (x_train, y_train, x_test, y_test).
    """
    test_idx, train_idx = stratified_take(y.numpy(), round(len(y) * fraction), seed)
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return x[tr], y[tr], x[te], y[te]


def to_float_inputs(array: Any, what: str) -> torch.Tensor:
    """Convert samples to float32: (N, F) feature vectors are kept as they are, images go to NCHW.

    Layout rule: a 2-d array is N feature vectors of F values (tabular data; values kept, whatever the
    dtype, since each feature is normalized on its own later). So is a 3-d or 4-d array whose samples
    have a single non-1 dimension, e.g. (N, 1, F) or (N, F, 1, 1): such "images" have no 2-d structure,
    and read as images all F values would share one normalization. Other 3-d and 4-d arrays are images,
    converted by `to_nchw_float`.

    Args:
        array: numpy array or tensor.
        what: name used in error messages.

    Raises:
        DataError: when the array is not 2-, 3- or 4-d, or not numeric.
    """
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.ndim in (3, 4) and sum(d > 1 for d in arr.shape[1:]) <= 1:
        # Explicit width: reshape(-1) is ambiguous for empty arrays (hypothesis found (0, 0, 0)).
        arr = arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:])))
    if arr.ndim != 2:
        return to_nchw_float(arr, what)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {arr.dtype}; expected numeric features (int or float).")
    if arr.shape[1] == 0:
        raise DataError(
            f"{what} has shape {arr.shape}: its samples hold no values; expected (N, F) with F >= 1."
        )
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def to_labels(array: Any, what: str) -> torch.Tensor:
    """Convert class labels to an int64 (N,) tensor.

    Raises:
        DataError: when the labels are not a 1-d integer array.
    """
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(
            f"{what} has shape {tuple(arr.shape)} and dtype {arr.dtype}; expected a 1-d integer array "
            "of class indices."
        )
    return torch.from_numpy(arr.astype(np.int64))


def infer_class_names(y_train: torch.Tensor, y_test: torch.Tensor) -> list[str]:
    """Class names "0".."K-1" where K is one more than the largest label seen."""
    k = max(int(y.max()) + 1 if y.numel() else 0 for y in (y_train, y_test))
    return [str(i) for i in range(k)]
