"""Sparse teacher caches for sequence models: k (token, weight) pairs per position instead of V logits.

A language model's teacher outputs are (N, T, V): at V = 32k and fp16 that is 64 KB per token, too much
to store for a real corpus. This module stores per position only k token ids and k float16
log-weights, plus one float32, in one of two forms (their losses: `distil.losses.sparse`):

- ``topk``: the teacher's k most probable tokens, log p_T of each, and the tail mass 1 - sum_topk p_T.
  What every caching tool stores; biased (Anshumann et al., ACL 2025, arXiv 2503.16870).
- ``sampled``: k i.i.d. draws from a proposal r (the teacher's distribution at the KD temperature T, or
  at `proposal_temperature`), log of the importance weight p_T / (k r) of each, and the teacher's
  negative entropy (for the KL's value). Unbiased in loss and gradient at the same bytes per token.

The third form, ``full`` (all V logits, fp16; for small vocabularies), is `distil.teachers.cache`'s
(N, T, V) table, which `open_or_build_sequence` returns for ``form="full"``: one cache mechanism, one
fingerprint (this module adds its form, k, temperature, proposal and seed to the key), the same atomic
build (a temporary directory renamed into place) and memory-mapped reads by `batch["index"]`.

Bytes per token (`bytes_per_token`): full 2V; topk and sampled k * (b + 2) + 4, where b is 2 for
V <= 65536 (uint16 ids) and 4 above. At V = 259 (bytes): full 518, k=16 68.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distil.data import DataBundle, SampleSplit
from distil.errors import ConfigError
from distil.fileio import atomic_write_json
from distil.losses.sparse import SparseTargets
from distil.registry import unknown_name_message
from distil.teachers.cache import (
    FORMAT_VERSION,
    CachedTeacher,
    CacheInfo,
    _teacher_logits,
    atomic_cache_dir,
    default_cache_dir,
    fingerprint,
    open_or_build,
)
from distil.teachers.live import freeze

SEQUENCE_FORMS = ("full", "topk", "sampled")
# `auto` keeps all logits while they are cheap (2V bytes per token), else samples.
AUTO_FULL_MAX_VOCAB = 1024
_META = "meta.json"
_IDS = "ids"
_LOGW = "logw.f16"
_AUX = "aux.f32"


def resolve_form(form: str, num_classes: int) -> str:
    """`form`, or for "auto": "full" when V <= 1024 (2V bytes per token), else "sampled".

    Raises:
        ConfigError: an unknown form.
    """
    if form == "auto":
        return "full" if num_classes <= AUTO_FULL_MAX_VOCAB else "sampled"
    if form not in SEQUENCE_FORMS:
        raise ConfigError(unknown_name_message("teacher_cache_form", form, ("auto", *SEQUENCE_FORMS)))
    return form


def vocab_size(data: DataBundle) -> int:
    """V of a language-modelling bundle (its token split's `vocab_size`), else its class count."""
    return int(getattr(data.train, "vocab_size", 0) or data.num_classes)


def _id_dtype(num_classes: int) -> np.dtype[Any]:
    return np.dtype(np.uint16) if num_classes <= 2**16 else np.dtype(np.int32)


def bytes_per_token(form: str, num_classes: int, k: int | None = None) -> int:
    """Stored bytes per position of a sequence cache of `form` over `num_classes` tokens.

    full: 2V (fp16 logits); topk and sampled: k * (id bytes + 2) + 4 (ids, fp16 log-weights, one float32).

    Raises:
        ConfigError: an unknown form, or a sparse form without k.
    """
    if form == "full":
        return 2 * num_classes
    if form not in SEQUENCE_FORMS:
        raise ConfigError(unknown_name_message("teacher_cache_form", form, SEQUENCE_FORMS))
    if k is None:
        raise ConfigError(f"bytes_per_token of form {form!r} needs k")
    return k * (_id_dtype(num_classes).itemsize + 2) + 4


def sparse_rows(
    logits: torch.Tensor,
    form: str,
    k: int,
    temperature: float = 1.0,
    proposal_temperature: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sparse targets of (..., V) teacher logits: ids (..., k), log-weights (..., k), aux (...).

    Args:
        logits: teacher logits, any leading shape.
        form: "topk" (the k most probable tokens, log p_T, tail mass) or "sampled" (k draws from the
            proposal, log p_T / (k r), negative entropy sum p_T log p_T).
        k: tokens per position.
        temperature: T of the KD loss; p_T = softmax(logits / T).
        proposal_temperature: sampled only: draw from softmax(logits / this) (None: from p_T itself,
            so every weight is 1/k).
        generator: sampled only: the random draws' generator (seeded by the caller: reproducible).
    """
    z = logits.double()
    logp = torch.log_softmax(z / temperature, dim=-1)
    if form == "topk":
        logw, ids = logp.topk(k, dim=-1)
        aux = (1.0 - logw.exp().sum(-1)).clamp_min(0.0)
        return ids, logw.float(), aux.float()
    if form != "sampled":
        raise ConfigError(unknown_name_message("sparse cache form", form, ("topk", "sampled")))
    logr = logp if proposal_temperature is None else torch.log_softmax(z / proposal_temperature, dim=-1)
    flat = logr.exp().reshape(-1, z.shape[-1])
    ids = torch.multinomial(flat, k, replacement=True, generator=generator).reshape(*z.shape[:-1], k)
    logw = logp.gather(-1, ids) - logr.gather(-1, ids) - math.log(k)
    aux = (logp.exp() * logp).sum(-1)
    return ids, logw.float(), aux.float()


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The sparse cache's metadata when the directory is complete (its files have the recorded sizes)."""
    try:
        meta = json.loads((path / _META).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION or meta.get("form") not in ("topk", "sampled"):
            return None
        positions = int(meta["rows"]) * int(meta["positions"])
        k, id_bytes = int(meta["k"]), np.dtype(meta["id_dtype"]).itemsize
        expected = {_IDS: positions * k * id_bytes, _LOGW: positions * k * 2, _AUX: positions * 4}
        if any((path / name).stat().st_size != size for name, size in expected.items()):
            return None
        return dict(meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SparseCachedTeacher:
    """A `TeacherFn` over a sparse cache: `cached(batch) -> SparseTargets` of `batch["index"]`.

    The three arrays are read-only memory maps; a lookup reads only the rows it gathers.

    Args:
        path: a directory written by `build_sparse_cache`.

    Raises:
        ConfigError: `path` is not a complete sparse cache.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = _read_meta(self.path)
        if meta is None:
            raise ConfigError(
                f"{str(self.path)!r} is not a complete sparse teacher cache; rebuild it with build_sparse_cache."
            )
        self.meta: dict[str, Any] = meta
        self.form: str = meta["form"]
        self.k: int = int(meta["k"])
        self.temperature: float = float(meta["temperature"])
        self.num_classes: int = int(meta["num_classes"])
        self.positions: int = int(meta["positions"])
        shape = (int(meta["rows"]), self.positions)
        self.ids = np.memmap(self.path / _IDS, np.dtype(meta["id_dtype"]), "r", shape=(*shape, self.k))
        self.logw = np.memmap(self.path / _LOGW, np.float16, "r", shape=(*shape, self.k))
        self.aux = np.memmap(self.path / _AUX, np.float32, "r", shape=shape)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def bytes_per_token(self) -> int:
        return bytes_per_token(self.form, self.num_classes, self.k)

    def lookup(self, index: torch.Tensor) -> SparseTargets:
        """The targets of samples `index` ((B,) ids): ids/log-weights (B, T, k), aux (B, T), on CPU."""
        idx = index.detach().cpu().long().numpy()
        return SparseTargets(
            form=self.form,
            ids=torch.from_numpy(self.ids[idx].astype(np.int64)),
            log_weights=torch.from_numpy(self.logw[idx].astype(np.float32)),
            aux=torch.from_numpy(np.asarray(self.aux[idx])),
            temperature=self.temperature,
            num_classes=self.num_classes,
        )

    def to(self, device: torch.device | str) -> SparseCachedTeacher:
        """Kept on the host (memory-mapped); each lookup's few (B, T, k) rows move to the batch's device."""
        return self

    def __call__(self, batch: dict[str, torch.Tensor]) -> SparseTargets:
        if "index" not in batch:
            raise ConfigError(
                "a cached teacher needs batch['index'] (sample positions in the split), which TensorLoader "
                "yields; pass batches from TensorLoader or use the live teacher (teacher_cache=off)."
            )
        labels = batch.get("labels")
        targets = self.lookup(batch["index"])
        return targets.to(labels.device) if labels is not None else targets


def build_sparse_cache(
    teacher: nn.Module,
    split: SampleSplit,
    directory: str | Path,
    *,
    key: str,
    form: str,
    k: int,
    temperature: float = 1.0,
    proposal_temperature: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Run the frozen `teacher` over `split` once and write a sparse cache of `form` atomically.

    Args:
        teacher: a sequence model, (B, T) ids -> (B, T, V) logits (frozen here).
        split: its inputs, in the order `batch["index"]` refers to.
        directory: the final directory; written as a temporary one and renamed.
        key: the fingerprint recorded in the metadata.
        form: "topk" or "sampled" (`sparse_rows`).
        k: tokens per position, 1 <= k <= V (topk) or k >= 1 (sampled, draws with replacement).
        temperature: the KD temperature the weights are for.
        proposal_temperature: sampled only: the proposal's temperature (None: the teacher at T).
        seed: sampled only: the draws' seed.
        batch_size: samples per teacher forward pass.
        device: where the teacher runs.
        extra_meta: more JSON-friendly fields to record.

    Returns:
        `directory`.

    Raises:
        ConfigError: a teacher without (B, T, V) outputs, or k out of range.
    """
    final = Path(directory)
    freeze(teacher)
    device = torch.device(device)
    teacher.to(device)
    probe = _teacher_logits(teacher, split.head(1), device)
    if probe.ndim != 3:
        raise ConfigError(
            f"a {form} teacher cache stores per-position targets of a sequence model's (B, T, V) logits, "
            f"but the teacher returned {tuple(probe.shape)}; use teacher_cache_topk for classifiers."
        )
    num_classes, positions, n = int(probe.shape[-1]), int(probe.shape[1]), len(split)
    if k < 1 or (form == "topk" and k > num_classes):
        raise ConfigError(f"teacher_cache_k must be in [1, {num_classes}] (the vocabulary), got {k}.")
    id_dtype = _id_dtype(num_classes)
    generator = torch.Generator().manual_seed(seed)
    with atomic_cache_dir(final, complete=lambda path: _read_meta(path) is not None) as tmp:
        ids = np.memmap(tmp / _IDS, id_dtype, "w+", shape=(n, positions, k))
        logw = np.memmap(tmp / _LOGW, np.float16, "w+", shape=(n, positions, k))
        aux = np.memmap(tmp / _AUX, np.float32, "w+", shape=(n, positions))
        for start, batch in zip(range(0, n, batch_size), split.batches(batch_size), strict=True):
            logits = _teacher_logits(teacher, batch["inputs"], device)
            if logits.shape[1:] != probe.shape[1:]:
                raise ConfigError(
                    f"the teacher returned {tuple(logits.shape)} logits for samples {start}.., but "
                    f"{tuple(probe.shape)} for the first: a cache needs every sample padded to the same length."
                )
            i, w, a = sparse_rows(logits, form, k, temperature, proposal_temperature, generator)
            stop = start + logits.shape[0]
            ids[start:stop], logw[start:stop], aux[start:stop] = (
                i.numpy().astype(id_dtype),
                w.half().numpy(),
                a.numpy(),
            )
        for arr in (ids, logw, aux):
            arr.flush()
        del ids, logw, aux
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": key,
            "form": form,
            "k": k,
            "temperature": float(temperature),
            "proposal_temperature": proposal_temperature,
            "seed": seed,
            "rows": n,
            "positions": positions,
            "num_classes": num_classes,
            "id_dtype": id_dtype.name,
            "bytes_per_token": bytes_per_token(form, num_classes, k),
            "teacher": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra_meta or {}),
        }
        atomic_write_json(tmp / _META, meta)
    return final


def open_or_build_sequence(
    teacher: nn.Module,
    data: DataBundle,
    *,
    form: str = "auto",
    k: int = 16,
    temperature: float = 1.0,
    proposal_temperature: float | None = None,
    seed: int = 0,
    augment: str = "none",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[CachedTeacher | SparseCachedTeacher, CacheInfo]:
    """The sequence teacher cache of `form` for (teacher, data.train): reused when it exists, else built.

    Args:
        teacher: a sequence model ((B, T) -> (B, T, V)).
        data: a language-modelling bundle (every train sample has the same T).
        form: "full", "topk", "sampled" or "auto" (`resolve_form`: full for V <= 1024, else sampled).
        k: tokens per position of the sparse forms.
        temperature: the KD temperature (the sparse forms store their weights at it).
        proposal_temperature: sampled only: draw from the teacher at this temperature, weighting by
            p_T / r (None: draw from p_T).
        seed: sampled only: the draws' seed.
        augment, cache_dir, batch_size, device: as in `distil.teachers.cache.open_or_build`.

    Returns:
        (a `CachedTeacher` for "full" - dense (B, T, V) logits - or a `SparseCachedTeacher`, its info).
    """
    form = resolve_form(form, vocab_size(data))
    if form == "full":
        cached, info = open_or_build(
            teacher, data, augment=augment, cache_dir=cache_dir, batch_size=batch_size, device=device
        )
        if cached.positions is None:
            raise ConfigError(
                "teacher_cache_form is for sequence models ((B, T, V) outputs), but the teacher returned "
                "(B, K) logits; leave teacher_cache_form at auto for classifiers."
            )
        return cached, info
    start = time.perf_counter()
    settings = {
        "form": form,
        "k": k,
        "temperature": round(float(temperature), 6),
        "proposal_temperature": proposal_temperature,
        "seed": seed if form == "sampled" else None,
    }
    key = fingerprint(teacher, data, augment=augment, form=settings)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = root / key[:32]
    meta = _read_meta(directory)
    hit = meta is not None and meta.get("fingerprint") == key and meta.get("rows") == len(data.train)
    if not hit:
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        build_sparse_cache(
            teacher,
            data.train,
            directory,
            key=key,
            form=form,
            k=k,
            temperature=temperature,
            proposal_temperature=proposal_temperature,
            seed=seed,
            batch_size=batch_size,
            device=device,
            extra_meta={"data": data.describe(), "augment": augment},
        )
    sparse = SparseCachedTeacher(directory)
    info = CacheInfo(
        path=str(directory),
        fingerprint=key,
        hit=hit,
        seconds=round(time.perf_counter() - start, 3),
        rows=len(sparse),
        num_classes=sparse.num_classes,
        topk=k if form == "topk" else None,
        positions=sparse.positions,
        form=form,
        bytes_per_token=float(sparse.bytes_per_token),
    )
    return sparse, info


def sparse_cache_blocker(loss_fn: Any) -> str | None:
    """Why `loss_fn` cannot train from a topk/sampled cache (None when it can).

    A sparse cache serves the `kd` term (and terms that need no teacher, such as `ce`) at one
    temperature: the weights are stored at it.
    """
    terms = getattr(loss_fn, "terms", None)
    if terms is None:
        return "the loss is not a composed loss of registered terms (only the kd term reads sparse targets)"
    from distil.losses.logit import KDTerm

    others = [name for name, term in terms.items() if term.needs_teacher and not isinstance(term, KDTerm)]
    if others:
        return f"terms {', '.join(others)} need the teacher's full logits (only kd reads sparse targets)"
    schedule = getattr(loss_fn, "temperatures", None)
    temps = schedule() if schedule is not None else ()
    if len(temps) > 1:
        return f"the temperature follows a schedule {list(temps)}, but sparse targets are stored at one"
    return None


def open_run_cache(
    teacher: nn.Module,
    data: DataBundle,
    loss_fn: Any,
    *,
    form: str,
    k: int,
    augment: str = "none",
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> tuple[CachedTeacher | SparseCachedTeacher, CacheInfo]:
    """The sequence cache a distillation run uses: `open_or_build_sequence` with the loss's temperature.

    "auto" resolves by vocabulary (`resolve_form`) and falls back to "full" when the loss cannot use
    sparse targets (`sparse_cache_blocker`); an explicit "topk"/"sampled" with such a loss is an error.

    Raises:
        ConfigError: an explicit sparse form the loss cannot train from, or the errors of
            `open_or_build_sequence`.
    """
    chosen = resolve_form(form, vocab_size(data))
    if chosen != "full":
        blocker = sparse_cache_blocker(loss_fn)
        if blocker is not None and form != "auto":
            raise ConfigError(
                f"teacher_cache_form={form} cannot serve this loss: {blocker}. Fix: teacher_cache_form=full "
                "(or auto), or a kd-only loss at one temperature (no kd.temperature_final)."
            )
        chosen = "full" if blocker is not None else chosen
    current = getattr(loss_fn, "current_temperature", None)
    temperature = float(current()) if current is not None else 1.0
    return open_or_build_sequence(
        teacher,
        data,
        form=chosen,
        k=k,
        temperature=temperature,
        augment=augment,
        cache_dir=cache_dir,
        device=device,
    )
