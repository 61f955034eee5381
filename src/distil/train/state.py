"""Training-state checkpoints: everything needed to continue a killed run bit for bit.

A state is two files in a state directory, written in this order, each atomically (temp file,
fsync, rename) followed by an fsync of the directory:

- `e0002-s000000120.safetensors` (epoch 2 in progress, step 120): every tensor: model weights, the trainable parts of the loss, optimizer
  buffers, the running sums of the epoch's losses and the RNG states (torch's is a ByteTensor;
  numpy's and Python's Mersenne-Twister keys are stored as int64 tensors). Nothing is pickled.
  A multi-process run saves every rank's RNG states and loss sums too, rank r's under `rank{r}.`
  (rank 0's keep the plain names), so that each rank continues from its own on resume.
- `e0002-s000000120.json`: the sidecar: position (epoch, batch within the epoch, global step), a
  SHA-256 of the tensor file, the name/dtype/shape of every tensor, the JSON parts of the optimizer,
  scheduler and grad-scaler states, the epoch records so far, and a fingerprint of what was being
  trained (stage, recipe, data, parameter shapes).

The sidecar is written last, so a state without one is incomplete and ignored. The newest `keep`
complete states are kept; a kill at any moment therefore leaves at least one good state on disk.
Loading checks the hash, every tensor's dtype and shape against the sidecar, and the fingerprint
against the run being resumed; any mismatch is a CheckpointError, never a partial load.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from distil.config import GROUP_WORDS, MOVED_KEYS, GenerationConfig
from distil.errors import CheckpointError, TrainingError
from distil.fileio import atomic_write_bytes, atomic_write_json, is_out_of_space
from distil.train.checkpoint import load_state_dict_strict

FORMAT = "distil-train-state/1"
_NAME = re.compile(r"^e(\d+)-s(\d+)\.json$")
# Recipe fields that change how a run is saved, not what it computes: they may differ on resume.
# The fsdp group lays the same computation out across processes; its states are saved whole either way.
_NOT_FINGERPRINTED = {"checkpoint_every", "fsdp"}
# keys of settings groups, likewise (generation.compile_step: how fast the decoder runs, not what it draws)
_NOT_FINGERPRINTED_IN = {"teacher_cache": {"dir"}, "generation": {"compile_step"}}
_ACTIVE_ROOT: ContextVar[Path | None] = ContextVar("distil_state_root", default=None)


@dataclass
class TrainState:
    """A training run frozen between two steps.

    Attributes:
        epoch: the epoch in progress (0-based); equals the number of epochs when training is done.
        batch: batches of `epoch` already trained (0 at an epoch start).
        step: optimizer steps done since the start of training.
        tensors: every tensor of the state, by name (see the module docstring).
        meta: the JSON part: optimizer/scheduler/scaler states, RNG scalars, history, fingerprint.
    """

    epoch: int
    batch: int
    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records of the epochs finished before this state."""
        return list(self.meta.get("history", []))

    @property
    def sums(self) -> dict[str, torch.Tensor]:
        """Running sums of the loss terms over the batches of `epoch` done so far (rank 0's)."""
        return self.rank_sums(0)

    @property
    def processes(self) -> int:
        """How many data-parallel processes trained the run (1 for states saved before this was kept)."""
        return int(self.meta.get("processes", 1))

    def rank_sums(self, rank: int) -> dict[str, torch.Tensor]:
        """The running sums of process `rank` (each rank sums the loss terms of its own shard)."""
        prefix = _rank_prefix(rank) + "sums."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def fingerprint(stage: str, cfg: Any, data_description: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """What must not change between a run and its resumption.

    Args:
        stage: the stage name (e.g. "teacher", "student_kd").
        cfg: the stage's TrainConfig (a pydantic model).
        data_description: `DataBundle.describe()`.
        model: the network being trained (its parameter names and shapes are recorded).
    """
    recipe = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_FINGERPRINTED}
    for group, keys in _NOT_FINGERPRINTED_IN.items():
        if isinstance(recipe.get(group), dict):
            recipe[group] = {k: v for k, v in recipe[group].items() if k not in keys}
    return {
        "stage": stage,
        "recipe": recipe,
        "data": data_description,
        "model": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


def upgrade_fingerprint(saved: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint saved before settings became groups (teacher cache, optimizer, augmentation...), as today.

    So a run started before a regroup resumes under it; what it computed is the same.
    """
    saved = _added_data_notes(saved, expected)
    recipe = saved.get("recipe")
    if not isinstance(recipe, dict):
        return saved
    return {**saved, "recipe": _added_keys(_flat_groups(_flat_cache_keys(recipe, expected)), expected)}


# Notes a token bundle's `extra` gained after states were first saved. They follow from what is still
# fingerprinted (the tokenizer's fingerprint), so a state saved without them trained on the same data.
_ADDED_DATA_NOTES = ("eos_id",)


def _added_data_notes(saved: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """`saved` with today's values of the `_ADDED_DATA_NOTES` its data description lacks."""
    data, today = saved.get("data"), expected.get("data")
    if not isinstance(data, dict) or not isinstance(today, dict):
        return saved
    extra, today_extra = data.get("extra"), today.get("extra")
    if not isinstance(extra, dict) or not isinstance(today_extra, dict):
        return saved
    missing = {k: today_extra[k] for k in _ADDED_DATA_NOTES if k in today_extra and k not in extra}
    return {**saved, "data": {**data, "extra": {**extra, **missing}}} if missing else saved


# Settings added after states were first saved, with the value that means "as before" (and so what a
# state saved without them was trained with).
_ADDED_KEYS: dict[str, Any] = {
    "max_steps": None,
    "generation": GenerationConfig().model_dump(mode="json", exclude={"compile_step"}),  # not fingerprinted
    "model_outputs": "check",
}


def _added_keys(recipe: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """`recipe` with each later-added setting it lacks at its as-before value, where today's recipe has it."""
    today = expected.get("recipe", {})
    missing = {k: v for k, v in _ADDED_KEYS.items() if k not in recipe and k in today}
    return {**recipe, **missing} if missing else recipe


def _flat_cache_keys(recipe: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The flat keys teacher_cache, teacher_cache_form, _k, _topk and _views as the `teacher_cache` group.

    (The directory was never fingerprinted.) A teacher's recipe loses them (it has no cache now), a
    student's gets them as its group.
    """
    if "teacher_cache_form" not in recipe:
        return recipe
    kept = {k: v for k, v in recipe.items() if k != "teacher_cache" and not k.startswith("teacher_cache_")}
    if "teacher_cache" in expected.get("recipe", {}):
        topk = recipe.get("teacher_cache_topk")
        kept["teacher_cache"] = {
            "mode": recipe.get("teacher_cache"),
            "form": "topk" if topk is not None else recipe.get("teacher_cache_form"),
            "k": topk if topk is not None else recipe.get("teacher_cache_k"),
            "views": recipe.get("teacher_cache_views"),
        }
    return kept


def _flat_groups(recipe: dict[str, Any]) -> dict[str, Any]:
    """The flat keys of settings now grouped (`optimizer: sgd`, `momentum`, `augment: crop`, `num_workers`...)
    as their groups: a group's word becomes its main field, `config.MOVED_KEYS` says where each other key
    went (the fsdp keys were never fingerprinted; the cache keys are read by `_flat_cache_keys`)."""
    words = {k for k, v in recipe.items() if k in GROUP_WORDS and not isinstance(v, dict)}
    if not words and not any(k in MOVED_KEYS for k in recipe):
        return recipe
    out = {k: v for k, v in recipe.items() if k not in MOVED_KEYS}
    out.update({k: {GROUP_WORDS[k]: recipe[k]} for k in words})
    for old, moved in MOVED_KEYS.items():
        group, _, leaf = moved.path.partition(".")
        if old in recipe and group not in ("teacher_cache", *_NOT_FINGERPRINTED):
            out.setdefault(group, {})[leaf] = recipe[old]
    return out


def _diff(saved: Any, current: Any, path: str = "") -> Iterator[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in saved or key not in current:
                yield f"{sub} (only in the {'run' if key in current else 'saved state'})"
            else:
                yield from _diff(saved[key], current[key], sub)
    elif saved != current:
        yield f"{path}: saved {saved!r}, now {current!r}"


# ---------------------------------------------------------------------------------------------------
# Capture and restore


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses tensors that share memory, so every tensor is an independent contiguous copy.
    return t.detach().to("cpu", copy=True).contiguous()


def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = _cpu(value)
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any], template: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, slots in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(slots)
    groups = meta["param_groups"]
    if len(groups) != len(template["param_groups"]):
        raise CheckpointError(
            f"the saved optimizer has {len(groups)} parameter groups but this run's has "
            f"{len(template['param_groups'])}; the state belongs to another recipe."
        )
    # JSON turned tuples (Adam's betas) into lists; give them back the type the optimizer uses.
    fixed = []
    for saved, current in zip(groups, template["param_groups"], strict=True):
        g = dict(saved)
        for key, value in current.items():
            if isinstance(value, tuple) and isinstance(g.get(key), list):
                g[key] = tuple(g[key])
        fixed.append(g)
    return {"state": state, "param_groups": fixed}


def _rng_capture() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_key, dtype=np.int64))
    py_version, py_key, py_gauss = random.getstate()
    tensors["rng.python"] = torch.tensor(py_key, dtype=torch.int64)
    meta = {
        "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [py_version, py_gauss],
    }
    return tensors, meta


def _rng_restore(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    np_name, np_pos, np_has_gauss, np_gauss = meta["numpy"]
    key = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((np_name, key, np_pos, np_has_gauss, np_gauss))
    py_version, py_gauss = meta["python"]
    random.setstate((py_version, tuple(int(v) for v in tensors["rng.python"].tolist()), py_gauss))


def _rank_prefix(rank: int) -> str:
    # Rank 0's per-process tensors keep the single-process names, so older states still load.
    return f"rank{rank}." if rank else ""


def rank_local_state(sums: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """What differs between data-parallel processes: this process's RNG states and its loss sums.

    Every rank captures its own, the main process gathers them (`torch.distributed`) and writes them
    all in one state (`capture_state(ranks=...)`), and each rank restores its own on resume.

    Returns:
        {"tensors": name -> CPU tensor, "rng": the JSON part of the RNG states}.
    """
    tensors, rng_meta = _rng_capture()
    tensors.update({f"sums.{k}": _cpu(v) for k, v in (sums or {}).items()})
    return {"tensors": tensors, "rng": rng_meta}


def capture_state(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    batch: int,
    step: int,
    sums: dict[str, torch.Tensor] | None = None,
    history: list[dict[str, Any]] | None = None,
    loss_module: nn.Module | None = None,
    scaler: Any = None,
    fingerprint: dict[str, Any] | None = None,
    ranks: Sequence[dict[str, Any]] = (),
    optimizer_state: dict[str, Any] | None = None,
) -> TrainState:
    """Snapshot a run between two steps (copies everything to the CPU; the run is not disturbed).

    Args:
        model: the unwrapped network being trained.
        optimizer, scheduler: the run's optimizer and per-step LR scheduler.
        epoch, batch, step: the position (see `TrainState`).
        sums: running sums of the loss terms over the current epoch.
        history: the records of the finished epochs.
        loss_module: a loss with trainable parts (e.g. feature adapters), saved with the model.
        scaler: a torch GradScaler (fp16 mixed precision), or None.
        fingerprint: from `fingerprint()`, checked when the state is loaded.
        ranks: with several data-parallel processes, `rank_local_state()` of every rank, in rank
            order (rank 0's replaces this process's RNG states and `sums`); empty for one process.
        optimizer_state: the optimizer's state dict when `optimizer.state_dict()` holds only this
            process's shard of it (FSDP: `distil.train.fsdp.full_optimizer_state`); None reads it.
    """
    tensors = {f"model.{k}": _cpu(v) for k, v in model.state_dict().items()}
    if loss_module is not None:
        tensors.update({f"loss.{k}": _cpu(v) for k, v in loss_module.state_dict().items()})
    opt_tensors, opt_meta = _split_optimizer(
        optimizer_state if optimizer_state is not None else optimizer.state_dict()
    )
    tensors.update(opt_tensors)
    local = list(ranks) or [rank_local_state(sums)]
    for rank, part in enumerate(local):
        tensors.update({_rank_prefix(rank) + k: v for k, v in part["tensors"].items()})
    sched = {k: v for k, v in scheduler.state_dict().items() if not callable(v)}
    meta = {
        "optimizer": opt_meta,
        "scheduler": sched,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": local[0]["rng"],
        "rank_rng": [part["rng"] for part in local[1:]],
        "processes": len(local),
        "history": list(history or []),
        "fingerprint": fingerprint,
    }
    return TrainState(epoch=epoch, batch=batch, step=step, tensors=tensors, meta=meta)


def restore_state(
    state: TrainState,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss_module: nn.Module | None = None,
    scaler: Any = None,
    rank: int = 0,
) -> None:
    """Load a state into a freshly built run (same recipe), including the global RNG states.

    Args:
        state: the state to continue from.
        model, optimizer, scheduler, loss_module, scaler: the fresh run's (as in `capture_state`).
        rank: this data-parallel process; it gets its own RNG states back (rank 0's when the state
            was saved by fewer processes).

    Raises:
        CheckpointError: when tensors are missing, unexpected or mis-shaped for this model/optimizer.
    """
    t = state.tensors
    source = f"training state at step {state.step}"
    load_state_dict_strict(model, {k[6:]: v for k, v in t.items() if k.startswith("model.")}, source)
    loss_state = {k[5:]: v for k, v in t.items() if k.startswith("loss.")}
    if loss_module is not None:
        load_state_dict_strict(loss_module, loss_state, source + " (loss parameters)")
    elif loss_state:
        raise CheckpointError(f"the {source} holds loss parameters but this run's loss has none.")
    try:
        optimizer.load_state_dict(_join_optimizer(t, state.meta["optimizer"], optimizer.state_dict()))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"the optimizer state of the {source} does not fit this run: {exc}") from None
    sched = scheduler.state_dict()
    sched.update(state.meta["scheduler"])
    scheduler.load_state_dict(sched)
    if scaler is not None and state.meta.get("scaler") is not None:
        scaler.load_state_dict(state.meta["scaler"])
    if 0 < rank < state.processes:
        prefix = _rank_prefix(rank) + "rng."
        rank_rng = {k[len(_rank_prefix(rank)) :]: v for k, v in t.items() if k.startswith(prefix)}
        _rng_restore(rank_rng, state.meta["rank_rng"][rank - 1])
    else:
        _rng_restore(t, state.meta["rng"])


# ---------------------------------------------------------------------------------------------------
# The on-disk store


def _fsync_dir(path: Path) -> None:
    # The renames are durable only once the directory entry is on disk (matters on power loss).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class TrainStateStore:
    """A directory of training states for one stage of a run.

    Args:
        directory: where the states live (created on the first save).
        every: also save every `every` optimizer steps; None saves only at epoch ends.
        keep: complete states to keep (>= 1); older ones are deleted after each successful save.
    """

    def __init__(self, directory: str | Path, every: int | None = None, keep: int = 2) -> None:
        if every is not None and every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.keep = max(1, keep)

    def _complete(self) -> list[tuple[tuple[int, int], Path]]:
        """((epoch, step), sidecar) of the states whose sidecar exists, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append(((int(m.group(1)), int(m.group(2))), p))
        return sorted(found, reverse=True)

    def has_state(self) -> bool:
        """Whether at least one complete state is on disk."""
        return bool(self._complete())

    def save(self, state: TrainState) -> Path:
        """Write `state` atomically, then delete all but the newest `keep` states and stray temp files.

        Raises:
            TrainingError: when the state cannot be written (disk full, permissions); the previous
                states are left intact.
        """
        # Epoch in the name: the state at the end of an epoch and the one after its last step differ.
        stem = self.directory / f"e{state.epoch:04d}-s{state.step:09d}"
        weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        blob = st_save(state.tensors)
        meta = {
            "format": FORMAT,
            "epoch": state.epoch,
            "batch": state.batch,
            "step": state.step,
            "weights": weights.name,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "tensors": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in state.tensors.items()},
            **state.meta,
        }
        existed = sidecar.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(weights, blob)
            atomic_write_json(sidecar, meta)
            _fsync_dir(self.directory)
        except OSError as exc:
            if not existed:  # leave nothing of the failed state behind (a rewrite keeps its old files)
                sidecar.unlink(missing_ok=True)
                weights.unlink(missing_ok=True)
            previous = self._complete()
            kept = (
                f"the last good state ({previous[0][1].name}) is intact" if previous else "no state was kept"
            )
            # Only a full disk or quota is about space (a vanished directory is not: see RunDir).
            fix = (
                f"It needs about {len(blob) / 2**20:.1f} MiB: free disk space or choose another --out."
                if is_out_of_space(exc)
                else "Check that the run directory still exists and is writable."
            )
            raise TrainingError(
                f"cannot write the training state {str(weights)!r}: {exc.strerror or exc}; {kept}. {fix}"
            ) from None
        self._prune(keep={p.stem for _, p in self._complete()[: self.keep]})
        return weights

    def _prune(self, keep: set[str]) -> None:
        for p in self.directory.iterdir():
            ours = re.match(r"^e\d+-s\d+\.(json|safetensors)$", p.name)
            stale_tmp = p.name.startswith(".e") and p.name.endswith(".tmp")
            if stale_tmp or (ours and p.name.rsplit(".", 1)[0] not in keep):
                p.unlink(missing_ok=True)

    def load(self, sidecar: Path, expected: dict[str, Any] | None = None) -> TrainState:
        """Read and verify one state.

        Raises:
            CheckpointError: unreadable files, a hash or tensor-index mismatch, or another fingerprint.
        """
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"training state sidecar {str(sidecar)!r} is unreadable: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{str(sidecar)!r} is not a distil training state ({FORMAT})")
        # The weights are the sidecar's sibling of the same stem: a path read from the file is not followed.
        weights = sidecar.with_suffix(".safetensors")
        if meta.get("weights") != weights.name:
            raise CheckpointError(
                f"training state sidecar {str(sidecar)!r} names weights {meta.get('weights')!r}, not "
                f"{weights.name!r}; it was not written by distil."
            )
        try:
            blob = weights.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"training state {str(weights)!r} is unreadable: {exc.strerror}") from None
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            raise CheckpointError(
                f"{str(weights)!r} does not match the SHA-256 in its sidecar (changed or truncated)."
            )
        try:
            tensors = st_load(blob)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{str(weights)!r} is not a readable safetensors file: {exc}") from None
        index = meta.get("tensors", {})
        found = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()}
        if found != index:
            bad = sorted(k for k in set(found) | set(index) if found.get(k) != index.get(k))
            raise CheckpointError(
                f"{str(weights)!r} does not match the tensor list in its sidecar "
                f"({len(bad)} differ: {', '.join(bad[:5])})."
            )
        saved = upgrade_fingerprint(meta.get("fingerprint") or {}, expected or {})
        if expected is not None and saved != expected:
            diffs = list(_diff(saved, expected))
            raise CheckpointError(
                f"the training state in {str(self.directory)!r} belongs to a different run: "
                f"{'; '.join(diffs[:5])}. Resume with the recipe the run was started with "
                "(its recipe.yaml), or start a new run."
            )
        extra = {k: v for k, v in meta.items() if k not in ("format", "epoch", "batch", "step", "weights")}
        return TrainState(
            epoch=int(meta["epoch"]),
            batch=int(meta["batch"]),
            step=int(meta["step"]),
            tensors=tensors,
            meta=extra,
        )

    def latest(self, expected: dict[str, Any] | None = None) -> TrainState | None:
        """The newest state that verifies, or None when there is none.

        A newest state that fails its hash (damaged on disk after it was written) is reported with a
        warning and the one before it is used. A fingerprint mismatch is an error straight away.

        Raises:
            CheckpointError: when every state on disk is damaged, or the states belong to another run.
        """
        complete = self._complete()
        first_error: CheckpointError | None = None
        for _, sidecar in complete:
            try:
                state = self.load(sidecar, expected)
            except CheckpointError as exc:
                if "belongs to a different run" in str(exc):
                    raise
                first_error = first_error or exc
                warnings.warn(f"skipping a damaged training state: {exc}", stacklevel=2)
                continue
            return state
        if first_error is not None:
            raise CheckpointError(f"no usable training state in {str(self.directory)!r}: {first_error}")
        return None


