"""Distillation between models with different tokenizers: ULD and the chunk-aligned likelihood loss (ALM).

Per-token terms (kd, rkl, js, ...) compare two distributions id by id, which means nothing when the ids
belong to different vocabularies (clamping one model's ids into the other's vocabulary, as some tools do,
trains on garbage). The terms here compare what does correspond, by the byte alignment of
`distil.data.alignment`:

* ``alm`` (an approximate likelihood match over an exact alignment): for each chunk of text that both
  tokenizers split at its ends, the student's and the teacher's log-likelihood of the chunk (sums of their
  token log-probs over the chunk's tokens: each the probability of *its own token sequence* for the same
  bytes after the same bytes, not of the bytes under every tokenization) are compared by a binarised
  f-divergence, as in ALM (Minixhofer et al. 2025): the KL between the Bernoulli distributions with
  probabilities ``p_T = exp(l_T)`` and ``p_S = exp(l_S)`` ("is the next text this chunk?"); option
  ``distance: abs`` uses ``|l_T - l_S|`` instead. With one tokenizer every token is a chunk.
* ``uld`` (the simple baseline; Boizard et al. 2024): at the first position of each chunk both models
  predict the start of the same text after the same text; their probability vectors, sorted in decreasing
  order and the shorter padded with zeros, are compared by the Wasserstein-1 distance between the two
  rank distributions (sum of absolute differences), ignoring which token is which.

Both reduce over the chunks whose student positions all count (the batch's mask and labels: completion
tokens only). Each also reports ``aligned_fraction``, the share of the batch's counted (completion)
positions that lie in compared chunks, which the run's epoch record averages (`train_aligned_fraction`);
a first batch that compares none stops the run (`ChunkTerm.report_coverage`). The teacher's output is a :class:`CrossTokenizerOutput` (the teacher's logits on its own
tokens with the batch's `Alignment`, from `distil.teachers.crosstok.CrossTokenizerTeacher`), plain
logits of the student's own tokenizer (the identity alignment), or :class:`ChunkTargets`, the teacher's
values per chunk read from a teacher cache. Each loss is computed in two steps, live and cached alike:
the teacher's values per chunk (`teacher_chunk_logprob`, `teacher_sorted_probs`), then the loss on them
(`alm_from_chunks`, `uld_from_sorted`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from distil.data.alignment import NO_CHUNK, Alignment, identity_alignment
from distil.errors import ConfigError, DataError
from distil.losses.registry import Term, TermContext, TermInputs, register_loss

CROSS_TOKENIZER_TERMS = ("uld", "alm")
"""The teacher terms that work across tokenizers (with `ce`, which needs no teacher)."""

ALIGNED_FRACTION = "aligned_fraction"
"""The name of the scalar the cross-tokenizer terms report: compared completion positions / completion
positions of the batch (`aligned_positions`)."""


@dataclass
class CrossTokenizerOutput:
    """A teacher's output on its own tokenization of the batch's text.

    Attributes:
        logits: (B, U, V_t) the teacher's logits at its positions.
        alignment: which teacher and student positions predict tokens of which chunk.
    """

    logits: torch.Tensor
    alignment: Alignment


@dataclass
class ChunkTargets:
    """A cached cross-tokenizer teacher's output: per chunk of the batch, what `alm` and `uld` need of it.

    Read from a teacher cache (`distil.teachers.crosstok.CachedCrossTokenizerTeacher`) instead of running
    the teacher: the student side of the batch's alignment and the teacher's values per chunk.

    Attributes:
        student_targets: (B, T) the token each student position predicts.
        student_chunks: (B, T) the chunk of that token, `NO_CHUNK` where none.
        num_chunks: chunks in the batch.
        logprob: (num_chunks,) the teacher's log-likelihood of each chunk (`teacher_chunk_logprob`).
        sorted_probs: (num_chunks, len(temperatures), k) the teacher's k largest probabilities at each
            chunk's first position, decreasing, per stored temperature (`teacher_sorted_probs`); None
            when the cache keeps none (a loss without `uld`).
        temperatures: the temperatures of `sorted_probs`.
    """

    student_targets: torch.Tensor
    student_chunks: torch.Tensor
    num_chunks: int
    logprob: torch.Tensor
    sorted_probs: torch.Tensor | None = None
    temperatures: tuple[float, ...] = ()

    def sorted_at(self, temperature: float) -> torch.Tensor:
        """(num_chunks, k) the stored sorted probabilities at `temperature`.

        Raises:
            ConfigError: a cache that keeps none at that temperature (built for another loss).
        """
        t = round(float(temperature), 6)
        if self.sorted_probs is None or t not in self.temperatures:
            raise ConfigError(
                f"this cross-tokenizer teacher cache keeps the teacher's sorted probabilities (uld) at "
                f"temperatures {list(self.temperatures)}, not {t}; it was built for another loss. Fix: open "
                "it with the run's loss (distill does), or teacher_cache.mode=off."
            )
        return self.sorted_probs[:, self.temperatures.index(t)]


def per_token_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position: (B, T, V), (B, T) -> (B, T) float32 (0 where target < 0)."""
    safe = targets.clamp(min=0).unsqueeze(-1)
    picked = logits.gather(-1, safe).squeeze(-1).float()
    return torch.where(targets >= 0, picked - torch.logsumexp(logits.float(), dim=-1), 0.0)


