"""Fused LM head + per-token loss: the (B, T, V) logits are never materialised.

A causal LM's logits are its final hidden states (B, T, H) times the head weight (V, H). At V = 128k,
T = 2048 one (B, T, V) bf16 tensor is 512 MiB per sequence, and the naive loss keeps several of them
(student and teacher logits, their fp32 up-casts, the gradient). The fused path instead walks the
positions in chunks of rows: per chunk,

    logits  = hidden_chunk @ W^T (+ b)                 # (n, V), in the matmul dtype (autocast's, or W's)
    teacher = teacher_hidden_chunk @ W_t^T (+ b_t)     # or the chunk's rows of cached teacher logits
    value, g = row_kernel(kind, logits, teacher, ...)  # distil.losses.chunked: one kernel per loss
    grad_hidden[chunk] = g @ W ;  grad_W += g^T @ hidden_chunk (fp32 accumulator)

so at most one chunk of logits (`chunk_rows`, at least `FUSED_MIN_ROWS` rows) exists at a time, for
both models. The row kernels are the ones every other path uses (`distil.losses.chunked.KERNELS`);
only the matrix products around them are new. Several terms (e.g. kd + ce) share each chunk's logits: one head product per
chunk whatever the number of terms, and one gradient, weighted by the terms' weights.

The gradient is computed during forward (as `backward="stored"` of the chunked losses and Liger-Kernel's
fused linear losses) and kept until backward: (N, H) for the hidden states and (V, H) fp32 for the head
(the size of the weight's own gradient). A tied head (the embedding matrix) gets this gradient added to
the embedding's by autograd, as for any weight used twice.

The model side is `distil.models.hf.HeadOutput` (what `CausalLM` returns with ``head=False``); the loss
side is `fused_terms`, which `distil.losses.compose.ComposedLoss` calls when the student gives one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from distil.losses.chunked import RowOptions, _masked, chunk_rows, row_kernel, scale
from distil.losses.functional import position_weights
from distil.models.hf import CausalLM, HeadOutput

# Rows of one fused chunk, at least: each chunk streams both heads' weights and the (V, H) gradient
# accumulator once, a cost per chunk that only more rows amortise (at V = 128k, 65-row chunks - the
# chunked path's 8M logits - ran about 40% slower than whole logits, 256-row ones as fast). Above V = 32k
# the chunks are then larger than the chunked path's: 128 MiB per fp32 temporary at V = 128k.
FUSED_MIN_ROWS = 256

# kd.fused=auto fuses the head of a separable causal LM from this vocabulary size up: below it the
# (B, T, V) logits are small next to the model's activations and the chunked path is as good.
FUSED_MIN_VOCAB = 32000
FUSED_MODES = ("auto", "on", "off")


def as_logits(output: Any) -> Any:
    """`output` itself, or the logits of a `HeadOutput` (materialised: the unfused path)."""
    return output.logits() if isinstance(output, HeadOutput) else output


class FusedPart(NamedTuple):
    """One loss term computed on the fused path.

    Attributes:
        kind: the row kernel (`distil.losses.chunked.KINDS`).
        options: its temperature, beta, smoothing.
        weight: the term's weight in the total (its gradient is scaled by it).
    """

    kind: str
    options: RowOptions
    weight: float


class _TeacherRows:
    """The teacher's logits of a chunk of rows: from its hidden states and head (never all at once), or
    sliced from (N, V) logits it already has (a full teacher cache), or none (ce alone)."""

    def __init__(self, teacher: HeadOutput | torch.Tensor | None) -> None:
        self.logits: torch.Tensor | None = None
        self.head: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        if isinstance(teacher, HeadOutput):
            dt = teacher.dtype
            bias = None if teacher.bias is None else teacher.bias.detach().to(dt)
            self.head = (teacher.rows().detach().to(dt), teacher.weight.detach().to(dt), bias)
        elif teacher is not None:
            self.logits = teacher.detach().reshape(-1, teacher.shape[-1])

    def chunk(self, a: int, b: int) -> torch.Tensor | None:
        if self.head is not None:
            hidden, weight, bias = self.head
            return F.linear(hidden[a:b], weight, bias)
        return None if self.logits is None else self.logits[a:b]


def _chunk_terms(
    parts: tuple[FusedPart, ...],
    logits: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    coefs: torch.Tensor,
    valid: torch.Tensor,
    mix: torch.Tensor,
    sums: torch.Tensor,
    grads: bool,
) -> torch.Tensor | None:
    """Every term's row kernel on one chunk's logits: adds each term's weighted values to `sums` (in
    place) and returns the chunk's (n, V) fp32 logits gradient of the weighted total (None: no grads)."""
    g: torch.Tensor | None = None
    for k, part in enumerate(parts):
        out = row_kernel(
            part.kind, logits, teacher, labels, part.options, coef=coefs[k] * mix[k] if grads else None
        )
        assert out.values is not None
        # coef is 0 on the rows that do not count; where keeps their (maybe NaN) values out of the dot.
        sums[k] += torch.dot(torch.where(valid[k], out.values, 0.0), coefs[k])
        if out.grad is not None:
            part_grad = _masked(out.grad, valid[k])
            g = part_grad if g is None else g.add_(part_grad)
        del out  # this term's temporaries go before the next term makes its own
    return g


