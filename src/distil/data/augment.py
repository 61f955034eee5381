"""Batched, replayable train-time augmentation on normalized image tensors.

One mechanism serves live training and the teacher's view cache: every random choice of a sample's
augmentation (crop offset, flip, resized-crop box, colour factors, RandAugment ops, the mixing
partner and ratio) is a pure function of ``(seed, sample id, key)``, computed by a counter-based hash
(splitmix64 over the three numbers and a slot), never by a stateful generator. ``key`` is the epoch in
live training and the view number ``v < V`` when the teacher's outputs are cached per view
(:func:`view_of`), so an augmented input can be produced again bit for bit, in any batch, on any rank,
after a resume: the teacher's input when the view was cached is the student's input when it is
replayed (consistent teaching, Beyer et al., CVPR 2022).

:class:`Augmenter` holds the recipe (:class:`AugmentSpec`); ``params(ids, keys)`` draws the
parameters of a batch, ``apply(x, params)`` applies them deterministically (one vectorized op per
batch and operation, no per-sample loop), ``__call__`` does both and mixes. Crop, flip and
random-resized crop are plain torch; colour jitter's hue, TrivialAugment and RandAugment use kornia's
functional colour ops (the ``augment`` extra).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distil.errors import ConfigError
from distil.registry import unknown_name_message

OPS = ("crop", "flip", "resized_crop", "jitter", "trivial", "randaugment")
"""The operations an augmentation is composed of, joined with "+" (e.g. "resized_crop+flip+jitter")."""
ALIASES = {"none": (), "crop": ("crop",), "crop_flip": ("crop", "flip")}
AUGMENTS = tuple(ALIASES)  # the named augmentations datasets declare as their standard one
MIXINGS = ("none", "mixup", "cutmix")
KORNIA_HINT = "pip install 'distil[augment]'"

# The RandAugment operation space (Cubuk et al. 2020; torchvision's magnitudes at 31 bins).
AUTO_OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
_MAX_BIN = 30


def is_kornia_available() -> bool:
    """Whether kornia (the ``augment`` extra) can be imported."""
    return importlib.util.find_spec("kornia") is not None


def zero_fill(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """The normalized value of a 0 pixel per channel, `-mean / std`: what crop padding should add."""
    return tuple(-m / s for m, s in zip(mean, std, strict=True))


def parse_ops(name: str) -> tuple[str, ...]:
    """The operations of an augmentation name: an alias ("none", "crop", "crop_flip") or ops joined by "+".

    Raises:
        ConfigError: an unknown operation, or one named twice.
    """
    if name in ALIASES:
        return ALIASES[name]
    ops = tuple(part.strip() for part in name.split("+"))
    for op in ops:
        if op not in OPS:
            raise ConfigError(unknown_name_message("augmentation operation", op, OPS + AUGMENTS))
    if len(set(ops)) != len(ops):
        raise ConfigError(f"augmentation {name!r} names an operation twice; name each once.")
    return ops


@dataclass(frozen=True)
class AugmentSpec:
    """What to do to each training sample; with the seed it determines every augmented pixel.

    Attributes:
        ops: operations in the order applied (`parse_ops`).
        padding: crop: pixels of padding on each side before the random crop back to H x W.
        scale: resized_crop: range of the crop's area as a fraction of the image's.
        ratio: resized_crop: range of the crop's aspect ratio (width / height), sampled log-uniformly.
        brightness, contrast, saturation: jitter: factors drawn from [1 - b, 1 + b] (0 = off).
        hue: jitter: hue shift drawn from [-hue, hue] turns (at most 0.5; needs kornia and 3 channels).
        randaugment_ops: randaugment: operations per sample (N).
        randaugment_magnitude: randaugment: magnitude in [0, 30] (M); trivial draws one per sample.
        mixing: "none", "mixup" or "cutmix": each sample is mixed with a partner of the split.
        mixing_alpha: the mixing ratio is drawn from Beta(alpha, alpha).
    """

    ops: tuple[str, ...] = ()
    padding: int = 0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    mixing: str = "none"
    mixing_alpha: float = 1.0

    def __post_init__(self) -> None:
        for op in self.ops:
            if op not in OPS:
                raise ConfigError(unknown_name_message("augmentation operation", op, OPS))
        if self.mixing not in MIXINGS:
            raise ConfigError(unknown_name_message("mixing", self.mixing, MIXINGS))
        if self.padding < 0:
            raise ConfigError(f"crop padding must be >= 0, got {self.padding}.")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"resized_crop scale must satisfy 0 < min <= max <= 1, got {self.scale}.")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"resized_crop ratio must satisfy 0 < min <= max, got {self.ratio}.")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"jitter {name} must be in [0, 1), got {getattr(self, name)}.")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"jitter hue must be in [0, 0.5] turns, got {self.hue}.")
        if not 0 <= self.randaugment_magnitude <= _MAX_BIN or self.randaugment_ops < 1:
            raise ConfigError(
                f"randaugment needs ops >= 1 and magnitude in [0, {_MAX_BIN}], got "
                f"{self.randaugment_ops} and {self.randaugment_magnitude}."
            )
        if self.mixing_alpha <= 0:
            raise ConfigError(f"mixing_alpha must be > 0, got {self.mixing_alpha}.")
        if self.needs_kornia and not is_kornia_available():
            raise ConfigError(
                f"augmentation {'+'.join(self.ops)!r} uses kornia's colour operations (TrivialAugment, "
                f"RandAugment, hue jitter), which is not installed. Fix: {KORNIA_HINT}, or drop those options."
            )

    @property
    def needs_kornia(self) -> bool:
        return bool({"trivial", "randaugment"} & set(self.ops)) or ("jitter" in self.ops and self.hue > 0)

    @property
    def is_random(self) -> bool:
        """Whether inputs change from draw to draw (a crop with 0 padding, say, does not)."""
        effective = [op for op in self.ops if not (op == "crop" and self.padding == 0)]
        return bool(effective) or self.mixing != "none"

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (part of the views cache's key)."""
        d = asdict(self)
        d["ops"] = list(self.ops)
        return d


