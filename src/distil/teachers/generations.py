"""Sequence-level KD: the teacher's completions of the training prompts, generated once and cached.

With ``student_train.generation.seq_kd`` the student trains on prompt + the teacher's own completion
instead of the dataset's (Kim & Rush 2016): before the student's first step the frozen teacher completes
every training sample's prompt (:func:`distil.train.completions.generate_completions`: batched, eval
mode, no gradients; greedy at temperature 0, else sampled from a fixed seed), and the rows are written
in the data's layout: prompt, the teacher's tokens (its end of sequence included and labelled), then
end-of-sequence padding without labels. The KD terms then compare teacher and student on the teacher's
sequences; ``ce`` is supervised training on the teacher's outputs. Validation and test stay the
dataset's (evaluation on the gold answers).

The samples must be prompt/completion rows, one sample per row starting at its prompt (arithmetic,
single-turn chat): :func:`check_prompt_rows` refuses plain text (every position labelled), packed blocks
that start inside a completion, and rows with several completions, before anything is generated.

Cache: ``<cache_dir>/generations/<key[:32]>/`` holds ``tokens.npy`` ((N, T + 1) token ids), ``labelled.npy``
((N, T) bool: which next tokens are the teacher's) and ``meta.json``; nothing is pickled. The key
(:func:`generations_key`) is a SHA-256 of the teacher's weights, the data's description and training
split, the sampling settings (temperature, top-p, max new tokens, seed, batch size), the end-of-sequence
and padding ids and :data:`FORMAT_VERSION`: a sweep over the student's settings reuses the files, a
changed teacher or sampling builds new ones. The build runs in a locked temporary directory renamed
into place (`distil.fileio.atomic_dir`; builds of killed processes are removed); in a multi-process run
rank 0 builds while the others wait (`main_process_first`) and then open it.

The result is a :class:`GeneratedSplit`, an ordinary training split with the same sample positions
(``index``) as the dataset's, and a bundle whose ``describe()`` names the generations' key, so a
teacher-logit cache or a training state of a seq-KD run is never taken for a plain run's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distil.config import StudentTrainConfig, TrainConfig
from distil.data import DataBundle, SampleSplit
from distil.data.batch import IGNORE_INDEX, INDEX, INPUTS, LABELS
from distil.data.bundle import LANGUAGE_MODELING, hash_tensor
from distil.data.text import IndexedTokenRows
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError, DataError
from distil.fileio import atomic_dir, atomic_write_json
from distil.teachers.cache import main_process_first
from distil.teachers.live import freeze
from distil.teachers.store import default_cache_dir, id_dtype
from distil.train.completions import (
    EOS_FIX,
    Sampling,
    check_can_generate,
    completion_end_problem,
    generate_completions,
    prompt_rows_problem,
)

FORMAT_VERSION = 1
META = "meta.json"
TOKENS = "tokens.npy"
LABELLED = "labelled.npy"
# Sampled completions depend on the seed and on how rows are batched (the draws of one generate call):
# both are fixed, and part of the key, so a build is the same whatever the student's recipe says.
GENERATION_SEED = 0
GENERATION_BATCH = 64
# Record field of every epoch of a seq-KD run (`distill`): where its training completions came from.
COMPLETIONS = "completions"


# ------------------------------------------------------------------------------------- the split


class GeneratedSplit(IndexedTokenRows):
    """The cached prompt + teacher-completion rows, as a :class:`~distil.data.bundle.SampleSplit`.

    ``split[i] -> {"inputs": (T,) int64, "labels": (T,) int64}`` (``IGNORE_INDEX`` on the prompt and the
    padding), batches ``(B, T)`` with ``index`` = the positions in the split, as the dataset's own token
    splits give them. Reads the memory-mapped ``.npy`` files (never unpickled); pickles by path, so
    loader workers reopen them.

    Args:
        directory: a complete generations directory (:func:`read_meta`).
        index: the rows of this split, in order (default: all).
    """

    def __init__(self, directory: str | Path, index: torch.Tensor | None = None) -> None:
        self.directory = Path(directory)
        meta = read_meta(self.directory)
        if meta is None:
            raise ConfigError(
                f"{str(self.directory)!r} is not a complete set of teacher generations; delete it (the next "
                "seq-KD run rebuilds it)."
            )
        self.rows, self.block_size = int(meta["rows"]), int(meta["block_size"])
        self.index = torch.arange(self.rows) if index is None else index.long()
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (
                np.load(self.directory / TOKENS, mmap_mode="r", allow_pickle=False),
                np.load(self.directory / LABELLED, mmap_mode="r", allow_pickle=False),
            )
        return self._arrays

    def _read(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(rows) == 0:
            empty = torch.zeros(0, self.block_size, dtype=torch.int64)
            return empty, empty.clone()
        tokens, labelled = self._open()
        where = rows.numpy()
        ids = torch.from_numpy(tokens[where].astype(np.int64))
        labels = torch.where(
            torch.from_numpy(np.asarray(labelled[where], dtype=bool)), ids[:, 1:], IGNORE_INDEX
        )
        return ids[:, :-1].contiguous(), labels

    def take(self, index: torch.Tensor) -> GeneratedSplit:
        taken = GeneratedSplit.__new__(GeneratedSplit)
        taken.__dict__.update({**self.__dict__, "index": self.index[index], "_arrays": None})
        return taken


# ------------------------------------------------------------------------------------- checks


def seq_kd_enabled(cfg: TrainConfig) -> bool:
    """Whether a student's recipe asks for sequence-level KD (`student_train.generation.seq_kd`)."""
    return isinstance(cfg, StudentTrainConfig) and cfg.generation.seq_kd