def chunk_logprob(logprob: torch.Tensor, chunks: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """The sum of per-token log-probs over each chunk: (B, T), (B, T) -> (num_chunks,)."""
    keep = chunks != NO_CHUNK
    out = torch.zeros(num_chunks, dtype=logprob.dtype, device=logprob.device)
    return out.index_add(0, chunks[keep], logprob[keep])


def counted_chunks(chunks: torch.Tensor, mask: torch.Tensor | None, num_chunks: int) -> torch.Tensor:
    """(num_chunks,) bool: chunks with student positions, all of which count under `mask` ((B, T) bool)."""
    keep = chunks != NO_CHUNK
    ids = chunks[keep]
    seen = torch.zeros(num_chunks, dtype=torch.bool, device=chunks.device).index_fill(0, ids, True)
    if mask is None:
        return seen
    blocked = (~mask.bool().to(chunks.device))[keep]
    bad = torch.zeros(num_chunks, dtype=torch.bool, device=chunks.device).index_fill(0, ids[blocked], True)
    return seen & ~bad


def aligned_positions(
    chunks: torch.Tensor, mask: torch.Tensor | None, num_chunks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(compared, counted): the batch's counted student positions ((B, T) `mask`, None: all) that lie in a
    compared chunk (`counted_chunks`), and all its counted positions; two scalar tensors (no host sync)."""
    counts = torch.ones_like(chunks, dtype=torch.bool) if mask is None else mask.bool().to(chunks.device)
    counted = counted_chunks(chunks, mask, num_chunks)
    compared = (chunks != NO_CHUNK) & counted[chunks.clamp(min=0)] & counts
    return compared.sum(), counts.sum()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def binary_kl(log_p: torch.Tensor, log_q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bernoulli(p) || Bernoulli(q)) from log p and log q, elementwise (both clamped below log 1)."""
    top = math.log1p(-eps)
    log_p, log_q = log_p.clamp(max=top), log_q.clamp(max=top)
    p = log_p.exp()
    return p * (log_p - log_q) + (1 - p) * (log1mexp(log_p) - log1mexp(log_q))


def teacher_chunk_logprob(teacher_logits: torch.Tensor, alignment: Alignment) -> torch.Tensor:
    """The teacher's log-likelihood of each chunk (what `alm` needs of it): (B, U, V_t) -> (num_chunks,)."""
    with torch.no_grad():
        logprob = per_token_logprob(teacher_logits, alignment.teacher_targets)
        return chunk_logprob(logprob, alignment.teacher_chunks, alignment.num_chunks)


def alm_from_chunks(
    student_logits: torch.Tensor,
    teacher_chunks: torch.Tensor,
    student_targets: torch.Tensor,
    student_chunks: torch.Tensor,
    num_chunks: int,
    mask: torch.Tensor | None = None,
    *,
    distance: str = "binary_kl",
) -> torch.Tensor:
    """`alm_loss` from the teacher's chunk log-likelihoods (live, or read from a teacher cache).

    Args:
        student_logits: (B, T, V_s).
        teacher_chunks: (num_chunks,) l_T of each chunk (`teacher_chunk_logprob`).
        student_targets, student_chunks: (B, T) the alignment's student side.
        num_chunks: chunks in the batch.
        mask, distance: as in `alm_loss`.
    """
    if distance not in ("binary_kl", "abs"):
        raise ConfigError(f"alm distance must be 'binary_kl' or 'abs', got {distance!r}")
    n = num_chunks
    l_s = chunk_logprob(per_token_logprob(student_logits, student_targets), student_chunks, n)
    counted = counted_chunks(student_chunks, mask, n)
    # Uncounted chunks may hold -inf (a token the model rules out): replace them before the distance, so
    # neither the value nor the gradient sees them, and average without indexing (no host sync).
    l_s = torch.where(counted, l_s, -1.0)
    l_t = torch.where(counted, teacher_chunks.to(l_s.device, l_s.dtype), -1.0)
    d = binary_kl(l_t, l_s) if distance == "binary_kl" else (l_t - l_s).abs()
    return counted_mean(d, counted)


def alm_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alignment: Alignment,
    mask: torch.Tensor | None = None,
    *,
    distance: str = "binary_kl",
) -> torch.Tensor:
    """The chunk-aligned likelihood loss: the mean over counted chunks of d(l_T, l_S).

    Args:
        student_logits: (B, T, V_s).
        teacher_logits: (B, U, V_t), at the alignment's teacher positions.
        alignment: the chunks of both sides' positions.
        mask: (B, T) bool, the student positions that count (None: all); a chunk counts when all of its
            student positions do.
        distance: ``binary_kl`` (KL between Bernoulli(exp l_T) and Bernoulli(exp l_S)) or ``abs``
            (|l_T - l_S|).

    Returns:
        A scalar; 0 (with a gradient path) when no chunk counts.
    """
    return alm_from_chunks(
        student_logits,
        teacher_chunk_logprob(teacher_logits, alignment),
        alignment.student_targets,
        alignment.student_chunks,
        alignment.num_chunks,
        mask,
        distance=distance,
    )


def _first_positions(chunks: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """(num_chunks,) the flat index of each chunk's first position (a large value where it has none)."""
    flat = chunks.reshape(-1)
    keep = flat != NO_CHUNK
    index = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((num_chunks,), flat.numel(), dtype=torch.long, device=flat.device)
    return first.scatter_reduce(0, flat[keep], index[keep], reduce="amin")


def teacher_sorted_probs(
    teacher_logits: torch.Tensor,
    alignment: Alignment,
    temperature: float,
    k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `uld` needs of the teacher: its probabilities at each chunk's first position, sorted.

    Args:
        teacher_logits: (B, U, V_t).
        alignment: the chunks of both sides' positions.
        temperature: the softening of the distribution.
        k: keep the k largest (None: all V_t).

    Returns:
        ((num_chunks, min(k, V_t)) probabilities in decreasing order, (num_chunks,) the probability left
        out: the tail beyond k, 0 with all kept). Rows of chunks without a teacher position are 0.
    """
    n, width = alignment.num_chunks, teacher_logits.shape[-1]
    keep = width if k is None else min(k, width)
    with torch.no_grad():
        at = _first_positions(alignment.teacher_chunks, n)
        has = at < alignment.teacher_chunks.numel()
        rows = teacher_logits.reshape(-1, width)[at.clamp(max=max(0, alignment.teacher_chunks.numel() - 1))]
        p = torch.softmax(rows.float() / temperature, dim=-1)
        head = p.topk(keep, dim=-1).values if keep < width else p.sort(dim=-1, descending=True).values
        tail = (p.sum(-1) - head.sum(-1)).clamp(min=0.0) if keep < width else torch.zeros_like(p[:, 0])
        head = torch.where(has.unsqueeze(-1), head, 0.0)
        return head, torch.where(has, tail, 0.0)


def counted_mean(values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """The mean of (C,) finite `values` over the `counted` rows; 0 (with a gradient path) when none count.

    A weighted sum, not ``values[counted].mean()``: boolean indexing makes the shape depend on the data,
    which costs a device-to-host sync every step.
    """
    kept = torch.where(counted, values, 0.0)
    return kept.sum() / counted.sum().clamp(min=1).to(values.dtype)


def _student_sorted(
    student_logits: torch.Tensor, student_chunks: torch.Tensor, num_chunks: int, temperature: float
) -> torch.Tensor:
    """(num_chunks, V_s) the student's probabilities at each chunk's first position, decreasing (a chunk
    without a student position reads position 0; callers leave it uncounted)."""
    flat = student_logits.reshape(-1, student_logits.shape[-1])
    s_at = _first_positions(student_chunks, num_chunks).clamp(max=flat.shape[0] - 1)
    return torch.softmax(flat[s_at].float() / temperature, dim=-1).sort(dim=-1, descending=True).values


def sorted_w1(p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """The mean over rows of `sorted_w1_rows` (ULD's distance for (C, V_s) and (C, k) sorted rows)."""
    return sorted_w1_rows(p_s, p_t).mean()


def sorted_w1_rows(p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """(C,) sum_j |p_s,j - p_t,j| per row for (C, V_s) and (C, k) sorted probabilities, the
    teacher's beyond k counted as 0 (the student's beyond k then add their sum).

    With the teacher's k largest probabilities only, this differs from the W1 of the full vectors by at
    most the teacher's tail mass per row (triangle inequality), so the mean by at most the rows' mean
    tail mass; with k = V_t it is the full W1 (the shorter vector padded with zeros).
    """
    p_t = p_t.to(p_s.device, p_s.dtype)
    k = p_t.shape[-1]
    if p_s.shape[-1] < k:
        p_s = F.pad(p_s, (0, k - p_s.shape[-1]))
    return (p_s[:, :k] - p_t).abs().sum(-1) + p_s[:, k:].sum(-1)


def uld_from_sorted(
    student_logits: torch.Tensor,
    teacher_sorted: torch.Tensor,
    student_chunks: torch.Tensor,
    num_chunks: int,
    mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """`uld_loss` from the teacher's sorted probabilities per chunk read from a teacher cache (`sorted_w1`).

    Args:
        student_logits: (B, T, V_s).
        teacher_sorted: (num_chunks, k) the teacher's probabilities at each chunk's first position, in
            decreasing order (`teacher_sorted_probs`; k = V_t: the exact loss).
        student_chunks: (B, T) the alignment's student side.
        num_chunks: chunks in the batch.
        mask, temperature: as in `uld_loss`.
    """
    counted = counted_chunks(student_chunks, mask, num_chunks)
    p_s = _student_sorted(student_logits, student_chunks, num_chunks, temperature)
    return counted_mean(sorted_w1_rows(p_s, teacher_sorted), counted)


def uld_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alignment: Alignment,
    mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Universal logit distillation: W1 between sorted probability vectors at each chunk's first positions.

    Args:
        student_logits: (B, T, V_s).
        teacher_logits: (B, U, V_t).
        alignment: the chunks of both sides' positions.
        mask: (B, T) bool, the student positions that count (None: all).
        temperature: both distributions are softened by it (ULD uses 1).

    Returns:
        The mean over counted chunks of sum_k |sort(p_s)_k - sort(p_t)_k| (scalar; the shorter vector
        padded with zeros).
    """
    p_t, _ = teacher_sorted_probs(teacher_logits, alignment, temperature)
    return uld_from_sorted(
        student_logits, p_t, alignment.student_chunks, alignment.num_chunks, mask, temperature=temperature
    )


def _aligned(inputs: TermInputs) -> tuple[torch.Tensor, Alignment] | ChunkTargets:
    """The teacher's logits and the alignment (the cross-tokenizer output's, or the identity one), or the
    per-chunk targets a cross-tokenizer teacher cache read."""
    teacher: Any = inputs.teacher_logits
    if isinstance(teacher, ChunkTargets):
        return teacher
    if isinstance(teacher, CrossTokenizerOutput):
        return teacher.logits, teacher.alignment
    if isinstance(teacher, torch.Tensor) and teacher.dim() == 3 and inputs.labels.dim() == 2:
        return teacher, identity_alignment(inputs.labels)
    raise ConfigError(
        "the uld and alm terms compare language models token by token: they need (B, T, V) teacher logits "
        f"(or a cross-tokenizer teacher's output), got {type(teacher).__name__}; a sparse teacher cache does "
        "not serve them (teacher_cache.mode: off)."
    )


def _student_side(aligned: tuple[torch.Tensor, Alignment] | ChunkTargets) -> tuple[torch.Tensor, int]:
    """The student's chunk per position and the number of chunks, live or cached."""
    if isinstance(aligned, ChunkTargets):
        return aligned.student_chunks, aligned.num_chunks
    return aligned[1].student_chunks, aligned[1].num_chunks


class ChunkTerm(Term):
    """A cross-tokenizer term: it reports the share of the batch's counted positions it compares.

    `report` holds ``{ALIGNED_FRACTION: tensor}`` after each forward (`ComposedLoss` adds it to the step's
    record). The first batch is checked: when it has counted positions but none lies in a compared chunk,
    the term would train nothing, silently, for the whole run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.report: dict[str, torch.Tensor] = {}
        self._checked = False

    def report_coverage(self, chunks: torch.Tensor, mask: torch.Tensor | None, num_chunks: int) -> None:
        """Record the batch's aligned fraction; on the first batch, refuse one that compares nothing.

        Raises:
            DataError: the first batch has counted positions and none of them is compared.
        """
        compared, counted = aligned_positions(chunks, mask, num_chunks)
        self.report = {ALIGNED_FRACTION: compared.float() / counted.clamp(min=1).float()}
        if self._checked:
            return
        self._checked = True  # one host sync, on the first batch only
        if int(counted) > 0 and int(compared) == 0:
            raise DataError(
                f"the cross-tokenizer terms compare none of the first batch's {int(counted)} trained positions: "
                "no chunk of their text is read whole by both tokenizers, so alm/uld would be 0 on every "
                "batch. Causes: trained tokens that spell no text (special tokens only), rows the teacher "
                "cannot read (invalid UTF-8, beyond its context length), or a student tokenizer whose padding "
                "id is not its tokenizer's pad token. Fix: check the data's labels and both tokenizers "
                "(kd.teacher_tokenizer), or train without the teacher terms."
            )


@register_loss("alm")
class ALMTerm(ChunkTerm):
    """Chunk-aligned likelihood matching across tokenizers (`alm_loss`).

    Options:
        distance: ``binary_kl`` (default, ALM's binarised KL) or ``abs``.
    """

    uses_mask = True

    def __init__(self, ctx: TermContext, distance: str = "binary_kl") -> None:
        super().__init__()
        if distance not in ("binary_kl", "abs"):
            raise ConfigError(f"alm option distance must be 'binary_kl' or 'abs', got {distance!r}")
        self.distance = distance

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        aligned = _aligned(inputs)
        chunks, n = _student_side(aligned)
        self.report_coverage(chunks, inputs.mask, n)
        if isinstance(aligned, ChunkTargets):
            return alm_from_chunks(
                inputs.student_logits,
                aligned.logprob,
                aligned.student_targets,
                aligned.student_chunks,
                aligned.num_chunks,
                inputs.mask,
                distance=self.distance,
            )
        teacher, alignment = aligned
        return alm_loss(inputs.student_logits, teacher, alignment, inputs.mask, distance=self.distance)


@register_loss("uld")
class ULDTerm(ChunkTerm):
    """Universal logit distillation across tokenizers (`uld_loss`), at the loss's temperature."""

    uses_mask = True

    def __init__(self, ctx: TermContext) -> None:
        super().__init__()

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        aligned = _aligned(inputs)
        chunks, n = _student_side(aligned)
        self.report_coverage(chunks, inputs.mask, n)
        if isinstance(aligned, ChunkTargets):
            return uld_from_sorted(
                inputs.student_logits,
                aligned.sorted_at(inputs.temperature),
                aligned.student_chunks,
                aligned.num_chunks,
                inputs.mask,
                temperature=inputs.temperature,
            )
        teacher, alignment = aligned
        return uld_loss(
            inputs.student_logits, teacher, alignment, inputs.mask, temperature=inputs.temperature
        )


def check_cross_tokenizer_terms(weights: dict[str, float]) -> None:
    """Refuse teacher terms that compare ids one by one when the teacher has another tokenizer.

    Raises:
        ConfigError: naming the terms and the ones that work across tokenizers.
    """
    from distil.losses.registry import LOSSES

    wrong = sorted(n for n in weights if n not in CROSS_TOKENIZER_TERMS and LOSSES.get(n).needs_teacher)
    if wrong:
        raise ConfigError(
            f"kd.teacher_tokenizer is set (the teacher reads the text with another tokenizer), but terms "
            f"{', '.join(wrong)} compare the two models' outputs id by id, which differ between vocabularies. "
            f"Fix: use the cross-tokenizer terms {' or '.join(CROSS_TOKENIZER_TERMS)} (with ce), e.g. "
            "kd.terms: {ce: 0.3, alm: 0.7}."
        )


__all__ = [
    "ALIGNED_FRACTION",
    "CROSS_TOKENIZER_TERMS",
    "ALMTerm",
    "ChunkTargets",
    "ChunkTerm",
    "CrossTokenizerOutput",
    "ULDTerm",
    "aligned_positions",
    "alm_from_chunks",
    "alm_loss",
    "binary_kl",
    "check_cross_tokenizer_terms",
    "chunk_logprob",
    "counted_chunks",
    "counted_mean",
    "per_token_logprob",
    "sorted_w1",
    "sorted_w1_rows",
    "teacher_chunk_logprob",
    "teacher_sorted_probs",
    "uld_from_sorted",
    "uld_loss",
]
