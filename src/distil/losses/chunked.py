"""Per-position logit losses over (N, V) rows, computed in chunks of rows with a hand-written backward.

The naive per-token loss of a language model keeps several fp32 (B, T, V) tensors alive from forward
to backward (the up-cast logits, both log-softmaxes, the element-wise KL): at B=4, T=512, V=32000 each is
250 MiB. `row_loss` instead walks the rows in chunks of `rows` (chunk_rows: about 8M elements, 32 MiB
of fp32 per temporary) and writes the analytic gradient chunk by chunk straight into one tensor of the
student's dtype (the gradient autograd needs anyway): during forward by default (backward="stored", no
recomputation), or in backward from the saved (N,) logsumexps (backward="recompute", nothing of size
(N, V) kept in between). benchmarks/token_loss_memory.py measures both against the naive loss.

No host synchronisation: padded positions are not selected out (boolean indexing waits for the device
to count them); they carry weight 0, and `torch.where` keeps whatever their logits hold (even NaN) out
of the sum and of the gradient. The mean over the valid positions is in the weights: mask / count,
a tensor division.

Divergences (student q, teacher p, both softmax(logits / T), each multiplied by T^2 as Hinton's KD):
    kl   KL(p || q)                 dL/ds = q - p
    rkl  KL(q || p)                 dL/ds = q * (f - E_q f), f = log q - log p
    jsd  beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q
                                    dL/ds = (1 - beta) q * (f - E_q f), f = log q - log m
    tvd  0.5 * sum |q - p|          dL/ds = q * (g - E_q g), g = 0.5 sign(q - p)
and, on raw logits: ce (cross-entropy with label smoothing) and mse (the mean squared logit error).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

# Elements (rows x vocabulary) of one chunk: 8M fp32 = 32 MiB per temporary, a handful alive at once.
CHUNK_ELEMENTS = 1 << 23

KINDS = ("kl", "rkl", "jsd", "tvd", "ce", "mse")


def chunk_rows(vocab: int, chunk_size: int | None = None) -> int:
    """Rows per chunk: `chunk_size` when given, else as many as fit `CHUNK_ELEMENTS` (at least 1)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
        return int(chunk_size)
    return max(1, CHUNK_ELEMENTS // max(vocab, 1))


def row_values(
    kind: str,
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    beta: float,
    smoothing: float,
    grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row values (n,) of one chunk and, with `grad`, their gradient (n, V) w.r.t. the raw student logits.

    Differentiable through autograd as well (the reference computation in tests uses it on whole rows).
    The gradient excludes the T^2 factor and the weights, which the caller applies.
    """
    if kind == "ce":
        assert labels is not None
        s = student.float()
        lse = torch.logsumexp(s, dim=1)
        picked = s.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
        values = (1 - smoothing) * (lse - picked)
        if smoothing:
            values = values + smoothing * (lse - s.mean(1))
        if not grad:
            return values, None
        g = torch.exp(s - lse.unsqueeze(1))
        if smoothing:
            g = g - smoothing / s.shape[1]
        g.scatter_add_(
            1, labels.clamp(min=0).unsqueeze(1), torch.full_like(picked, -(1 - smoothing)).unsqueeze(1)
        )
        return values, g
    assert teacher is not None
    if kind == "mse":
        d = student.float() - teacher.float()
        values = d.pow(2).mean(1)
        return values, (d * (2.0 / d.shape[1]) if grad else None)
    t = temperature
    log_q = F.log_softmax(student.float() / t, dim=1)
    log_p = F.log_softmax(teacher.float() / t, dim=1)
    q = log_q.exp()
    if kind == "kl":
        p = log_p.exp()
        # xlogy-style: a teacher probability of exactly 0 (a -inf logit) contributes 0, not NaN.
        values = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(1)
        return values, ((q - p) / t if grad else None)
    if kind == "tvd":
        p = log_p.exp()
        values = 0.5 * (q - p).abs().sum(1)
        if not grad:
            return values, None
        f = 0.5 * torch.sign(q - p)
        return values, q * (f - (q * f).sum(1, keepdim=True)) / t
    if kind == "rkl":
        f = log_q - log_p
        values = (q * f).sum(1)
        return values, (q * (f - values.unsqueeze(1)) / t if grad else None)
    if kind == "jsd":
        p = log_p.exp()
        log_m = torch.logaddexp(log_q + math.log1p(-beta), log_p + math.log(beta))
        f = log_q - log_m
        kl_q = (q * f).sum(1)
        values = beta * torch.where(p > 0, p * (log_p - log_m), 0.0).sum(1) + (1 - beta) * kl_q
        return values, ((1 - beta) * q * (f - kl_q.unsqueeze(1)) / t if grad else None)
    raise ValueError(f"unknown row loss {kind!r}; one of {', '.join(KINDS)}")


def _scale(kind: str, temperature: float) -> float:
    return 1.0 if kind in ("ce", "mse") else temperature * temperature


# The hot paths of LM distillation (forward KL and cross-entropy) are written out in fewer passes over
# the chunk than `row_values`: forward keeps each row's logsumexp (N floats), so backward rebuilds the
# softmaxes with one subtract and exp each, in place. The other kinds use `row_values` both ways.


def _soft(x: torch.Tensor, temperature: float, floor: bool = False) -> torch.Tensor:
    """A new fp32 tensor x / T (safe to modify in place); `floor` clamps -inf logits to a finite -1e4."""
    y = x * (1.0 / temperature) if x.dtype == torch.float32 else x.float().mul_(1.0 / temperature)
    return y.clamp_min_(-1e4) if floor else y


def _forward_chunk(
    kind: str,
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    beta: float,
    smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-row values of one chunk and the logsumexps backward reuses (None where it recomputes)."""
    if kind == "kl":
        assert teacher is not None
        s = _soft(student, temperature)
        t = _soft(teacher, temperature, floor=True)
        lse_s, lse_t = torch.logsumexp(s, dim=1), torch.logsumexp(t, dim=1)
        p = (t - lse_t.unsqueeze(1)).exp_()
        # KL(p || q) = sum p (t - s) + lse_s - lse_t, since log p - log q = (t - lse_t) - (s - lse_s).
        values = p.mul_(t.sub_(s)).sum(1) + lse_s - lse_t
        return values, lse_s, lse_t
    if kind == "ce":
        assert labels is not None
        s = student.float()
        lse = torch.logsumexp(s, dim=1)
        picked = s.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
        values = (1 - smoothing) * (lse - picked)
        if smoothing:
            values = values + smoothing * (lse - s.mean(1))
        return values, lse, None
    values, _ = row_values(kind, student, teacher, labels, temperature, beta, smoothing)
    return values, None, None


def _grad_chunk(
    kind: str,
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    beta: float,
    smoothing: float,
    lse_s: torch.Tensor | None,
    lse_t: torch.Tensor | None,
    coef: torch.Tensor,
) -> torch.Tensor:
    """coef (n,) times the gradient of one chunk's per-row values w.r.t. the raw student logits (fp32)."""
    if kind == "kl":
        assert teacher is not None and lse_s is not None and lse_t is not None
        q = _soft(student, temperature).sub_(lse_s.unsqueeze(1)).exp_()
        p = _soft(teacher, temperature, floor=True).sub_(lse_t.unsqueeze(1)).exp_()
        return q.sub_(p).mul_((coef / temperature).unsqueeze(1))
    if kind == "ce":
        assert labels is not None and lse_s is not None
        g = torch.sub(student.float(), lse_s.unsqueeze(1)).exp_()
        if smoothing:
            g.sub_(smoothing / g.shape[1])
        g.mul_(coef.unsqueeze(1))
        g.scatter_add_(1, labels.clamp(min=0).unsqueeze(1), (-(1 - smoothing) * coef).unsqueeze(1))
        return g
    _, grad = row_values(kind, student, teacher, labels, temperature, beta, smoothing, grad=True)
    assert grad is not None
    return grad.mul_(coef.unsqueeze(1))


def _kl_chunk_with_grad(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, coef: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward KL's per-row values and coef-scaled gradient of one chunk in one go (three fp32 buffers)."""
    s = _soft(student, temperature)
    t = _soft(teacher, temperature, floor=True)
    lse_s, lse_t = torch.logsumexp(s, dim=1), torch.logsumexp(t, dim=1)
    p = (t - lse_t.unsqueeze(1)).exp_()
    values = t.sub_(s).mul_(p).sum(1) + lse_s - lse_t
    q = s.sub_(lse_s.unsqueeze(1)).exp_()
    return values, q.sub_(p).mul_((coef / temperature).unsqueeze(1))


def _part(x: torch.Tensor | None, a: int, b: int) -> torch.Tensor | None:
    return None if x is None else x[a:b]


class _ChunkedRowLoss(torch.autograd.Function):
    """sum_i w_i * value_i * scale over (N, V) rows, one chunk of rows at a time.

    `store` picks where the gradient is computed: in forward, chunk by chunk while the softmaxes are at
    hand, into one tensor of the student's dtype that backward scales by the incoming gradient (no
    recomputation: the fastest), or in backward, recomputing each chunk's softmaxes from the inputs and
    the saved (N,) logsumexps (nothing of size (N, V) is kept between forward and backward).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        labels: torch.Tensor | None,
        weights: torch.Tensor,
        kind: str,
        temperature: float,
        beta: float,
        smoothing: float,
        rows: int,
        store: bool,
    ) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        valid = weights > 0
        # where, not a product: a padded row's logits may be anything (NaN from a fully masked row).
        coef = torch.where(valid, weights * _scale(kind, temperature), 0.0)
        grad = torch.empty_like(student) if store and ctx.needs_input_grad[0] else None
        lse_s: list[torch.Tensor] = []
        lse_t: list[torch.Tensor] = []
        for a in range(0, student.shape[0], rows):
            b = a + rows
            part = (student[a:b], _part(teacher, a, b), _part(labels, a, b), temperature, beta, smoothing)
            g: torch.Tensor | None = None
            if grad is not None and teacher is not None and kind == "kl":
                values, g = _kl_chunk_with_grad(student[a:b], teacher[a:b], temperature, coef[a:b])
                ls = lt = None
            else:
                values, ls, lt = _forward_chunk(kind, *part)
                if grad is not None:
                    g = _grad_chunk(kind, *part, ls, lt, coef[a:b])
            total = total + torch.where(valid[a:b], values * coef[a:b], 0.0).sum()
            if grad is not None:
                assert g is not None
                g.masked_fill_(~valid[a:b].unsqueeze(1), 0.0)  # NaN * 0 is NaN: padded rows get exactly 0
                grad[a:b].copy_(g)
            else:
                lse_s += [] if ls is None else [ls]
                lse_t += [] if lt is None else [lt]
        if grad is not None:
            ctx.save_for_backward(grad)
        else:
            saved_s = torch.cat(lse_s) if lse_s else None
            saved_t = torch.cat(lse_t) if lse_t else None
            ctx.save_for_backward(student, teacher, labels, valid, coef, saved_s, saved_t)
        ctx.options = (kind, temperature, beta, smoothing, rows, grad is not None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        kind, temperature, beta, smoothing, rows, stored = ctx.options
        none = (None,) * 10
        if stored:
            if getattr(ctx, "consumed", False):
                raise RuntimeError(
                    "a chunked loss with backward='stored' hands its gradient over once; for a second "
                    "backward (retain_graph) use backward='recompute'"
                )
            ctx.consumed = True
            (grad,) = ctx.saved_tensors
            return (grad.mul_(grad_out), *none)  # in place: a 0-d fp32 factor, computed in fp32
        student, teacher, labels, valid, coef, lse_s, lse_t = ctx.saved_tensors
        grad = torch.empty_like(student)
        coef = coef * grad_out.float()
        for a in range(0, student.shape[0], rows):
            b = a + rows
            g = _grad_chunk(
                kind,
                student[a:b],
                _part(teacher, a, b),
                _part(labels, a, b),
                temperature,
                beta,
                smoothing,
                _part(lse_s, a, b),
                _part(lse_t, a, b),
                coef[a:b],
            )
            g.masked_fill_(~valid[a:b].unsqueeze(1), 0.0)
            grad[a:b].copy_(g)
        return (grad, *none)


def row_loss(
    kind: str,
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    weights: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    beta: float = 0.5,
    smoothing: float = 0.0,
    chunk_size: int | None = None,
    backward: str = "stored",
) -> torch.Tensor:
    """The weighted sum over rows of a per-row loss, chunked: sum_i weights_i * value_i (* T^2).

    Args:
        kind: one of `KINDS` (module docstring).
        student: (N, V) student logits, any float dtype; the gradient comes back in that dtype.
        teacher: (N, V) teacher logits (no gradient flows to them), None for "ce".
        weights: (N,) float, 0 for the rows that do not count (e.g. mask / mask.sum() for a mean).
        labels: (N,) int64 classes for "ce" (rows with weight 0 may hold anything, e.g. -100).
        temperature: softening temperature of the divergences.
        beta: the mixture weight of "jsd", strictly between 0 and 1.
        smoothing: label smoothing of "ce".
        chunk_size: rows per chunk; None picks about `CHUNK_ELEMENTS` / V.
        backward: "stored" computes the gradient during forward into one tensor of the student's dtype
            (no recomputation); "recompute" keeps nothing of size (N, V) and recomputes each chunk in
            backward (slower; for when the loss's forward and backward are far apart).

    Returns:
        A float32 scalar.
    """
    if backward not in ("stored", "recompute"):
        raise ValueError(f"backward must be 'stored' or 'recompute', got {backward!r}")
    rows = chunk_rows(student.shape[-1], chunk_size)
    if teacher is not None and teacher.requires_grad:
        # A teacher that is trained too (mutual learning) needs its gradient: the autograd path gives it.
        values, _ = row_values(kind, student, teacher, labels, temperature, beta, smoothing)
        return torch.where(weights > 0, values * weights, 0.0).sum() * _scale(kind, temperature)
    out: torch.Tensor = _ChunkedRowLoss.apply(
        student, teacher, labels, weights, kind, temperature, beta, smoothing, rows, backward == "stored"
    )
    return out
