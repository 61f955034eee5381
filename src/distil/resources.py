"""Resource checks done before training, and clear errors when a resource runs out during it.

Before a run: the output directory must be writable and its filesystem must have room for what the
run will write (final checkpoints plus the resumable training states, see `distil.train.state`).
During a run: running out of GPU (or CPU) memory becomes a TrainingError that says which batch size
to lower, instead of a CUDA traceback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from distil.config import TrainConfig
from distil.errors import ConfigError, TrainingError

MIB = 2**20
# Logs, the recipe, the report and summary, sidecars: small, but never zero.
MARGIN_BYTES = 16 * MIB
STATES_KEPT = 2


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(directory: str | Path, option: str = "--out") -> Path:
    """Prove that a file can be written, synced and removed in `directory` (created if needed).

    Directories created for the probe are removed again, so a command refused later (bad data, a bad
    recipe) leaves nothing behind; the writers create them when they write.

    Args:
        directory: where the outputs go.
        option: the command-line option (or argument) that chose it, named in the fix.

    Returns:
        The directory.

    Raises:
        ConfigError: naming the directory and the operating system's reason.
    """
    d = Path(directory)
    created = [p for p in (d, *d.parents) if not p.exists()]
    try:
        for attempt in range(3):
            d.mkdir(parents=True, exist_ok=True)
            try:
                _write_probe(d)
                break
            except FileNotFoundError:
                # Another process probing the same new directory (a torchrun rank) removed it again
                # between our mkdir and our write: make it again.
                if attempt == 2:
                    raise
    except OSError as exc:
        raise ConfigError(
            f"the output directory {str(d)!r} is not writable ({exc.strerror or exc}); choose another "
            f"{option} or fix its permissions."
        ) from None
    finally:
        for p in created:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()
    return d


def _write_probe(directory: Path) -> None:
    """Write, sync and remove one small file in `directory` (raises the OSError that stops a writer)."""
    fd, probe = tempfile.mkstemp(prefix=".distil-write-probe-", dir=directory)
    try:
        os.write(fd, b"x")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)


def optimizer_slots(cfg: TrainConfig) -> int:
    """Tensors the optimizer keeps per parameter (SGD momentum: 1, Adam/AdamW: 2)."""
    if cfg.optimizer.name == "sgd":
        return 1 if cfg.optimizer.momentum > 0 else 0
    return 2


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers (what its safetensors checkpoint holds)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def state_bytes(model: nn.Module, cfg: TrainConfig) -> int:
    """Approximate size of one training state of `model` trained with `cfg`."""
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return tensor_bytes(model) + optimizer_slots(cfg) * params + 64 * 1024  # + RNG states and sums


def estimate_run_bytes(stages: Sequence[tuple[nn.Module, TrainConfig | None]]) -> int:
    """What a run writes at its peak: each stage's checkpoint and kept states, one state being written.

    Args:
        stages: (model, training recipe) per model the run saves; recipe None = saved, not trained.
    """
    states = [state_bytes(m, cfg) for m, cfg in stages if cfg is not None]
    finals = sum(tensor_bytes(m) for m, _ in stages)
    return finals + STATES_KEPT * sum(states) + max(states, default=0) + MARGIN_BYTES


def check_disk_space(directory: str | Path, need_bytes: int) -> None:
    """Fail before training when the filesystem of `directory` has less free space than `need_bytes`.

    Raises:
        TrainingError: with the free and needed sizes and the fix.
    """
    where = _existing_ancestor(Path(directory))
    free = shutil.disk_usage(where).free
    if free < need_bytes:
        raise TrainingError(
            f"not enough disk space in {str(where)!r}: {free / MIB:.1f} MiB free, this run writes about "
            f"{need_bytes / MIB:.1f} MiB (checkpoints and {STATES_KEPT} resumable training states per "
            "stage). Free some space or choose another --out."
        )


def preflight(out_root: str | Path, stages: Sequence[tuple[nn.Module, TrainConfig | None]]) -> int:
    """Check that `out_root` is writable and has room for the run; returns the estimated bytes."""
    check_writable(out_root)
    need = estimate_run_bytes(stages)
    check_disk_space(out_root, need)
    return need


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _accumulation_field() -> str | None:
    # Suggest gradient accumulation only where the recipe schema offers it.
    return next((f for f in TrainConfig.model_fields if "accum" in f), None)


@contextmanager
def oom_hint(sections: dict[str, TrainConfig]) -> Iterator[None]:
    """Turn an out-of-memory error raised inside the block into a TrainingError with the fix.

    Args:
        sections: the training recipes used in the block by recipe section, e.g.
            {"teacher_train": recipe.teacher_train}; the fix names their batch sizes.
    """
    try:
        yield
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        if not _is_oom(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        gpu = isinstance(exc, torch.cuda.OutOfMemoryError) or "cuda" in str(exc).lower()
        accum = _accumulation_field()
        fixes = []
        for section, cfg in sections.items():
            half = max(1, cfg.batch_size // 2)
            keep = f" --set {section}.{accum}=2" if accum else ""
            fixes.append(f"--set {section}.batch_size={half}{keep}")
        how = (
            "; gradient accumulation keeps the effective batch size"
            if accum
            else " (scale lr by the same factor to keep the lr per sample)"
        )
        raise TrainingError(
            f"ran out of {'GPU' if gpu else 'CPU'} memory ({str(exc).splitlines()[0][:200]}). Fix: train "
            f"with a smaller batch, e.g. {' '.join(fixes)}{how}"
            + ("; mixed_precision=bf16 also halves activation memory" if gpu else ".")
            + (_shard_hint(sections) if gpu else "")
        ) from None


def _shard_hint(sections: dict[str, TrainConfig]) -> str:
    """For a GPU out of memory: sharding the models across GPUs, for the sections not sharded yet."""
    unsharded = [s for s, cfg in sections.items() if not cfg.fsdp.enabled]
    if not unsharded:
        return "."
    sets = " ".join(f"--set {s}.fsdp=true" for s in unsharded)
    return (
        f"; models too big for one GPU: shard them (and the teacher) across GPUs with {sets} under torchrun."
    )


__all__ = [
    "check_disk_space",
    "check_writable",
    "estimate_run_bytes",
    "oom_hint",
    "preflight",
    "state_bytes",
]