class _FusedHeadLoss(torch.autograd.Function):
    """sum_k weight_k * sum_i w_ki * value_k(logits_i) over the rows, logits made chunk by chunk.

    Returns the weighted total (differentiable) and the per-term sums (for logging; not differentiable).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        teacher: _TeacherRows,
        labels: torch.Tensor | None,
        row_weights: torch.Tensor,
        parts: tuple[FusedPart, ...],
        rows: int,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_rows = hidden.shape[0]
        w, b, h = weight.to(dtype), None if bias is None else bias.to(dtype), hidden.to(dtype)
        valid = row_weights > 0  # (P, N)
        factors = torch.tensor([scale(p.kind, p.options.temperature) for p in parts], device=hidden.device)
        # where, not a product: a row that does not count may hold anything (NaN of a fully masked row).
        coefs = torch.where(valid, row_weights * factors.unsqueeze(1), 0.0)
        mix = torch.tensor([p.weight for p in parts], device=hidden.device, dtype=torch.float32)
        want_h, want_w, want_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grads = want_h or want_w or want_b
        grad_h = torch.empty_like(hidden) if want_h else None
        # fp32 accumulator over the chunks (bf16 partial sums would round at every chunk).
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if want_w else None
        grad_b = torch.zeros(weight.shape[0], device=weight.device, dtype=torch.float32) if want_b else None
        low_precision = want_w and dtype != torch.float32  # bf16, fp16: products rounded, sums in fp32
        product = torch.empty(weight.shape, device=weight.device, dtype=dtype) if low_precision else None
        sums = torch.zeros(len(parts), device=hidden.device, dtype=torch.float32)
        for a in range(0, n_rows, rows):
            end = min(a + rows, n_rows)
            logits = F.linear(h[a:end], w, b)
            g = _chunk_terms(
                parts,
                logits,
                teacher.chunk(a, end),
                None if labels is None else labels[a:end],
                coefs[:, a:end],
                valid[:, a:end],
                mix,
                sums,
                grads,
            )
            del logits  # one chunk's logits alive at a time
            if g is None:
                continue
            gd = g.to(dtype)
            del g
            if grad_h is not None:
                grad_h[a:end] = gd @ w
            if grad_w is not None and product is not None:
                # One reused (V, H) buffer for the chunk's product, added to the fp32 accumulator.
                grad_w.add_(torch.mm(gd.t(), h[a:end], out=product))
            elif grad_w is not None:
                grad_w.addmm_(gd.t(), h[a:end])  # fp32: straight into the accumulator
            if grad_b is not None:
                grad_b.add_(gd.sum(0, dtype=torch.float32))
            del gd
        del product
        ctx.save_for_backward(*(x if x is not None else torch.empty(0) for x in (grad_h, grad_w, grad_b)))
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(sums)
        total = (sums * mix).sum()
        return total, sums

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, grad_sums: torch.Tensor) -> tuple[Any, ...]:
        del grad_sums  # the per-term sums are for logging only
        if getattr(ctx, "consumed", False):
            raise RuntimeError(
                "the fused LM loss hands its gradient over once; a second backward is not supported"
            )
        ctx.consumed = True
        factor = grad_total.float()
        out: list[torch.Tensor | None] = []
        for saved, present, dtype in zip(ctx.saved_tensors, ctx.present, ctx.dtypes, strict=True):
            out.append(saved.mul_(factor).to(dtype) if present else None)
        return (*out, *(None,) * 6)


def part_weights(
    parts: Sequence[FusedPart], positions: torch.Size, mask: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    """(P, N) row weights, each row summing to 1 over its valid positions: the mean the terms take.

    The divergences count `mask` (already and-ed with labels != -100 by the composed loss); ce also the
    labels themselves, exactly as `distil.losses.functional.cross_entropy` does.
    """
    device = labels.device
    plain = position_weights(positions, mask, device=device)
    labelled = position_weights(positions, mask, labels, device=device)
    return torch.stack([labelled if p.kind == "ce" else plain for p in parts])


def fused_loss(
    student: HeadOutput,
    teacher: HeadOutput | torch.Tensor | None,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    parts: Sequence[FusedPart],
    *,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted total of `parts` and each part's value, head and loss fused chunk by chunk.

    Args:
        student: the student's hidden states (B, T, H) and head (V, H).
        teacher: the teacher's hidden states and head, or its (B, T, V) logits, or None (ce alone).
        labels: (B, T) int64 tokens (-100 where a position has no label).
        mask: (B, T) bool positions that count, or None.
        parts: the terms: kernel kind, options and weight in the total.
        chunk_size: rows per chunk; None: about `CHUNK_ELEMENTS` / V, at least `FUSED_MIN_ROWS`.

    Returns:
        The total sum_k weight_k * term_k (a differentiable fp32 scalar) and the (P,) term values (each
        the mean over its valid positions, T^2 included for the divergences; not differentiable).

    Raises:
        ValueError: no parts, a teacher of another vocabulary or positions, labels of other positions.
    """
    if not parts:
        raise ValueError("fused_loss needs at least one term")
    positions, vocab = student.positions, student.vocab
    if tuple(labels.shape) != tuple(positions):
        raise ValueError(
            f"labels {tuple(labels.shape)} do not fit the hidden states' positions {tuple(positions)}"
        )
    if teacher is not None:
        t_positions = teacher.positions if isinstance(teacher, HeadOutput) else teacher.shape[:-1]
        t_vocab = teacher.vocab if isinstance(teacher, HeadOutput) else teacher.shape[-1]
        if tuple(t_positions) != tuple(positions) or t_vocab != vocab:
            raise ValueError(
                f"the teacher's outputs cover positions {tuple(t_positions)} over {t_vocab} ids, the "
                f"student's {tuple(positions)} over {vocab}: the fused path needs the same of both"
            )
    row_weights = part_weights(parts, positions, mask, labels)
    rows = chunk_rows(vocab, chunk_size) if chunk_size is not None else max(chunk_rows(vocab), FUSED_MIN_ROWS)
    flat_labels = labels.reshape(-1) if any(p.kind == "ce" for p in parts) else None
    total, values = _FusedHeadLoss.apply(
        student.rows(),
        student.weight,
        student.bias,
        _TeacherRows(teacher),
        flat_labels,
        row_weights,
        tuple(parts),
        rows,
        student.dtype,
    )
    return total, values


