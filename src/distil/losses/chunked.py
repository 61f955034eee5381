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

Each loss has one row kernel (`KERNELS`), used by every path: the chunks here, the (B, K) and (B, T, V)
functions of `distil.losses.functional` (which only view their logits as rows) and autograd (a trained
teacher). A kernel returns the per-row values and, given per-row factors, their gradient w.r.t. the raw
student logits: the backward is that derivative (tests check it against autograd).

Divergences (student q, teacher p, both softmax(logits / T), each multiplied by T^2 as Hinton's KD):
    kl   KL(p || q)                 dL/ds = q - p
    rkl  KL(q || p)                 dL/ds = q * (f - E_q f), f = log q - log p
    jsd  beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q
                                    dL/ds = (1 - beta) q * (f - E_q f), f = log q - log m
    tvd  0.5 * sum |q - p|          dL/ds = q * (g - E_q g), g = 0.5 sign(q - p)
and, on raw logits: ce (cross-entropy with label smoothing) and mse (the mean squared logit error).
rkl, jsd and tvd follow one rule (`_centred`): with dq_i/ds_j = q_i (delta_ij - q_j), a loss whose
derivative w.r.t. q is h has dL/ds_j = q_j (h_j - E_q h), and a constant in h cancels; each kernel's
docstring derives its h (f + 1, (1 - beta) f, g). A class with probability 0 on both sides (a -inf
logit: masked vocabulary) contributes 0, not NaN.

Speed: each chunk's time is its number of passes over (n, V) and, on CPU, of new (n, V) tensors (a
fresh 32 MiB buffer costs as much as several passes over one). So the kernels update their own
temporaries in place, share q * f between value and gradient, and keep kd's budget: two new (n, V)
tensors besides logsumexp's for rkl and tvd (kd: three), five for jsd (q, p, log q, log p, m).
benchmarks/divergence_speed.py measures them against kd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

# Elements (rows x vocabulary) of one chunk: 8M fp32 = 32 MiB per temporary, a handful alive at once.
CHUNK_ELEMENTS = 1 << 23
_TINY = torch.finfo(torch.float32).tiny


def chunk_rows(vocab: int, chunk_size: int | None = None) -> int:
    """Rows per chunk: `chunk_size` when given, else as many as fit `CHUNK_ELEMENTS` (at least 1)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
        return int(chunk_size)
    return max(1, CHUNK_ELEMENTS // max(vocab, 1))


class RowOptions(NamedTuple):
    """The hyper-parameters of the row kernels (each kernel reads the ones it has)."""

    temperature: float = 1.0
    beta: float = 0.5
    smoothing: float = 0.0


class RowOut(NamedTuple):
    """What a row kernel returns for one chunk of rows."""

    values: torch.Tensor | None  # (n,) per-row values (without T^2), None when not asked for
    grad: torch.Tensor | None  # (n, V) fp32: coef times the gradient of the values, None without coef
    saved: tuple[torch.Tensor, ...]  # (n,) logsumexps a later call may pass back as `saved`


def _owned(x: torch.Tensor) -> torch.Tensor:
    """`x` itself for an in-place update when autograd is off (the chunked path), else a copy.

    The kernels update their own fp32 temporaries in place (half the passes and allocations of the
    out-of-place form); under autograd (a trained teacher, the reference tests) such a temporary may be
    saved for backward, so the update goes to a copy instead.
    """
    return x.clone() if torch.is_grad_enabled() else x


def _soft(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """A new fp32 tensor x / T (never the input itself, so the kernels may update it in place)."""
    return x * (1.0 / temperature) if x.dtype == torch.float32 else x.float().mul_(1.0 / temperature)


def _lse(x: torch.Tensor, saved: tuple[torch.Tensor, ...], i: int) -> torch.Tensor:
    return saved[i] if saved else torch.logsumexp(x, dim=1)


def _softmaxes(
    x: torch.Tensor, saved: tuple[torch.Tensor, ...], i: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log softmax, softmax and logsumexp of the rows of `x`, a kernel's own fp32 (n, V) logits / T.

    `x` becomes the log-softmax in place (`_owned`), so the softmax is the one new (n, V) tensor: the
    textbook `logsumexp` then `exp(x - lse)` makes two and reads `x` once more. With `saved` (the
    logsumexps of an earlier call on these rows, `saved[i]`) the max and the sum are skipped.
    """
    if saved:
        lse = saved[i]
        log_probs = _owned(x).sub_(lse.unsqueeze(1))
        return log_probs, log_probs.exp(), lse
    top = x.amax(1, keepdim=True)
    shifted = _owned(x).sub_(top)
    probs = shifted.exp()
    total = probs.sum(1, keepdim=True)
    probs = _owned(probs).div_(total)
    log_total = total.log()
    return _owned(shifted).sub_(log_total), probs, (top + log_total).squeeze(1)


