"""Build a model for a dataset from a ModelConfig: fresh, from a distil checkpoint, or a plain state_dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.config import ModelConfig
from distil.data import DataBundle
from distil.errors import CheckpointError, DataError
from distil.models import build_from_spec, model_spec
from distil.train.checkpoint import (
    load_checkpoint,
    load_state_dict_file,
    load_state_dict_strict,
)


def spec_for(cfg: ModelConfig, data: DataBundle) -> dict[str, Any]:
    """The architecture spec of `cfg.model` sized for `data` (channels, image size, classes)."""
    c, h, _ = data.input_shape
    return model_spec(cfg.model, num_classes=data.num_classes, in_channels=c, image_size=h, **cfg.kwargs)


def build_model(
    cfg: ModelConfig, data: DataBundle, *, seed: int | None = None, trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Create the model of `cfg` for `data`, loading `cfg.checkpoint` when set.

    A distil checkpoint (NAME.safetensors + NAME.json) brings its own architecture; any other weights
    file (.safetensors, .pt, .pth) is loaded strictly into `cfg.model` built for `data`. `cfg` is the
    user's own choice, so the checkpoint's sidecar may name the factory `cfg.model` names, and no other
    user factory unless `trust_code`.

    Args:
        cfg: model name, kwargs and optional checkpoint.
        data: the dataset the model is for.
        seed: seeds the random initialisation (so two students can start identically).
        trust_code: let the checkpoint's sidecar name any ``pkg.module:factory`` (trust its author).

    Returns:
        (model, spec).

    Raises:
        CheckpointError: the checkpoint is missing, unsafe, corrupt or does not fit, or its sidecar names
            a factory that neither `cfg.model` nor `trust_code` allows (UntrustedCodeError).
        DataError: a checkpoint trained for another class count.
    """
    if seed is not None:
        torch.manual_seed(seed)
    ckpt = cfg.checkpoint
    if ckpt and (Path(ckpt).with_suffix(".json").is_file() or Path(ckpt).is_dir()):
        model, meta = load_checkpoint(ckpt, trust_code=trust_code, trusted_models=[cfg.model])
        spec = meta["spec"]
        trained_classes = meta.get("data", {}).get("num_classes", spec.get("num_classes"))
        if trained_classes != data.num_classes:
            raise DataError(
                f"checkpoint {ckpt!r} predicts {trained_classes} classes but dataset {data.name!r} has "
                f"{data.num_classes}; use a checkpoint trained on this dataset."
            )
        return model, spec
    spec = spec_for(cfg, data)
    model = build_from_spec(spec, trusted=[cfg.model])  # the user's own model name
    if ckpt:
        if not Path(ckpt).exists():
            raise CheckpointError(
                f"checkpoint {ckpt!r} does not exist; check the path (no random teacher is used)"
            )
        load_state_dict_strict(model, load_state_dict_file(ckpt), source=ckpt)
    return model, spec
