"""Sparse teacher caches for sequence models: k (token, weight) pairs per position instead of V logits.

A language model's teacher outputs are (N, T, V): at V = 32k and fp16 that is 64 KB per token, too much
to store for a real corpus. Two row formats of the one store (`distil.teachers.store`) keep k tokens per
position instead (their losses: `distil.losses.sparse`):

- ``topk``: the teacher's k largest logits and their ids, plus one tail-fill logit per temperature: the
  same top-k a classifier's cache stores. Read as sparse targets, it gives log p_T of the k ids and the
  tail mass 1 - sum_topk p_T, exactly as a cache of those numbers would (up to float16 rounding of the
  logits). What every caching tool stores; biased (Anshumann et al., ACL 2025, arXiv 2503.16870).
- ``sampled``: k i.i.d. draws from a proposal r (the teacher's distribution at the KD temperature T, or
  at `proposal_temperature`), kept as the distinct ids drawn with their counts (k one-byte counts;
  unused slots count 0), with a proposal the log-ratio log(p_T / r) of each, and the teacher's negative
  entropy (for the KL's value). Read back as weights count * p_T / (k r): exactly count / k (summing to
  1) for the default proposal. Unbiased in loss and gradient, at fewer bytes per token than top-k.

The third form, ``full`` (all V logits, fp16; for small vocabularies), is read densely
(`distil.teachers.cache.CachedTeacher`), which `open_or_build_sequence` returns for ``form="full"``.
All three share one key, one metadata reader, one atomic build and memory-mapped reads by
`batch["index"]`.

Bytes per token (`bytes_per_token`): full 2V; sampled k * (b + 1) + 4 (k * (b + 3) + 4 with a
proposal), where b is 2 for V <= 65536 (uint16 ids) and 4 above; topk k * (b + 2) + 4 per stored
temperature (one at T = 1, two otherwise: T and 1). At V = 259 (bytes): full 518, k=16 topk 68,
sampled 52.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.data import DataBundle
from distil.data.batch import LABELS
from distil.errors import ConfigError
from distil.losses.sparse import SparseTargets
from distil.registry import unknown_name_message
from distil.teachers import store
from distil.teachers.cache import CachedTeacher, CacheInfo, batch_rows, open_or_build
from distil.teachers.live import freeze
from distil.teachers.store import FullLogits, RowFormat, Sampled, TopK

SEQUENCE_FORMS = ("full", "topk", "sampled")
# `auto` keeps all logits while they are cheap (2V bytes per token), else samples.
AUTO_FULL_MAX_VOCAB = 1024


def resolve_form(form: str, num_classes: int) -> str:
    """`form`, or for "auto": "full" when V <= 1024 (2V bytes per token), else "sampled".

    Raises:
        ConfigError: an unknown form.
    """
    if form == "auto":
        return "full" if num_classes <= AUTO_FULL_MAX_VOCAB else "sampled"
    if form not in SEQUENCE_FORMS:
        raise ConfigError(unknown_name_message("teacher_cache.form", form, ("auto", *SEQUENCE_FORMS)))
    return form


def vocab_size(data: DataBundle) -> int:
    """V of a language-modelling bundle (its token split's `vocab_size`), else its class count."""
    return int(getattr(data.train, "vocab_size", 0) or data.num_classes)


def sequence_format(
    form: str,
    k: int,
    temperature: float = 1.0,
    proposal_temperature: float | None = None,
    seed: int = 0,
) -> RowFormat:
    """The row format of `form` ("full", "topk", "sampled") for a sequence run at `temperature`.

    Raises:
        ConfigError: an unknown form.
    """
    if form == "full":
        return FullLogits()
    if form == "topk":
        return TopK(k, (temperature,))
    if form == "sampled":
        return Sampled(k, temperature, proposal_temperature, seed)
    raise ConfigError(unknown_name_message("teacher_cache.form", form, SEQUENCE_FORMS))


def bytes_per_token(
    form: str,
    num_classes: int,
    k: int | None = None,
    temperatures: tuple[float, ...] = (1.0,),
    proposal_temperature: float | None = None,
) -> int:
    """Stored bytes per position of a sequence cache of `form` over `num_classes` tokens.

    full: 2V (fp16 logits); topk: k * (id bytes + 2) + 4 per stored temperature (`temperatures` and
    1); sampled: k * (id bytes + 1) + 4, k * (id bytes + 3) + 4 with a proposal (its row format's
    `bytes_per_row`).

    Raises:
        ConfigError: an unknown form, or a sparse form without k.
    """
    if form not in SEQUENCE_FORMS:
        raise ConfigError(unknown_name_message("teacher_cache.form", form, SEQUENCE_FORMS))
    if form != "full" and k is None:
        raise ConfigError(f"bytes_per_token of form {form!r} needs k")
    if form == "topk":
        return TopK(k or 1, temperatures).bytes_per_row(num_classes)
    return sequence_format(form, k or 1, proposal_temperature=proposal_temperature).bytes_per_row(num_classes)


def sparse_rows(
    logits: torch.Tensor,
    form: str,
    k: int,
    temperature: float = 1.0,
    proposal_temperature: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sparse targets of (..., V) teacher logits, computed directly: ids (..., k), log-weights
    (..., k), aux (...) - the reference a cache's rows are checked against.

    Args:
        logits: teacher logits, any leading shape.
        form: "topk" (the k most probable tokens, log p_T, tail mass) or "sampled" (k draws from the
            proposal, log p_T / (k r), negative entropy sum p_T log p_T).
        k: tokens per position.
        temperature: T of the KD loss; p_T = softmax(logits / T).
        proposal_temperature: sampled only: draw from softmax(logits / this) (None: from p_T itself).
        generator: sampled only: the random draws' generator.
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
    logw = logp.gather(-1, ids) - logr.gather(-1, ids) - torch.log(torch.tensor(float(k), dtype=z.dtype))
    p = logp.exp()
    aux = torch.special.xlogy(p, p).sum(-1)  # 0 log 0 = 0: -inf logits (a masked vocabulary) add nothing
    return ids, logw.float(), aux.float()


class SparseCachedTeacher:
    """A `TeacherFn` over a top-k or sampled store: `cached(batch) -> SparseTargets` of `batch["index"]`.

    The arrays are read-only memory maps; a lookup reads only the rows it gathers.

    Args:
        path: a cache directory holding a top-k or sampled store.
        temperature: top-k only: the KD temperature the targets are for (one the cache stores a tail
            for; None: the highest stored). Sampled targets are for the temperature they were drawn at.

    Raises:
        ConfigError: `path` is not a complete top-k or sampled cache.
    """

    def __init__(self, path: str | Path, temperature: float | None = None) -> None:
        opened = store.open_store(path, what="sparse ")
        if not isinstance(opened.format, TopK | Sampled):
            raise ConfigError(
                f"{str(path)!r} is not a complete sparse teacher cache: it holds {opened.format.name} logits "
                "(read them with distil.teachers.cache.CachedTeacher)."
            )
        self.path = opened.path
        self.meta: dict[str, Any] = opened.meta
        self.format: TopK | Sampled = opened.format
        self.arrays = opened.arrays
        self.form: str = self.format.name
        self.k: int = self.format.k
        self.num_classes: int = opened.num_classes
        self.positions: int | None = opened.positions
        self.views: int | None = self.meta.get("views")
        self.samples: int = int(self.meta.get("samples") or opened.rows)
        if isinstance(self.format, Sampled):
            self.temperature = self.format.temperature
        else:
            t = max(self.format.temperatures) if temperature is None else float(temperature)
            self.format.column(t)  # refuse a temperature without a stored tail now, not at the first batch
            self.temperature = t

    def __len__(self) -> int:
        return int(self.meta["rows"])

    @property
    def bytes_per_token(self) -> int:
        return int(self.meta["bytes_per_token"])

    def lookup(self, index: torch.Tensor) -> SparseTargets:
        """The targets of rows `index`: ids/log-weights (B, T, k), aux (B, T), on CPU."""
        rows = index.detach().cpu().long()
        return self.format.sparse(self.arrays, rows, self.temperature, self.num_classes)

    def to(self, device: torch.device | str) -> SparseCachedTeacher:
        """Kept on the host (memory-mapped); each lookup's few (B, T, k) rows move to the batch's device."""
        return self

    def __call__(self, batch: dict[str, torch.Tensor]) -> SparseTargets:
        labels = batch.get(LABELS)
        targets = self.lookup(batch_rows(batch, self.views, self.samples))
        return targets.to(labels.device) if labels is not None else targets


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
        temperature: the KD temperature (the sparse forms serve targets at it).
        proposal_temperature: sampled only: draw from the teacher at this temperature, weighting by
            p_T / r (None: draw from p_T).
        seed: sampled only: the draws' seed.
        augment, cache_dir, batch_size, device: as in `distil.teachers.cache.open_or_build`.

    Returns:
        (a `CachedTeacher` for "full" - dense (B, T, V) logits - or a `SparseCachedTeacher`, its info).

    Raises:
        ConfigError: an unknown form, k out of range, or a teacher without (B, T, V) outputs.
    """
    form = resolve_form(form, vocab_size(data))
    if form == "full":
        cached, info = open_or_build(
            teacher, data, augment=augment, cache_dir=cache_dir, batch_size=batch_size, device=device
        )
        if cached.positions is None:
            raise ConfigError(
                "teacher_cache.form is for sequence models ((B, T, V) outputs), but the teacher returned "
                "(B, K) logits; leave teacher_cache.form at auto for classifiers."
            )
        return cached, info
    _check_sequence_teacher(teacher, data, form, device)
    fmt = sequence_format(form, k, temperature, proposal_temperature, seed)
    opened = store.open_or_build(
        teacher, data, fmt, augment=augment, cache_dir=cache_dir, batch_size=batch_size, device=device
    )
    return SparseCachedTeacher(opened.store.path, temperature), CacheInfo.of(opened)


def _check_sequence_teacher(teacher: nn.Module, data: DataBundle, form: str, device: Any) -> None:
    """Refuse a teacher without (B, T, V) outputs before a sparse cache is built for it."""
    freeze(teacher)
    teacher.to(torch.device(device))
    probe = store.teacher_logits(teacher, data.train.head(1), torch.device(device))
    if probe.ndim != 3:
        raise ConfigError(
            f"a {form} sequence cache stores per-position targets of a sequence model's (B, T, V) logits, "
            f"but the teacher returned {tuple(probe.shape)}; for classifiers use teacher_cache.form=topk "
            "with the dense reader (distil.teachers.cache.open_or_build(..., topk=k))."
        )


def sparse_cache_blocker(loss_fn: Any) -> str | None:
    """Why `loss_fn` cannot train from a topk/sampled cache (None when it can).

    A sparse cache serves the `kd` term (and terms that need no teacher, such as `ce`) at one
    temperature: the weights are stored at it.
    """
    from distil.losses.compose import ComposedLoss
    from distil.losses.logit import KDTerm
    from distil.losses.registry import Term

    if not isinstance(loss_fn, ComposedLoss):
        return "the loss is not a composed loss of registered terms (only the kd term reads sparse targets)"
    others = [
        name
        for name, term in loss_fn.terms.items()
        if isinstance(term, Term) and term.needs_teacher and not isinstance(term, KDTerm)
    ]
    if others:
        return f"terms {', '.join(others)} need the teacher's full logits (only kd reads sparse targets)"
    temps = loss_fn.temperatures()
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
    batch_size: int = 64,
) -> tuple[CachedTeacher | SparseCachedTeacher, CacheInfo]:
    """The sequence cache a distillation run uses: `open_or_build_sequence` with the loss's temperature.

    `batch_size`: samples per teacher pass of a build (a run passes its recipe's batch size).

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
                f"teacher_cache.form={form} cannot serve this loss: {blocker}. Fix: teacher_cache.form=full "
                "(or auto), or a kd-only loss at one temperature (no kd.temperature_final)."
            )
        chosen = "full" if blocker is not None else chosen
    from distil.losses.protocol import DistillationLoss

    temperature = float(loss_fn.current_temperature()) if isinstance(loss_fn, DistillationLoss) else 1.0
    return open_or_build_sequence(
        teacher,
        data,
        form=chosen,
        k=k,
        temperature=temperature,
        augment=augment,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
    )