def _centred(q: torch.Tensor, qh: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * q (h - E_q h), from q * h (updated in place) and E_q h: the logits' gradient of a loss L(q)
    with dL/dq = h (up to a constant per row), times `factor` (coef / T and the loss's own constant).

    Chain rule through the softmax of s = logits / T: dq_i/ds_j = q_i (delta_ij - q_j), so
    dL/ds_j = sum_i h_i q_i (delta_ij - q_j) = q_j (h_j - E_q h); h + c gives the same (sum q = 1).
    """
    return _owned(qh).addcmul_(q, mean.unsqueeze(1), value=-1.0).mul_(factor.unsqueeze(1))


def _kl_kernel(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    o: RowOptions,
    coef: torch.Tensor | None,
    saved: tuple[torch.Tensor, ...],
    values: bool,
) -> RowOut:
    """KL(p || q) = sum p (log p - log q), log p = t - lse_t (s, t the logits / T); dL/ds = (q - p) / T.

    Not sum p (t - s) + lse_s - lse_t: with logits far from 0 (|x / T| ~ 1e4) the two large terms cancel
    and the rounding of lse, times |t - s|, is the whole result.
    """
    assert teacher is not None
    s, t = _soft(student, o.temperature), _soft(teacher, o.temperature)
    lse_s, lse_t = _lse(s, saved, 0), _lse(t, saved, 1)
    log_p = _owned(t).sub_(lse_t.unsqueeze(1))
    p = log_p.exp()
    log_q = _owned(s).sub_(lse_s.unsqueeze(1))
    kl = None
    if values:
        # p = 0 where the teacher's logit is -inf (or underflows): 0 * inf is NaN there, and 0 is the limit.
        terms = _owned(log_p).sub_(log_q).mul_(p).nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
        kl = terms.sum(1)
    grad = None
    if coef is not None:
        grad = _owned(log_q).exp_().sub_(p).mul_((coef / o.temperature).unsqueeze(1))
    return RowOut(kl, grad, (lse_s, lse_t))


def _ce_kernel(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    o: RowOptions,
    coef: torch.Tensor | None,
    saved: tuple[torch.Tensor, ...],
    values: bool,
) -> RowOut:
    """(1 - e) (lse - s_y) + e (lse - mean s); dL/ds = softmax(s) - e / V - (1 - e) onehot(y)."""
    assert labels is not None
    s, e, y = student.float(), o.smoothing, labels.clamp(min=0).unsqueeze(1)
    lse = _lse(s, saved, 0)
    ce = None
    if values:
        ce = lse - s.gather(1, y).squeeze(1)
        if e:
            ce = (1 - e) * ce + e * (lse - s.mean(1))
    grad = None
    if coef is not None:
        grad = torch.sub(s, lse.unsqueeze(1)).exp_()
        if e:
            grad.sub_(e / s.shape[1])
        grad.mul_(coef.unsqueeze(1)).scatter_add_(1, y, (-(1 - e) * coef).unsqueeze(1))
    return RowOut(ce, grad, (lse,))


def _rkl_kernel(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    o: RowOptions,
    coef: torch.Tensor | None,
    saved: tuple[torch.Tensor, ...],
    values: bool,
) -> RowOut:
    """KL(q || p) = E_q f, f = log q - log p; dL/ds = q (f - E_q f) / T.

    Derivation: d(q_i f_i)/dq_i = f_i + 1 and sum_i q_i (delta_ij - q_j) = 0, so the +1 drops out and
    `_centred` applies with f itself. Two (n, V) temporaries besides the logsumexps' (kd: three): f is
    written over log p and q over log q; values and gradient share q * f.
    """
    assert teacher is not None
    s, t = _soft(student, o.temperature), _soft(teacher, o.temperature)
    lse_s, lse_t = _lse(s, saved, 0), _lse(t, saved, 1)
    log_q = _owned(s).sub_(lse_s.unsqueeze(1))
    # Where q = 0 (a -inf student logit) f is -inf or NaN and its term is 0: f := 0 there. f = +inf where
    # q > 0 = p is the true, infinite divergence and stays.
    f = _owned(t).sub_(lse_t.unsqueeze(1)).sub_(log_q).neg_()
    f = f.nan_to_num_(nan=0.0, posinf=math.inf, neginf=0.0)
    q = _owned(log_q).exp_()
    qf = _owned(f).mul_(q)
    # + 0 * lse_t: a NaN teacher row gives NaN (as NaN logits should), not the 0 the f := 0 above would.
    rkl = qf.sum(1) + lse_t * 0.0
    grad = None if coef is None else _centred(q, qf, rkl, coef / o.temperature)
    return RowOut(rkl, grad, (lse_s, lse_t))


def _jsd_kernel(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    o: RowOptions,
    coef: torch.Tensor | None,
    saved: tuple[torch.Tensor, ...],
    values: bool,
) -> RowOut:
    """beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q;
    dL/ds = (1 - beta) q (f - E_q f) / T, f = log q - log m.

    Derivation: with g = log p - log m, dL/dq_i = -beta (1 - beta) p_i / m_i + (1 - beta) (f_i + 1
    - (1 - beta) q_i / m_i) = (1 - beta) (f_i + 1 - (beta p_i + (1 - beta) q_i) / m_i) = (1 - beta) f_i,
    which `_centred` takes through the softmax. The value is beta E_p g + (1 - beta) E_q f.

    m is mixed from the probabilities (`lerp`, one pass; exact to rounding wherever m is a normal
    float, > 1e-38) and its log taken once; a term whose probability is 0 (a masked class) is 0: f, g :=
    0 where they are -inf (NaN logits still give NaN, through p or q). beta = 0 or 1 give the formula's
    value there, 0 (`js_divergence` maps those ends to kd and rkl).
    """
    assert teacher is not None
    b = o.beta
    log_q, q, lse_s = _softmaxes(_soft(student, o.temperature), saved, 0)
    log_p, p, lse_t = _softmaxes(_soft(teacher, o.temperature), saved, 1)
    # Floored at the smallest normal float: log m stays finite (and autograd's 1 / m too) where both
    # probabilities are 0; the terms this changes are below 1e-36.
    log_m = _owned(torch.lerp(p, q, 1.0 - b)).clamp_min_(_TINY).log_()
    jsd = None
    # Only -inf (log of a 0 probability, whose term is 0) becomes 0; NaN stays NaN.
    if values:
        g = _owned(log_p).sub_(log_m).nan_to_num_(nan=math.nan, posinf=math.inf, neginf=0.0)
        kl_p = _owned(g).mul_(p).sum(1)
    f = _owned(log_q).sub_(log_m).nan_to_num_(nan=math.nan, posinf=math.inf, neginf=0.0)
    del log_m
    qf = _owned(f).mul_(q)
    kl_q = qf.sum(1)
    if values:
        jsd = b * kl_p + (1.0 - b) * kl_q
    grad = None if coef is None else _centred(q, qf, kl_q, coef * ((1.0 - b) / o.temperature))
    return RowOut(jsd, grad, (lse_s, lse_t))


def _tvd_kernel(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    o: RowOptions,
    coef: torch.Tensor | None,
    saved: tuple[torch.Tensor, ...],
    values: bool,
) -> RowOut:
    """0.5 sum |q - p|; dL/ds = q (g - E_q g) / T, g = 0.5 sign(q - p).

    Derivation: dL/dq_i = g_i (0 where q_i = p_i: the subgradient autograd takes too), piecewise constant,
    so `_centred` applies. Two (n, V) temporaries: q, and d = p - q over p; sum |d| is an L1 norm (no
    |d| is made), and -sign(d) = sign(q - p) goes into the factor.
    """
    assert teacher is not None
    s, t = _soft(student, o.temperature), _soft(teacher, o.temperature)
    lse_s, lse_t = _lse(s, saved, 0), _lse(t, saved, 1)
    q = _owned(s).sub_(lse_s.unsqueeze(1)).exp_()
    d = _owned(_owned(t).sub_(lse_t.unsqueeze(1)).exp_()).sub_(q)  # exp_ saves its output for autograd
    tvd = 0.5 * torch.linalg.vector_norm(d, ord=1, dim=1) if values else None
    grad = None
    if coef is not None:
        qs = _owned(d).sign_().mul_(q)  # q * sign(p - q)
        grad = _centred(q, qs, qs.sum(1), coef * (-0.5 / o.temperature))
    return RowOut(tvd, grad, (lse_s, lse_t))


def _mse_kernel(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    o: RowOptions,
    coef: torch.Tensor | None,
    saved: tuple[torch.Tensor, ...],
    values: bool,
) -> RowOut:
    """mean (s - t)^2 over the row (raw logits); dL/ds = 2 (s - t) / V."""
    assert teacher is not None
    d = student.float() - teacher.float()
    grad = None if coef is None else d * (coef * (2.0 / d.shape[1])).unsqueeze(1)
    return RowOut(d.pow(2).mean(1), grad, ())


# The one implementation of each per-row loss: values, and coef times their gradient w.r.t. the raw
# student logits (the derivative of those values: tests check it against autograd). `saved` (the (n,)
# logsumexps of an earlier call on the same rows) lets backward skip recomputing them.
KERNELS: dict[str, Callable[..., RowOut]] = {
    "kl": _kl_kernel,
    "rkl": _rkl_kernel,
    "jsd": _jsd_kernel,
    "tvd": _tvd_kernel,
    "ce": _ce_kernel,
    "mse": _mse_kernel,
}
KINDS = tuple(KERNELS)


def row_kernel(
    kind: str,
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    labels: torch.Tensor | None,
    options: RowOptions,
    coef: torch.Tensor | None = None,
    saved: tuple[torch.Tensor, ...] = (),
    values: bool = True,
) -> RowOut:
    """Run the kernel of `kind` on (n, V) rows (n may be 0).

    Args:
        kind: one of `KINDS`.
        student: (n, V) raw student logits, any float dtype.
        teacher: (n, V) raw teacher logits (None for "ce").
        labels: (n,) int64 classes for "ce" (negative ones are read as 0: give such rows weight 0).
        options: temperature, beta, smoothing.
        coef: (n,) per-row factor of the gradient to return (None: no gradient).
        saved: the `saved` of an earlier call on the same rows, or ().
        values: whether to compute the values (backward asks only for the gradient).

    Returns:
        A `RowOut`; values and gradient exclude the T^2 factor (`scale`), which the caller applies.
        Differentiable by autograd too (w.r.t. student and teacher).

    Raises:
        ValueError: an unknown kind.
    """
    kernel = KERNELS.get(kind)
    if kernel is None:
        raise ValueError(f"unknown row loss {kind!r}; one of {', '.join(KINDS)}")
    return kernel(student, teacher, labels, options, coef, saved, values)


def scale(kind: str, temperature: float) -> float:
    """The factor of a kind's summed values: T^2 for the divergences (Hinton's), 1 on raw logits."""
    return 1.0 if kind in ("ce", "mse") else temperature * temperature


def _part(x: torch.Tensor | None, a: int, b: int) -> torch.Tensor | None:
    return None if x is None else x[a:b]


class _ChunkedRowLoss(torch.autograd.Function):
    """sum_i w_i * value_i * scale over (N, V) rows, one chunk of rows at a time, by the row kernels.

    `store` picks where the gradient is computed: in forward, chunk by chunk while the softmaxes are at
    hand, into one tensor of the student's dtype that backward scales by the incoming gradient (no
    recomputation: the fastest), or in backward, calling the kernel again on each chunk with the saved
    (N,) logsumexps (nothing of size (N, V) is kept between forward and backward).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        labels: torch.Tensor | None,
        weights: torch.Tensor,
        kind: str,
        options: RowOptions,
        rows: int,
        store: bool,
    ) -> torch.Tensor:
        valid = weights > 0
        factor = scale(kind, options.temperature)
        # where, not a product: a padded row's logits may be anything (NaN from a fully masked row).
        coef = torch.where(valid, weights * factor if factor != 1.0 else weights, 0.0)
        grad = torch.empty_like(student) if store and ctx.needs_input_grad[0] else None
        saved: list[tuple[torch.Tensor, ...]] = []
        sums: list[torch.Tensor] = []
        for a in range(0, student.shape[0], rows):
            b = a + rows
            out = row_kernel(
                kind,
                student[a:b],
                _part(teacher, a, b),
                _part(labels, a, b),
                options,
                coef=None if grad is None else coef[a:b],
            )
            assert out.values is not None
            # coef is 0 on the rows that do not count; where keeps their (maybe NaN) values out of the dot.
            sums.append(torch.dot(torch.where(valid[a:b], out.values, 0.0), coef[a:b]))
            if grad is not None:
                assert out.grad is not None
                if rows >= student.shape[0] and student.dtype == torch.float32:
                    grad = _masked(out.grad, valid)  # one chunk in fp32: its buffer is the gradient
                else:
                    grad[a:b].copy_(_masked(out.grad, valid[a:b]))
            else:
                saved.append(out.saved)
            # Free this chunk's temporaries before the next chunk makes its own (one chunk, not two, alive).
            del out
        if grad is not None:
            ctx.save_for_backward(grad)
        else:
            lses = [torch.cat(parts) for parts in zip(*saved, strict=True)]
            ctx.save_for_backward(student, teacher, labels, valid, coef, *lses)
        ctx.options = (kind, options, rows, grad is not None)
        return sums[0] if len(sums) == 1 else torch.stack(sums).sum() if sums else coef.sum()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        kind, options, rows, stored = ctx.options
        none = (None,) * 7
        if stored:
            if getattr(ctx, "consumed", False):
                raise RuntimeError(
                    "a chunked loss with backward='stored' hands its gradient over once; for a second "
                    "backward (retain_graph) use backward='recompute'"
                )
            ctx.consumed = True
            (grad,) = ctx.saved_tensors
            return (grad.mul_(grad_out), *none)  # in place: a 0-d fp32 factor, computed in fp32
        student, teacher, labels, valid, coef, *lses = ctx.saved_tensors
        grad = torch.empty_like(student)
        coef = coef * grad_out.float()
        for a in range(0, student.shape[0], rows):
            b = a + rows
            out = row_kernel(
                kind,
                student[a:b],
                _part(teacher, a, b),
                _part(labels, a, b),
                options,
                coef=coef[a:b],
                saved=tuple(x[a:b] for x in lses),
                values=False,
            )
            assert out.grad is not None
            grad[a:b].copy_(_masked(out.grad, valid[a:b]))
            del out  # as in forward: this chunk's gradient is freed before the next one is computed
        return (grad, *none)


def _masked(chunk: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """One chunk's gradient with exactly 0 on the padded rows (their NaN * 0 would be NaN), in place."""
    return chunk.masked_fill_(~valid.unsqueeze(1), 0.0)


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
    options = RowOptions(temperature, beta, smoothing)
    if teacher is not None and teacher.requires_grad:
        # A teacher that is trained too (mutual learning) needs its gradient: autograd through the kernel.
        values = row_kernel(kind, student, teacher, labels, options).values
        assert values is not None
        return torch.where(weights > 0, values * weights, 0.0).sum() * scale(kind, temperature)
    out: torch.Tensor = _ChunkedRowLoss.apply(
        student, teacher, labels, weights, kind, options, rows, backward == "stored"
    )
    return out