def view_of(seed: int, ids: torch.Tensor, epoch: int, views: int) -> torch.Tensor:
    """The view `v(epoch, id)` a sample uses with `views` cached views: (epoch + offset(id)) mod V.

    Each sample starts at its own offset and cycles through all V of its views in any V consecutive
    epochs, so every cached view is used and one epoch mixes all of them.
    """
    offset = (_uniforms(seed, ids, torch.full_like(ids, -1), 1, stream=7)[:, 0] * views).long()
    return (offset + epoch) % views


_M1, _M2, _GOLDEN = (
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
    np.uint64(0x9E3779B97F4A7C15),
)


def _mix64(z: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer: a bijection of uint64 whose outputs look independent for nearby inputs.
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _uniforms(seed: int, ids: torch.Tensor, keys: torch.Tensor, slots: int, stream: int = 0) -> torch.Tensor:
    """(B, slots) float64 in [0, 1): a pure function of (seed, stream, id, key, slot) per entry."""
    with np.errstate(over="ignore"):
        base = _mix64(np.array([(seed & 0xFFFFFFFFFFFF) * 16 + stream], dtype=np.uint64) + _GOLDEN)
        i = ids.detach().cpu().numpy().astype(np.int64).view(np.uint64)
        k = keys.detach().cpu().numpy().astype(np.int64).view(np.uint64)
        h = _mix64(_mix64(base ^ (i * _GOLDEN)) ^ (k + _GOLDEN))
        s = np.arange(1, slots + 1, dtype=np.uint64) * _GOLDEN
        z = _mix64(h[:, None] + s[None, :])
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) / float(1 << 53))


