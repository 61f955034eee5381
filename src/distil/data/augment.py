"""Batched train-time augmentation on normalized tensors: one vectorized op per batch, no per-sample loop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from distil.errors import ConfigError
from distil.registry import unknown_name_message

AUGMENTS = ("none", "crop", "crop_flip")


def zero_fill(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """The normalized value of a 0 pixel per channel, `-mean / std`: what crop padding should add."""
    return tuple(-m / s for m, s in zip(mean, std, strict=True))


def augment_batch(
    x: torch.Tensor,
    kind: str,
    padding: int,
    generator: torch.Generator | None = None,
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """Augment a batch with per-sample random parameters.

    Args:
        x: (B, C, H, W) normalized images.
        kind: "none" (identity), "crop" (random crop of the padded image back to H x W), or
            "crop_flip" (crop, then a horizontal flip of each sample with probability 1/2).
        padding: pixels of padding on each side before cropping; 0 makes the crop the identity.
        generator: source of randomness, for reproducible augmentation.
        fill: per-channel padding value; pass `zero_fill(mean, std)` so padding is a black pixel
            in normalized space. None pads with 0.

    Returns:
        A new (B, C, H, W) tensor (or `x` itself for "none").

    Raises:
        ConfigError: on an unknown kind, negative padding, or a fill of the wrong length.
    """
    if kind not in AUGMENTS:
        raise ConfigError(unknown_name_message("augmentation", kind, AUGMENTS))
    if padding < 0:
        raise ConfigError(f"crop padding must be >= 0, got {padding}.")
    if kind == "none":
        return x
    out = _random_crop(x, padding, generator, fill) if padding > 0 else x
    if kind == "crop_flip":
        flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    return out


def _random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None, fill: Sequence[float] | None
) -> torch.Tensor:
    b, c, h, w = x.shape
    if fill is not None and len(fill) != c:
        raise ConfigError(f"fill has {len(fill)} values but images have {c} channels; pass one per channel.")
    padded = x.new_empty(b, c, h + 2 * padding, w + 2 * padding)
    values = torch.tensor(fill if fill is not None else [0.0] * c, dtype=x.dtype, device=x.device)
    padded.copy_(values.view(1, c, 1, 1).expand_as(padded))
    padded[:, :, padding : padding + h, padding : padding + w] = x
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    rows = (top.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (left.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    # One advanced-indexing gather crops every sample at its own offset.
    return padded[
        torch.arange(b, device=x.device).view(b, 1, 1, 1),
        torch.arange(c, device=x.device).view(1, c, 1, 1),
        rows,
        cols,
    ]


MIXINGS = ("none", "mixup", "cutmix")


def mix_batch(x: torch.Tensor, kind: str, alpha: float, seed: int) -> torch.Tensor:
    """Mix each sample with another of the batch: mixup (Zhang et al. 2018) or cutmix (Yun et al. 2019).

    Function matching (Beyer et al., CVPR 2022) trains the student on such views with the teacher's
    outputs on the very same view as targets, so only teacher-matching terms apply to a mixed batch.

    Args:
        x: (B, C, H, W) images, or (B, F) feature vectors for mixup.
        kind: "none", "mixup" (λ·x + (1-λ)·x[perm]) or "cutmix" (a box of area 1-λ from x[perm]).
        alpha: each sample's λ is drawn from Beta(alpha, alpha).
        seed: all randomness (pairing, λ, boxes) comes from it, so a batch is mixed identically when it
            is produced again (resume).

    Returns:
        A new tensor of x's shape (or `x` itself for "none").

    Raises:
        ConfigError: an unknown kind, or cutmix on data that are not images.
    """
    if kind not in MIXINGS:
        raise ConfigError(unknown_name_message("mixing", kind, MIXINGS))
    if kind == "none" or x.shape[0] < 2:
        return x
    if not x.is_floating_point():
        # Mixing integer inputs (token ids) would round the weights to 0 or 1: a silent shuffle.
        raise ConfigError(
            f"mixing {kind!r} blends pixel or feature values, but the inputs are {x.dtype} (e.g. token ids); "
            "set student_train.mixing: none."
        )
    rng = np.random.default_rng(seed)
    b = x.shape[0]
    perm = torch.from_numpy(rng.permutation(b)).to(x.device)
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=b)).to(device=x.device, dtype=x.dtype)
    other = x[perm]
    if kind == "mixup":
        shape = (b,) + (1,) * (x.dim() - 1)
        return lam.view(shape) * x + (1 - lam.view(shape)) * other
    if x.dim() != 4:
        raise ConfigError(
            f"cutmix cuts boxes out of images (B, C, H, W), but the batch has shape {tuple(x.shape)}; "
            "use mixing: mixup for feature vectors."
        )
    h, w = x.shape[-2:]
    cut = np.sqrt(1.0 - lam.cpu().numpy())
    ch, cw = (cut * h).astype(np.int64), (cut * w).astype(np.int64)
    cy, cx = rng.integers(0, h, size=b), rng.integers(0, w, size=b)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)

    def col(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(x.device).view(b, 1, 1, 1)

    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    box = (rows >= col(y0)) & (rows < col(y1)) & (cols >= col(x0)) & (cols < col(x1))
    return torch.where(box, other, x)