@contextmanager
def checkpointing(root: str | Path) -> Iterator[Path]:
    """Within the block, every `fit` given no explicit store saves its states under `root/<stage>`.

    This is how a run directory checkpoints all its stages (teacher, students, transfer phases)
    without each API call having to pass a store; the setting is scoped to the block (a ContextVar).

    Example:
        >>> with checkpointing(run.path / "state"):
        ...     train_model(model, data, cfg, description="teacher")  # states in state/teacher/
    """
    token = _ACTIVE_ROOT.set(Path(root))
    try:
        yield Path(root)
    finally:
        _ACTIVE_ROOT.reset(token)


def store_for(stage: str, cfg: Any) -> TrainStateStore | None:
    """The store of `stage` inside the active `checkpointing` block, or None outside one."""
    root = _ACTIVE_ROOT.get()
    if root is None:
        return None
    return TrainStateStore(root / stage_dirname(stage), every=cfg.checkpoint_every)


def stage_dirname(stage: str) -> str:
    """A file-system-safe directory name for a stage label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stage).strip("-.") or "stage"


__all__ = [
    "FORMAT",
    "TrainState",
    "TrainStateStore",
    "capture_state",
    "checkpointing",
    "fingerprint",
    "rank_local_state",
    "restore_state",
    "store_for",
]
