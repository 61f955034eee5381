"""Portable checkpoints: weights in safetensors plus a JSON sidecar; loading never unpickles.

A checkpoint `NAME` is two files: `NAME.safetensors` and `NAME.json`. The sidecar holds the
architecture spec (so the model can be rebuilt without its Python class being pickled), the training
recipe, class names, input normalization, metrics, and a SHA-256 of the weights file.

A sidecar is data, and data never chooses code to run: its spec may name registered architectures (and
torchvision/timm ones), but a `pkg.module:factory` is imported only when the caller trusts that name (the
user named it) or trusts the file (`trust_code=True`); the same holds for the dataset it names.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from distil.errors import CheckpointError, DistilError, UntrustedCodeError
from distil.fileio import atomic_write_bytes, atomic_write_json
from distil.models import build_from_spec
from distil.models.registry import check_trusted

FORMAT = "distil-checkpoint/1"


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """The two files of a checkpoint: where its weights and its JSON sidecar are (or would be written).

    Nothing is read, so this also tells whether a file is a distil checkpoint (its sidecar exists) or a
    plain state_dict (none does).

    Args:
        path: NAME, NAME.json, NAME.safetensors, or a directory holding exactly one checkpoint.

    Returns:
        (weights path ``NAME.safetensors``, sidecar path ``NAME.json``).

    Raises:
        CheckpointError: `path` is a directory holding no checkpoint, or several.
    """
    p = Path(path)
    if p.is_dir():
        candidates = sorted(p.glob("*.json"))
        ckpts = [c for c in candidates if c.with_suffix(".safetensors").exists()]
        if len(ckpts) != 1:
            found = ", ".join(c.name for c in ckpts) or "none"
            raise CheckpointError(
                f"{str(p)!r} is a directory with {len(ckpts)} checkpoints ({found}); name one file"
            )
        p = ckpts[0]
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; clone so tied weights save as separate copies.
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def hf_pretrained_dir(path: str | Path) -> Path:
    """Where the ``save_pretrained`` copy of a Hugging Face checkpoint `path` goes: ``NAME-hf/``."""
    weights_path, _ = checkpoint_paths(path)
    return weights_path.with_name(f"{weights_path.stem}-hf")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    spec: dict[str, Any],
    meta: dict[str, Any] | Callable[[Path], dict[str, Any]],
    *,
    tokenizer: Any = None,
) -> Path:
    """Save `model` as `path`.safetensors + `path`.json (both written atomically).

    A Hugging Face model (``hf-causal-lm``, ``hf-seq-classifier``) is also written as ``NAME-hf/`` by
    ``save_pretrained`` (safetensors), which loads anywhere with ``AutoModelForCausalLM.from_pretrained``;
    the sidecar names it as ``hf_pretrained``.

    Args:
        path: checkpoint name without suffix, e.g. `runs/x/student`.
        model: the trained model.
        spec: the architecture spec from `distil.models.model_spec`.
        meta: anything JSON-serialisable: recipe, data description, metrics...; or a function of the
            written weights file returning it (a sidecar that records the file's size, written once).
        tokenizer: the data's tokenizer: its special ids go into ``NAME-hf/``'s config, and a Hugging
            Face one (``hf:DIR``) is saved there with the model.

    Returns:
        The path of the weights file.
    """
    weights_path, sidecar_path = checkpoint_paths(path)
    blob = st_save(_state_dict(model))
    atomic_write_bytes(weights_path, blob)
    from distil.models.hf import is_hf_wrapper, save_hf_pretrained

    extra: dict[str, Any] = {}
    if is_hf_wrapper(model):
        extra["hf_pretrained"] = save_hf_pretrained(model, hf_pretrained_dir(path), tokenizer).name
    sidecar = {
        "format": FORMAT,
        "spec": spec,
        "weights": weights_path.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        **extra,
        **(meta(weights_path) if callable(meta) else meta),
    }
    atomic_write_json(sidecar_path, sidecar)
    return weights_path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint, validated to be one."""
    _, sidecar_path = checkpoint_paths(path)
    if not sidecar_path.is_file():
        raise CheckpointError(
            f"checkpoint sidecar {str(sidecar_path)!r} not found; a distil checkpoint is NAME.safetensors + "
            "NAME.json. For a plain state_dict, give its architecture: --model NAME --data DATASET."
        )
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint sidecar {str(sidecar_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "spec" not in meta:
        raise CheckpointError(f"{str(sidecar_path)!r} is not a distil checkpoint sidecar (format {FORMAT})")
    return meta


def load_checkpoint(
    path: str | Path,
    map_location: str = "cpu",
    *,
    trust_code: bool = False,
    trusted_models: Iterable[str | None] = (),
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its sidecar spec and load its weights, verifying hash, names and shapes.

    The sidecar cannot choose code to run: a spec naming a ``pkg.module:factory`` (also as the base of a
    pruned model) is refused before anything is imported, unless that name is in `trusted_models` or
    `trust_code` is set. Registered models and torchvision/timm builders are always allowed.

    Args:
        path: NAME, NAME.json, NAME.safetensors, or a directory holding one checkpoint.
        map_location: device to move the model to.
        trust_code: import whatever factory the sidecar names; only for files whose author you trust.
        trusted_models: factory names the user chose (``--model``, ``teacher.model`` in their recipe),
            which the sidecar may name too; None entries are ignored.

    Returns:
        (model, sidecar metadata).

    Raises:
        CheckpointError: missing or corrupt files, a hash mismatch, weights that do not fit the spec, or
            (as UntrustedCodeError) a factory the user did not name.
    """
    weights_path, sidecar_path = checkpoint_paths(path)
    meta = read_sidecar(path)
    trusted = _trusted(trust_code, trusted_models)
    try:
        check_trusted(meta["spec"], trusted)  # before any file is read further, and before any import
    except UntrustedCodeError as exc:
        raise UntrustedCodeError(
            exc.names, source=f"checkpoint {str(sidecar_path)!r}", what=exc.what, fix=exc.fix
        ) from None
    except DistilError as exc:
        raise CheckpointError(f"cannot rebuild the model of {str(sidecar_path)!r}: {exc}") from None
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights {str(weights_path)!r} not found next to its sidecar")
    blob = weights_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"{str(weights_path)!r} does not match the SHA-256 in its sidecar: the file was changed or "
            "truncated. Restore it, or retrain."
        )
    try:
        model = build_from_spec(meta["spec"], trusted=trusted)
    except DistilError as exc:
        raise CheckpointError(f"cannot rebuild the model of {str(weights_path)!r}: {exc}") from None
    load_state_dict_strict(model, _load_safetensors_blob(blob, weights_path), source=str(weights_path))
    return model.to(map_location), meta


def _trusted(trust_code: bool, names: Iterable[str | None]) -> Collection[str] | bool:
    return True if trust_code else tuple(n for n in names if n)


def trained_dataset(meta: dict[str, Any], *, trust_code: bool = False, default: str = "digits") -> str:
    """The dataset a checkpoint says it was trained on, for commands whose ``--data`` defaults to it.

    A registered dataset name is returned as is. A ``pkg.module:function`` reader is code, and a file
    cannot choose code to run: it is refused unless `trust_code` (the user can also pass ``--data``).

    Raises:
        UntrustedCodeError: the sidecar names a user dataset function and `trust_code` is not set.
    """
    data = meta.get("data")
    name = data.get("name", default) if isinstance(data, dict) else default
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"the checkpoint's sidecar names an invalid dataset {name!r}; pass --data NAME")
    if ":" in name and not trust_code:
        raise UntrustedCodeError(
            [name],
            source="the checkpoint's sidecar",
            what="dataset function",
            fix=f"--data {name}",
        )
    return name


def _load_safetensors_blob(blob: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {exc}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NEEDS = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain state_dict from .safetensors, or from a .pt/.pth/.bin with weights_only=True.

    Pickles that would run code are refused by torch's weights-only unpickler, and distil never retries
    without it: the error says how to re-save the file as plain tensors or safetensors.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file {str(p)!r} does not exist; check the path")
    if p.suffix == ".safetensors":
        return _load_safetensors_blob(p.read_bytes(), p)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the refusal below says all that matters.
            warnings.simplefilter("ignore")
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError... depending on the damage
        raise CheckpointError(_pickle_refusal(p, exc)) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # the common {"state_dict": ..., "epoch": ...} layout
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(p)!r} does not hold a state_dict (a mapping of names to tensors)")
    return state


def _pickle_refusal(path: Path, exc: BaseException) -> str:
    """Why a .pt file was not loaded, without torch's advice to unpickle it anyway."""
    text = _ANSI.sub("", str(exc))
    fix = (
        "Where the file was made (with the code it needs), re-save its tensors only: "
        "torch.save(model.state_dict(), 'weights.pt'), or better "
        "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')."
    )
    needs = _NEEDS.search(text)
    if needs or "Weights only load failed" in text:
        what = f" ({needs.group(1)})" if needs else ""
        return (
            f"{str(path)!r} needs code{what} to load: it is a pickle of Python objects, not only tensors, "
            f"and distil does not unpickle files (unpickling can run any code the file chooses). {fix} "
            f"If it is your own file: `distil import {path} weights.safetensors --trust-pickle` converts it once."
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"cannot read {str(path)!r} as a tensors-only .pt file: {first}. {fix}"


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, failing with every missing, unexpected and mis-shaped tensor named."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:6])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:6])}")
        if shapes:
            parts.append(f"shape mismatch {len(shapes)}: {'; '.join(shapes[:4])}")
        raise CheckpointError(
            f"weights in {source!r} do not fit the model ({' | '.join(parts)}). Check the model name, its "
            "kwargs and the class count."
        )
    model.load_state_dict(state, strict=True)