_FIX = (
    "seq_kd needs prompt/completion samples, one per row starting at its prompt (the arithmetic task, "
    "single-turn chat data: docs/lm.md). Fix: use such data, or set student_train.generation.seq_kd=false."
)


def check_prompt_rows(split: SampleSplit, batch_size: int = 1024) -> None:
    """Refuse a split whose rows are not one prompt followed by one completion
    (`distil.train.completions.prompt_rows_problem`).

    Raises:
        DataError: naming the first bad row, what is wrong with it and the fix.
    """
    problem = prompt_rows_problem(split, batch_size)
    if problem is not None:
        raise DataError(f"{problem}. {_FIX}")


def check_seq_kd(teachers: Sequence[nn.Module], data: DataBundle, *, compile_step: bool = False) -> None:
    """Refuse seq-KD where it cannot run, before anything is generated.

    Raises:
        ConfigError: data that is not a language-modelling task, or an ensemble of teachers.
        ModelError: a teacher that cannot generate (with the compiled decoding step, when `compile_step`).
        DataError: samples that are not prompt/completion rows (`check_prompt_rows`), data without a
            named tokenizer (the end-of-sequence id a completion stops at), or completions without that id
            (`distil.train.completions.completion_end_problem`).
    """
    if data.task != LANGUAGE_MODELING:
        raise ConfigError(
            f"student_train.generation.seq_kd trains on the teacher's generated completions, but dataset "
            f"{data.name!r} is a {data.task} task: there is nothing to generate. Set seq_kd=false."
        )
    if len(teachers) != 1:
        raise ConfigError(
            f"seq_kd generates the completions with one teacher, but {len(teachers)} were given (an "
            "ensemble). Distill from one teacher, or set student_train.generation.seq_kd=false."
        )
    check_can_generate(teachers[0], compile_step=compile_step)
    if not data.extra.get("tokenizer_name"):
        raise DataError(
            f"dataset {data.name!r} does not name its tokenizer, so the end-of-sequence id a generated "
            "completion stops at is unknown. Build the data with a registered tokenizer name."
        )
    check_prompt_rows(data.train)
    unended = completion_end_problem(data.train, get_tokenizer(data.extra["tokenizer_name"]).eos_id)
    if unended is not None:
        raise DataError(f"student_train.generation.seq_kd: {unended}. {EOS_FIX}")


# ------------------------------------------------------------------------------------- key, meta


@dataclass(frozen=True)
class Settings:
    """Everything besides the teacher and the data that decides the generated tokens (all in the key)."""

    sampling: Sampling
    eos_id: int
    pad_id: int
    seed: int = GENERATION_SEED
    batch_size: int = GENERATION_BATCH

    def describe(self) -> dict[str, Any]:
        # compile_step changes how fast the tokens come, not which: not a reason to generate again.
        drawn = {k: v for k, v in asdict(self.sampling).items() if k != "compile_step"}
        return {**drawn, "eos_id": self.eos_id, "pad_id": self.pad_id, "seed": self.seed,
                "batch_size": self.batch_size}  # fmt: skip


