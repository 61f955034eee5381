"""Size: parameters and stored bytes of a model or a weights file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from distil.errors import CheckpointError


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Count the model's parameters.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        Number of scalar parameters; a parameter shared by several layers (tied weights)
        is counted once.
    """
    # parameters() already yields each Parameter object once, however many modules hold it.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def weights_bytes(path: str | Path) -> int:
    """Size on disk of a saved weights file.

    Args:
        path: A weights file (safetensors, ONNX, ...).

    Returns:
        File size in bytes.

    Raises:
        CheckpointError: If the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {str(path)!r}; pass the path of a saved file.")
    return path.stat().st_size


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes the model's safetensors file would have, without writing it.

    Tensors that alias each other (tied weights) are stored once, as ``safetensors`` would
    require; buffers (e.g. BatchNorm running statistics) are included because they ship too.

    Args:
        model: Any module.

    Returns:
        Length of the serialized safetensors payload, header included.
    """
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    seen_views: set[tuple[Any, ...]] = set()
    seen_storages: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        storage = tensor.untyped_storage().data_ptr()
        view = (storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if view in seen_views:  # the same tensor under a second name: stored once
            continue
        seen_views.add(view)
        t = tensor.detach().cpu()
        # A distinct view into shared memory is distinct data, but safetensors refuses shared
        # storage, so give it its own copy.
        t = t.clone() if storage in seen_storages else t.contiguous()
        seen_storages.add(storage)
        tensors[name] = t
    return len(save(tensors))