class Augmenter:
    """Draws and applies the augmentation of `spec`; the same (seed, id, key) always gives the same input.

    Args:
        spec: the operations and their options.
        seed: base seed of every draw.
        mean, std: the per-channel normalization of the inputs (colour ops work on pixel values and the
            padding of a crop is a black pixel).
        num_samples: the split's size: mixing partners are drawn from the whole split.
    """

    def __init__(
        self,
        spec: AugmentSpec,
        *,
        seed: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_samples: int = 0,
    ) -> None:
        if spec.mixing != "none" and num_samples < 1:
            raise ConfigError("mixing draws partners from the split: pass num_samples >= 1.")
        self.spec, self.seed, self.num_samples = spec, seed, num_samples
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.fill = zero_fill(mean, std) if mean is not None and std is not None else None

    def describe(self) -> dict[str, Any]:
        """Everything that determines the augmented inputs besides the images: part of a cache key."""
        return {"spec": self.spec.describe(), "seed": self.seed, "mean": self.mean, "std": self.std}

    @property
    def is_random(self) -> bool:
        return self.spec.is_random

    # -- parameters -----------------------------------------------------------------------------------

    def params(
        self, ids: torch.Tensor, keys: torch.Tensor | int, shape: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """The parameters of samples `ids` at `keys` (epoch or view; an int for all) for images of `shape`.

        Returns:
            A dict of (B, ...) tensors, the whole randomness of the batch (`apply` is deterministic);
            with mixing also "partner" (ids) and "lam", and the partner's own parameters under "partner.".
        """
        ids = torch.as_tensor(ids, dtype=torch.int64).cpu()
        keys = torch.full_like(ids, keys) if isinstance(keys, int) else torch.as_tensor(keys).long().cpu()
        out = self._draw(ids, keys, shape, stream=0)
        if self.spec.mixing != "none":
            u = _uniforms(self.seed, ids, keys, 3, stream=2)
            out["partner"] = (u[:, 0] * self.num_samples).long().clamp_(max=self.num_samples - 1)
            out["lam"] = _beta(self.seed, ids, keys, self.spec.mixing_alpha)
            out["box_center"] = u[:, 1:3]
            out.update({f"partner.{k}": v for k, v in self._draw(ids, keys, shape, stream=3).items()})
        return out

    def _draw(
        self, ids: torch.Tensor, keys: torch.Tensor, shape: Sequence[int], stream: int
    ) -> dict[str, torch.Tensor]:
        spec, h, w = self.spec, int(shape[-2]), int(shape[-1])
        n_auto = spec.randaugment_ops if "randaugment" in spec.ops else 1
        u = _uniforms(self.seed, ids, keys, 8 + 3 * n_auto, stream=stream)
        out: dict[str, torch.Tensor] = {}
        if "crop" in spec.ops:
            out["crop"] = (u[:, 0:2] * (2 * spec.padding + 1)).long().clamp_(max=2 * spec.padding)
        if "flip" in spec.ops:
            out["flip"] = u[:, 2] < 0.5
        if "resized_crop" in spec.ops:
            out["box"] = _resized_crop_boxes(u[:, 3], u[:, 4], u[:, 0], u[:, 1], h, w, spec.scale, spec.ratio)
        if "jitter" in spec.ops:
            amounts = torch.tensor([spec.brightness, spec.contrast, spec.saturation], dtype=torch.float64)
            factors = 1 + (2 * u[:, 5:8] - 1) * amounts
            hue = (2 * u[:, 4] - 1) * spec.hue
            out["jitter"] = torch.cat([factors, hue[:, None]], dim=1).float()
        if "trivial" in spec.ops or "randaugment" in spec.ops:
            a = u[:, 8:].view(-1, n_auto, 3)
            out["auto_op"] = (a[..., 0] * len(AUTO_OPS)).long().clamp_(max=len(AUTO_OPS) - 1)
            if "trivial" in spec.ops:
                level = (a[..., 1] * (_MAX_BIN + 1)).floor().clamp_(max=_MAX_BIN) / _MAX_BIN
            else:
                level = torch.full_like(a[..., 1], spec.randaugment_magnitude / _MAX_BIN)
            out["auto_level"] = torch.where(a[..., 2] < 0.5, -level, level).float()
        return out

    # -- application ----------------------------------------------------------------------------------

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
        """Augment (B, C, H, W) normalized images with `params` (from `params`); deterministic.

        Args:
            x: the images.
            params: their parameters.
            prefix: "partner." applies the mixing partner's parameters.
        """
        spec = self.spec
        if not spec.ops:
            return x
        if x.dim() != 4:
            raise ConfigError(
                f"augmentation {'+'.join(spec.ops)!r} needs images (B, C, H, W), but the batch has shape "
                f"{tuple(x.shape)}; set augment: none."
            )
        p = {k[len(prefix) :]: v.to(x.device) for k, v in params.items() if k.startswith(prefix)}
        pixel_space = False
        for op in spec.ops:
            if op in ("jitter", "trivial", "randaugment") and not pixel_space:
                x, pixel_space = self._to_pixels(x), True
            if op == "crop" and spec.padding > 0:
                x = _crop(x, spec.padding, p["crop"], self._fill(x, pixel_space))
            elif op == "flip":
                x = torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
            elif op == "resized_crop":
                x = _resized_crop(x, p["box"])
            elif op == "jitter":
                x = _jitter(x, p["jitter"], spec)
            elif op in ("trivial", "randaugment"):
                for layer in range(p["auto_op"].shape[1]):
                    x = _auto_layer(x, p["auto_op"][:, layer], p["auto_level"][:, layer])
        return self._from_pixels(x) if pixel_space else x

    def __call__(
        self,
        x: torch.Tensor,
        ids: torch.Tensor,
        keys: torch.Tensor | int,
        fetch: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The augmented (and mixed) batch of samples `ids` at `keys`.

        Args:
            x: the samples' normalized inputs.
            ids: their ids in the split.
            keys: the epoch (live training) or each sample's view (views cache).
            fetch: inputs of given sample ids (the mixing partners); needed with mixing.
        """
        if not self.spec.is_random:
            return x
        params = self.params(ids, keys, x.shape)
        out = self.apply(x, params)
        if self.spec.mixing == "none":
            return out
        if not x.is_floating_point():
            # Mixing integer inputs (token ids) would round the weights to 0 or 1: a silent shuffle.
            raise ConfigError(
                f"mixing {self.spec.mixing!r} blends pixel or feature values, but the inputs are {x.dtype} "
                "(e.g. token ids); set student_train.mixing: none."
            )
        if fetch is None:
            raise ConfigError("mixing needs the partners' inputs: pass fetch(ids) -> inputs.")
        other = self.apply(fetch(params["partner"]).to(x.device, x.dtype), params, prefix="partner.")
        return _mix(out, other, params, self.spec.mixing)

    def _fill(self, x: torch.Tensor, pixel_space: bool) -> Sequence[float] | None:
        return [0.0] * x.shape[1] if pixel_space else self.fill

    def _norm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise ConfigError("colour augmentation needs the data's mean and std (pixel values); pass them.")
        c = x.shape[1]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        return mean, std

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._norm(x)
        return (x * std + mean).clamp(0, 1)

    def _from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._norm(x)
        return (x - mean) / std


def _beta(seed: int, ids: torch.Tensor, keys: torch.Tensor, alpha: float) -> torch.Tensor:
    """Beta(alpha, alpha) per sample from a generator keyed on (seed, id, key): a pure function too."""
    if alpha == 1.0:
        return _uniforms(seed, ids, keys, 1, stream=4)[:, 0]
    lam = [
        np.random.default_rng([seed & 0xFFFFFFFF, 4, int(i) & 0xFFFFFFFF, int(k) & 0xFFFFFFFF]).beta(
            alpha, alpha
        )
        for i, k in zip(ids.tolist(), keys.tolist(), strict=True)
    ]
    return torch.tensor(lam, dtype=torch.float64)


def _crop(x: torch.Tensor, padding: int, offsets: torch.Tensor, fill: Sequence[float] | None) -> torch.Tensor:
    b, c, h, w = x.shape
    if fill is not None and len(fill) != c:
        raise ConfigError(f"fill has {len(fill)} values but images have {c} channels; pass one per channel.")
    padded = x.new_empty(b, c, h + 2 * padding, w + 2 * padding)
    values = torch.tensor(fill if fill is not None else [0.0] * c, dtype=x.dtype, device=x.device)
    padded.copy_(values.view(1, c, 1, 1).expand_as(padded))
    padded[:, :, padding : padding + h, padding : padding + w] = x
    top, left = offsets[:, 0], offsets[:, 1]
    rows = (top.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (left.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    # One advanced-indexing gather crops every sample at its own offset.
    return padded[
        torch.arange(b, device=x.device).view(b, 1, 1, 1),
        torch.arange(c, device=x.device).view(1, c, 1, 1),
        rows,
        cols,
    ]


def _resized_crop_boxes(
    u_area: torch.Tensor,
    u_ratio: torch.Tensor,
    u_y: torch.Tensor,
    u_x: torch.Tensor,
    h: int,
    w: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> torch.Tensor:
    """(B, 4) boxes (y0, x0, height, width) in pixels: area ~ U(scale), log aspect ~ U(log ratio)."""
    area = (scale[0] + (scale[1] - scale[0]) * u_area) * h * w
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u_ratio
    r = torch.exp(log_r)
    # A box that would not fit is clamped to the image (torchvision retries, then falls back likewise).
    bw = torch.sqrt(area * r).clamp(1, w)
    bh = torch.sqrt(area / r).clamp(1, h)
    return torch.stack([u_y * (h - bh), u_x * (w - bw), bh, bw], dim=1).float()


def _resized_crop(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Each sample's box resampled (bilinear) to the full H x W: one affine grid for the batch."""
    b, _, h, w = x.shape
    y0, x0, bh, bw = box.to(x.dtype).unbind(1)
    theta = x.new_zeros(b, 2, 3)
    # Normalized coordinates [-1, 1] (align_corners=False): the box's centre and half-extent.
    theta[:, 0, 0] = bw / w
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    r, g, b = x.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * a + (1 - factor) * b, clipped to pixel range (PIL's ImageEnhance)."""
    f = factor.view(-1, 1, 1, 1).to(a.dtype)
    return (f * a + (1 - f) * b).clamp(0, 1)


def _jitter(x: torch.Tensor, factors: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """Brightness, contrast, saturation, hue, in that fixed order (x in pixel space [0, 1])."""
    if spec.brightness:
        x = _blend(x, torch.zeros_like(x), factors[:, 0])
    if spec.contrast:
        x = _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factors[:, 1])
    if spec.saturation and x.shape[1] == 3:
        x = _blend(x, _gray(x).expand_as(x), factors[:, 2])
    if spec.hue and x.shape[1] == 3:
        from kornia.enhance import adjust_hue

        x = adjust_hue(x, factors[:, 3].to(x.dtype) * 2 * math.pi)
    return x


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's sharpness: blend with the image smoothed by [[1,1,1],[1,5,1],[1,1,1]] / 13 (borders kept).

    The smoothing is written as shifted adds, not a convolution: a convolution's result can change in
    the last bit with the batch size, and a replayed view must be exact whatever batch it is in.
    """
    h, w = x.shape[-2:]
    if h < 3 or w < 3:
        return x
    p = F.pad(x, (1, 1, 1, 1))
    total = 4 * x
    for dy in range(3):
        for dx in range(3):
            total = total + p[..., dy : dy + h, dx : dx + w]
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = (total / 13)[..., 1:-1, 1:-1]
    return _blend(x, smooth, factor)


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Warp by per-sample 2x3 matrices in normalized coordinates (output -> input), black fill."""
    grid = F.affine_grid(matrix.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _eye(n: int, x: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, 3, dtype=x.dtype, device=x.device).repeat(n, 1, 1)


def _auto_op(name: str, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """One RandAugment operation on pixel images x (n, C, H, W) at signed levels in [-1, 1]."""
    import kornia.enhance as ke

    n, _, h, w = x.shape
    level = level.to(x.dtype)
    if name == "identity":
        return x
    if name in ("shear_x", "shear_y"):
        m = _eye(n, x)
        m[:, 0 if name == "shear_x" else 1, 1 if name == "shear_x" else 0] = 0.3 * level
        return _affine(x, m)
    if name in ("translate_x", "translate_y"):
        m = _eye(n, x)
        m[:, 0 if name == "translate_x" else 1, 2] = 2 * (150 / 331) * level  # a fraction of the side
        return _affine(x, m)
    if name == "rotate":
        a = torch.deg2rad(30 * level)
        m = x.new_zeros(n, 2, 3)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a.cos(), -a.sin() * h / w, a.sin() * w / h, a.cos()
        return _affine(x, m)
    factor = 1 + 0.9 * level
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), factor)
    if name == "color":
        return _blend(x, _gray(x).expand_as(x), factor)
    if name == "contrast":
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factor)
    if name == "sharpness":
        return _sharpness(x, factor.clamp(min=0))
    if name == "posterize":
        bits = (8 - (level.abs() * 4).round()).to(torch.uint8)
        return ke.posterize(x, bits)
    if name == "solarize":
        return torch.where(x >= (1 - level.abs()).view(-1, 1, 1, 1), 1 - x, x)
    if name == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp(min=1e-12), x)
    assert name == "equalize"
    return ke.equalize(x)


def _auto_layer(x: torch.Tensor, op: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """One RandAugment layer: each sample's own operation, applied to the samples that drew it."""
    op = op.to(x.device)
    out = x.clone()
    for k, name in enumerate(AUTO_OPS):
        sel = (op == k).nonzero().flatten()
        if len(sel):
            out[sel] = _auto_op(name, x[sel], level.to(x.device)[sel])
    return out


def _mix(x: torch.Tensor, other: torch.Tensor, params: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    b = x.shape[0]
    lam = params["lam"].to(device=x.device, dtype=x.dtype)
    if kind == "mixup":
        shape = (b,) + (1,) * (x.dim() - 1)
        return lam.view(shape) * x + (1 - lam.view(shape)) * other
    if x.dim() != 4:
        raise ConfigError(
            f"cutmix cuts boxes out of images (B, C, H, W), but the batch has shape {tuple(x.shape)}; "
            "use mixing: mixup for feature vectors."
        )
    h, w = x.shape[-2:]
    cut = torch.sqrt(1.0 - params["lam"])
    ch, cw = (cut * h).long(), (cut * w).long()
    centre = params["box_center"]
    cy, cx = (centre[:, 0] * h).long(), (centre[:, 1] * w).long()
    y0, y1 = (cy - ch // 2).clamp(0, h), (cy + ch // 2).clamp(0, h)
    x0, x1 = (cx - cw // 2).clamp(0, w), (cx + cw // 2).clamp(0, w)

    def col(a: torch.Tensor) -> torch.Tensor:
        return a.to(x.device).view(b, 1, 1, 1)

    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    box = (rows >= col(y0)) & (rows < col(y1)) & (cols >= col(x0)) & (cols < col(x1))
    return torch.where(box, other, x)


def augment_batch(
    x: torch.Tensor,
    kind: str,
    padding: int,
    generator: torch.Generator | None = None,
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """Augment a batch with per-sample random parameters (a one-off batch; loaders use `Augmenter`).

    Args:
        x: (B, C, H, W) normalized images.
        kind: "none", "crop", "crop_flip" or operations joined by "+" that need no colour statistics
            ("crop", "flip", "resized_crop").
        padding: pixels of padding on each side before cropping; 0 makes the crop the identity.
        generator: where the seed of the draw comes from, for reproducible augmentation.
        fill: per-channel padding value; pass `zero_fill(mean, std)` so padding is a black pixel
            in normalized space. None pads with 0.

    Returns:
        A new (B, C, H, W) tensor (or `x` itself for "none").

    Raises:
        ConfigError: on an unknown kind, negative padding, or a fill of the wrong length.
    """
    spec = AugmentSpec(ops=parse_ops(kind), padding=padding)
    if not spec.is_random:
        return x
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    augmenter = Augmenter(spec, seed=seed)
    augmenter.fill = tuple(fill) if fill is not None else None
    return augmenter(x, torch.arange(x.shape[0]), 0)


def mix_batch(x: torch.Tensor, kind: str, alpha: float, seed: int) -> torch.Tensor:
    """Mix each sample with another of the batch: mixup (Zhang et al. 2018) or cutmix (Yun et al. 2019).

    Function matching (Beyer et al., CVPR 2022) trains the student on such views with the teacher's
    outputs on the very same view as targets, so only teacher-matching terms apply to a mixed batch.
    The loaders mix with partners from the whole split (`AugmentSpec.mixing`); this mixes within `x`.

    Args:
        x: (B, C, H, W) images, or (B, F) feature vectors for mixup.
        kind: "none", "mixup" (λ·x + (1-λ)·x[partner]) or "cutmix" (a box of area 1-λ from x[partner]).
        alpha: each sample's λ is drawn from Beta(alpha, alpha).
        seed: all randomness (pairing, λ, boxes) comes from it.

    Returns:
        A new tensor of x's shape (or `x` itself for "none").

    Raises:
        ConfigError: an unknown kind, or cutmix on data that are not images.
    """
    if kind not in MIXINGS:
        raise ConfigError(unknown_name_message("mixing", kind, MIXINGS))
    if kind == "none" or x.shape[0] < 2:
        return x
    augmenter = Augmenter(AugmentSpec(mixing=kind, mixing_alpha=alpha), seed=seed, num_samples=x.shape[0])
    return augmenter(x, torch.arange(x.shape[0]), 0, fetch=lambda ids: x[ids.to(x.device)])