def generations_key(teacher: nn.Module, data: DataBundle, settings: Settings) -> str:
    """SHA-256 of the teacher's class and weights, the data (description + training split), the
    settings and the format version: 64 hex digits."""
    h = hashlib.sha256(f"distil-teacher-generations-v{FORMAT_VERSION}".encode())
    h.update(f"{type(teacher).__module__}.{type(teacher).__qualname__}".encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        hash_tensor(h, tensor)
    h.update(json.dumps(data.describe(), sort_keys=True, default=str).encode())
    h.update(json.dumps(settings.describe(), sort_keys=True).encode())
    data.train.update_hash(h)
    return h.hexdigest()


def read_meta(path: Path) -> dict[str, Any] | None:
    """The metadata of a complete generations directory: this version, and both arrays of the recorded
    shapes (read as npy headers, never unpickled); None otherwise (the caller rebuilds)."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            return None
        rows, block = int(meta["rows"]), int(meta["block_size"])
        tokens = np.load(path / TOKENS, mmap_mode="r", allow_pickle=False)
        labelled = np.load(path / LABELLED, mmap_mode="r", allow_pickle=False)
        if tokens.shape != (rows, block + 1) or labelled.shape != (rows, block) or labelled.dtype != bool:
            return None
        return dict(meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# ------------------------------------------------------------------------------------- build


@dataclass(frozen=True)
class Generations:
    """What `open_or_build` found: the split, its key and directory, and whether it was reused."""

    split: GeneratedSplit
    key: str
    path: Path
    hit: bool
    meta: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The run record's fields: where the completions came from and, when built now, what it cost."""
        state = "cached" if self.hit else "built"
        out: dict[str, Any] = {COMPLETIONS: f"teacher (seq-KD, {state}, key {self.key[:16]})"}
        if not self.hit:
            out["completions_build"] = dict(self.meta["build"])
        return out


def _progress_task(progress: Any, total: int) -> Any:
    if progress is None:
        return None
    return progress.add_task("seq-KD generate", total=total, status="teacher completions")


def build(
    teacher: nn.Module,
    split: SampleSplit,
    directory: Path,
    settings: Settings,
    *,
    key: str,
    vocab_size: int,
    device: torch.device | str = "cpu",
    progress: Any = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Generate the frozen `teacher`'s completion of every row of `split` and write them atomically.

    Rows are generated `settings.batch_size` at a time, in split order, with torch's RNG seeded with
    `settings.seed` (restored afterwards), so the same teacher, data and settings give the same tokens.
    The metadata's ``build`` records the generated tokens, the rows cut by the block before their end of
    sequence (``truncated``), the seconds and tokens per second.

    Returns:
        `directory`.
    """
    started = time.perf_counter()
    device = torch.device(device)
    freeze(teacher)
    teacher.to(device)
    rows, block = len(split), split.sample_shape[0]
    task = _progress_task(progress, rows)
    generated = truncated = 0
    with atomic_dir(directory, complete=lambda path: read_meta(path) is not None) as tmp:
        tokens = np.lib.format.open_memmap(tmp / TOKENS, "w+", id_dtype(vocab_size), (rows, block + 1))
        labelled = np.lib.format.open_memmap(tmp / LABELLED, "w+", np.bool_, (rows, block))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(settings.seed)
            for batch in split.batches(settings.batch_size):
                b, e = int(batch[INDEX][0]), int(batch[INDEX][-1]) + 1
                done = generate_completions(
                    teacher,
                    {INPUTS: batch[INPUTS].to(device), LABELS: batch[LABELS].to(device)},
                    settings.sampling,
                    eos_id=settings.eos_id,
                    pad_id=settings.pad_id,
                )
                inputs, labels = done.batch[INPUTS].cpu(), done.batch[LABELS].cpu()
                last = torch.where(labels[:, -1] != IGNORE_INDEX, labels[:, -1], settings.pad_id)
                tokens[b:e] = torch.cat([inputs, last[:, None]], dim=1).numpy()
                labelled[b:e] = (labels != IGNORE_INDEX).numpy()
                generated += done.generated_tokens
                truncated += _truncated(labels, settings.eos_id)
                if task is not None:
                    progress.update(task, completed=e)
        tokens.flush()
        labelled.flush()
        del tokens, labelled
        seconds = time.perf_counter() - started
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": key,
            "rows": rows,
            "block_size": block,
            "settings": settings.describe(),
            "build": {
                "generated_tokens": generated,
                "truncated": truncated,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(generated / seconds, 1) if seconds > 0 else None,
                "device": str(device),
            },
            "teacher": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra_meta or {}),
        }
        atomic_write_json(tmp / META, meta)
    return directory


def _truncated(labels: torch.Tensor, eos_id: int) -> int:
    """Rows whose labelled completion does not end with `eos_id` (the block ran out first)."""
    labelled = labels != IGNORE_INDEX
    last = labelled.shape[1] - 1 - labelled.flip(1).int().argmax(dim=1)
    return int((labels.gather(1, last[:, None])[:, 0] != eos_id).sum())


def open_or_build(
    teacher: nn.Module,
    data: DataBundle,
    settings: Settings,
    *,
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: Any = None,
) -> Generations:
    """The teacher's generations for (teacher, data.train, settings): reused when complete, else built.

    A directory with the right name whose files do not validate (a crash on a file system without atomic
    renames, a manual edit) is rebuilt.
    """
    key = generations_key(teacher, data, settings)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = root / "generations" / key[:32]
    meta = read_meta(directory)
    hit = meta is not None and meta.get("fingerprint") == key and meta.get("rows") == len(data.train)
    if meta is None or not hit:
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        # The teacher goes back where it was: a sharded (FSDP) run copies it from there, whole on no GPU.
        home = next(teacher.parameters(), torch.empty(0)).device
        try:
            build(
                teacher,
                data.train,
                directory,
                settings,
                key=key,
                vocab_size=data.num_classes,
                device=device,
                progress=progress,
                extra_meta={"data": data.describe()},
            )
        finally:
            teacher.to(home)
        meta = read_meta(directory)
        assert meta is not None
    return Generations(GeneratedSplit(directory), key, directory, hit, meta)


def teacher_completions_bundle(data: DataBundle, generations: Generations) -> DataBundle:
    """`data` with its training split replaced by the teacher's generations; val and test unchanged.

    The description names the generations' key, so whatever is keyed by it (teacher-logit caches,
    training states) tells a seq-KD run from a plain one.
    """
    extra = {**data.extra, "teacher_generations": generations.key}
    return replace(data, train=generations.split, extra=extra)


def seq_kd_data(
    teachers: Sequence[nn.Module],
    data: DataBundle,
    cfg: TrainConfig,
    accelerator: Any,
    progress: Any = None,
) -> tuple[DataBundle, dict[str, Any]]:
    """The data a distillation run trains on and the record saying where its completions came from.

    Without `cfg.generation.seq_kd` (or for a plain `TrainConfig`): `data` and an empty record. With it:
    the checks of `check_seq_kd`, then the teacher's cached generations (rank 0 builds them while the
    other processes wait, then they all open them) as the training split.

    Raises:
        ConfigError, DataError, ModelError: from `check_seq_kd`.
    """
    if not seq_kd_enabled(cfg):
        return data, {}
    assert isinstance(cfg, StudentTrainConfig)
    check_seq_kd(teachers, data, compile_step=cfg.generation.compile_step)
    eos = get_tokenizer(data.extra["tokenizer_name"]).eos_id
    settings = Settings(Sampling.of(cfg.generation), eos_id=eos, pad_id=eos)
    with main_process_first(accelerator):
        generations = open_or_build(
            teachers[0],
            data,
            settings,
            cache_dir=cfg.teacher_cache.dir,
            device=accelerator.device if accelerator is not None else "cpu",
            progress=progress if getattr(accelerator, "is_main_process", True) else None,
        )
    _announce(progress, generations)
    return teacher_completions_bundle(data, generations), generations.record()


def _announce(progress: Any, generations: Generations) -> None:
    """One line when the generations were built: the count, the time and the throughput."""
    if (
        progress is None
        or generations.hit
        or getattr(progress, "log_format", "rich") not in ("rich", "plain")
    ):
        return
    build_info = generations.meta["build"]
    progress.console.print(
        f"seq-KD: the teacher completed {generations.meta['rows']} prompts ({build_info['generated_tokens']} "
        f"tokens, {build_info['seconds']:.1f}s, {build_info['tokens_per_s']} tokens/s); cached in "
        f"{generations.path}",
        markup=False,
        highlight=False,
    )


__all__ = [
    "COMPLETIONS",
    "FORMAT_VERSION",
    "GeneratedSplit",
    "Generations",
    "Settings",
    "check_prompt_rows",
    "check_seq_kd",
    "generations_key",
    "open_or_build",
    "read_meta",
    "seq_kd_data",
    "seq_kd_enabled",
    "teacher_completions_bundle",
]