# -- wiring: which runs fuse, and the composed loss's terms on the fused path ---------------------------


@dataclass(frozen=True)
class FusedPlan:
    """Which models of a run give hidden states and head instead of logits (`kd.fused`).

    Attributes:
        student: the student does (the loss then makes its logits chunk by chunk).
        teacher: a live teacher does too (else its logits are whole: a cache, an ensemble, a head that
            does not separate; the student side is fused still).
    """

    student: bool
    teacher: bool


# The tokens of the first sample the head check runs on: enough to see a mismatch, cheap on any model.
_PROBE_TOKENS = 16


def head_blocker(model: torch.nn.Module, sample: torch.Tensor) -> str | None:
    """Why `model`'s logits cannot be made from its hidden states and head, or None when they can.

    Separable: a `distil.models.hf.CausalLM` whose output embedding is a linear layer, and whose logits on
    the first tokens of `sample` equal that layer applied to its final hidden states (so a soft-cap, a
    logit scale or any other step after the head is seen here, not trained on silently).

    Args:
        model: the model, as it is trained.
        sample: (B, T) token ids of one training batch.
    """
    if not isinstance(model, CausalLM):
        return f"the model ({type(model).__name__}) is not a Hugging Face causal LM (hf-causal-lm)"
    hf: Any = model.hf
    head = hf.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or hf.base_model is hf:
        return f"{type(hf).__name__} has no separate linear output head"
    ids = sample[:1, :_PROBE_TOKENS].to(head.weight.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            whole = model(ids).float()
            parts = model(ids, head=False).logits().float()
    finally:
        model.train(was_training)
    # Relative to the logits' own scale: a freshly initialised model's are tiny, and a cap or scale of
    # them as small as they are must still show (the same operations give the same values, up to rounding).
    if not torch.allclose(whole, parts, rtol=1e-3, atol=1e-3 * float(whole.abs().max()) + 1e-12):
        return (
            f"{type(model.hf).__name__}'s logits are not its head applied to its final hidden states "
            "(a step after the head: a soft-cap or a logit scale)"
        )
    return None


def plan_fused(
    mode: str,
    *,
    student: torch.nn.Module,
    teachers: Sequence[torch.nn.Module],
    terms: Any,
    sample: Any,
    vocab: int,
    sharded: bool,
) -> tuple[FusedPlan | None, str | None]:
    """Whether a run fuses its LM head, and the one-line notice when it was asked to but cannot.

    `auto` fuses a separable causal-LM student from `FUSED_MIN_VOCAB` ids up (a notice only where it
    would have); `on` fuses at any vocabulary size (a notice whenever it cannot); `off` never does.

    Args:
        mode: `kd.fused`: "auto", "on" or "off".
        student: the student; teachers: the run's teachers (a live single one may give its hidden states).
        terms: the composed loss's terms (name -> `Term`): each must be a per-position loss of the logits.
        sample: a training batch's inputs ((B, T) token ids for a causal LM).
        vocab: the data's vocabulary size.
        sharded: FSDP (`train.fsdp`): the head weight is split across processes.

    Returns:
        The plan (None: the unfused path) and the notice to show (None: nothing to say).
    """
    if mode not in FUSED_MODES:
        raise ValueError(f"kd.fused must be one of {FUSED_MODES}, got {mode!r}")
    if mode == "off" or (mode == "auto" and vocab < FUSED_MIN_VOCAB):
        return None, None
    if mode == "auto" and not isinstance(student, CausalLM):
        return None, None  # not a language model: nothing to fuse, nothing to say
    reason = _plan_blocker(student, terms, sample, sharded)
    if reason is not None:
        return None, fallback_notice(reason)
    teacher = (
        len(teachers) == 1 and isinstance(sample, torch.Tensor) and head_blocker(teachers[0], sample) is None
    )
    return FusedPlan(student=True, teacher=teacher), None


def _plan_blocker(student: torch.nn.Module, terms: Any, sample: Any, sharded: bool) -> str | None:
    """Why the student's head cannot be fused in this run, or None."""
    if sharded:
        # Each process holds a shard of the head weight; the chunks would need it whole (all-gathered).
        return "train.fsdp shards the head weight across processes, which the fused path does not gather"
    blocked = [name for name, term in terms.items() if term.row_part(1.0) is None]
    if blocked:
        return f"terms {', '.join(blocked)} are not per-position losses of the logits"
    if not isinstance(sample, torch.Tensor):
        return "the batch inputs are not a (B, T) tensor of token ids"
    return head_blocker(student, sample)


def fallback_notice(reason: str) -> str:
    """The one-line notice of a run that computes whole logits although kd.fused asked otherwise."""
    return f"kd.fused: {reason}; this run computes the whole (B, T, V) logits instead (the unfused path)."


def fused_terms(
    terms: Any,
    weights: dict[str, float],
    student: HeadOutput,
    teacher: Any,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    temperature: float,
    *,
    generated: bool = False,
) -> dict[str, torch.Tensor] | str:
    """A composed loss's terms on the fused path, or why they cannot be (the caller falls back).

    Args:
        terms: name -> `Term` (`ComposedLoss.terms`).
        weights: name -> the term's weight this epoch.
        student: the student's hidden states and head.
        teacher: the teacher's `HeadOutput`, (B, T, V) logits, or whatever the source gave.
        labels: (B, T) tokens; mask: the positions that count (labels != -100 and-ed in).
        temperature: the current temperature.
        generated: an on-policy batch: label-only terms (ce) count 0 and are left out of the total.

    Returns:
        {"loss": total, name: value, ...} as `ComposedLoss` returns them (values not differentiable), or
        a reason string.
    """
    from distil.losses.sparse import SparseTargets

    blocked = [name for name, term in terms.items() if term.row_part(temperature) is None]
    if blocked:
        return f"terms {', '.join(blocked)} are not per-position losses of the logits"
    if labels.dim() != 2:
        return "the labels are not (B, T) tokens"
    needs_teacher = any(term.needs_teacher for term in terms.values())
    if needs_teacher:
        if isinstance(teacher, SparseTargets):
            return "the teacher's outputs are the sparse rows of a top-k/sampled cache"
        if not isinstance(teacher, HeadOutput | torch.Tensor):
            return "the teacher's outputs are not logits over the student's positions"
        t_vocab = teacher.vocab if isinstance(teacher, HeadOutput) else teacher.shape[-1]
        t_positions = teacher.positions if isinstance(teacher, HeadOutput) else teacher.shape[:-1]
        if t_vocab != student.vocab or tuple(t_positions) != tuple(student.positions):
            return f"the teacher's outputs ({t_vocab} ids) and the student's ({student.vocab}) differ in size"
    parts, names = [], []
    for name, term in terms.items():
        if generated and not term.needs_teacher:
            continue  # a generated batch's labels are the student's own samples (see ComposedLoss)
        kind, options = term.row_part(temperature)
        parts.append(FusedPart(kind, options, weights[name]))
        names.append(name)
    if not parts:
        return "no term trains on this batch"
    total, values = fused_loss(student, teacher if needs_teacher else None, labels, mask, parts)
    zero = torch.zeros((), device=total.device)
    return {"loss": total, **{n: values[names.index(n)] if n in names else zero for n in terms}}
