"""KD against sparse teacher targets: a few (token, weight) pairs per position instead of V logits.

A sequence teacher cache (`distil.teachers.seqcache`) stores, per position, `k` token ids and a float16
log-weight each, plus one float32 per position. Two forms fill them differently:

- ``topk``: the teacher's k most probable tokens and their log-probabilities at the KD temperature T;
  the float is the tail mass `1 - sum_topk p`. The KD loss is, as in common practice (and the top-k
  baseline of Anshumann et al., ACL 2025, arXiv 2503.16870), KL from the top-k probabilities
  *renormalised* to sum to 1 (`tail="renormalize"`), or with the tail as one extra bucket whose student
  mass is `1 - sum_topk q` (`tail="bucket"`). Either is biased: the student is never told how the tail
  mass is spread, and renormalising also inflates the head.
- ``sampled``: k i.i.d. draws x_j ~ r (the proposal: the teacher's distribution at temperature T, or at
  another temperature) with importance weights w_j = p(x_j) / (k r(x_j)); the float is the teacher's
  negative entropy `sum_v p log p`. A cache stores each distinct id once with its count c (weight
  c p / (k r): the same sum as c separate slots), so slots may have weight 0 (log-weight -inf). For any f, `sum_j w_j f(x_j)` is an unbiased estimate of
  `sum_v p(v) f(v)`, so `negent - sum_j w_j log q(x_j)` is an unbiased estimate of KL(p || q) and its
  gradient w.r.t. the student logits of the true KL gradient (Random Sampling KD, arXiv 2503.16870).

Shapes: student logits (B, T, V) (or (B, K) with (B, k) targets); targets (B, T, k). Every loss is
`T^2 *` the mean over the valid positions (`mask`, and labels != -100 when `labels` are given), like
`distil.losses.functional.kd_kl`, which is the full-logit reference they are compared against.
Terms of weight 0 count 0 (0 log 0 = 0), so a teacher with -inf logits gives a finite loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from distil.losses.functional import IGNORE_INDEX

SPARSE_FORMS = ("topk", "sampled")
TAIL_MODES = ("renormalize", "bucket")


@dataclass(frozen=True)
class SparseTargets:
    """A batch of sparse teacher targets, what a `SparseCachedTeacher` returns for `batch["index"]`.

    Attributes:
        form: "topk" or "sampled".
        ids: (B, T, k) int64 token ids.
        log_weights: (B, T, k) float32: log p_T(id) (topk) or log(count * p_T(id) / (k r(id))) (sampled:
            the id drawn `count` times of k); -inf for weight 0 (a -inf teacher logit, an unused slot).
        aux: (B, T) float32: the tail mass (topk) or the teacher's negative entropy sum p log p (sampled).
        temperature: the KD temperature T the weights are for.
        num_classes: V.
    """

    form: str
    ids: torch.Tensor
    log_weights: torch.Tensor
    aux: torch.Tensor
    temperature: float
    num_classes: int

    def to(self, device: torch.device | str) -> SparseTargets:
        """The same targets on `device`."""
        return replace(
            self, ids=self.ids.to(device), log_weights=self.log_weights.to(device), aux=self.aux.to(device)
        )


def _keep(
    positions: torch.Size, mask: torch.Tensor | None, labels: torch.Tensor | None
) -> torch.Tensor | None:
    """A flat bool mask of `positions` ((B,) or (B, T)) from `mask` (a (B,) mask covers whole sequences)
    and the labels; None when every position counts (no copy of the logits is then made)."""
    if mask is None and labels is None:
        return None
    keep = torch.ones(positions, dtype=torch.bool, device=(mask if mask is not None else labels).device)  # type: ignore[union-attr]
    if mask is not None:
        m = mask.bool()
        if m.shape != positions and m.dim() == 1 and len(positions) == 2 and m.shape[0] == positions[0]:
            m = m.unsqueeze(1).expand(positions)
        if m.shape != positions:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit positions {tuple(positions)}")
        keep &= m
    if labels is not None:
        if labels.shape != positions:
            raise ValueError(f"labels {tuple(labels.shape)} do not fit positions {tuple(positions)}")
        keep &= labels.to(keep.device) != IGNORE_INDEX
    return keep.reshape(-1)


def _weighted(log_w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """exp(log_w) * x, and 0 where the weight is 0 (log_w = -inf: a -inf teacher logit, an unused slot):
    0 * -inf would be NaN, and the weight-0 terms of a KL are 0 (the xlogy convention)."""
    keep = log_w > -math.inf
    return torch.where(keep, log_w.exp() * torch.where(keep, x, 0.0), 0.0)


def sparse_kd(
    student_logits: torch.Tensor,
    targets: SparseTargets,
    temperature: float,
    mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    tail: str = "renormalize",
) -> torch.Tensor:
    """T^2 * KL(p_teacher^T || p_student^T) estimated from sparse targets, mean over the valid positions.

    Args:
        student_logits: (B, T, V) (or (B, K)) raw student outputs.
        targets: the teacher's sparse targets for the same positions ((B, T, k) or (B, k)).
        temperature: T; must be the one the targets were stored for.
        mask: optional (B,) or (B, T) bool, the positions that count.
        labels: optional (B, T) labels; positions labelled -100 are left out too.
        tail: top-k only: "renormalize" (KL to the top-k probabilities scaled to sum to 1) or "bucket"
            (the tail mass as one more outcome, matched by the student's mass outside the top-k).

    Returns:
        A scalar tensor (0, still connected to the graph, when no position is valid).

    Raises:
        ValueError: a temperature other than the targets', shapes that do not match, an unknown form or
            tail mode.
    """
    if targets.form not in SPARSE_FORMS:
        raise ValueError(f"sparse targets have form {targets.form!r}; expected one of {SPARSE_FORMS}")
    if tail not in TAIL_MODES:
        raise ValueError(f"tail must be one of {TAIL_MODES}, got {tail!r}")
    if abs(float(temperature) - targets.temperature) > 1e-6:
        raise ValueError(
            f"the sparse teacher targets were stored at temperature {targets.temperature}, but the loss uses "
            f"{temperature}: sparse caches hold one temperature. Fix: set kd.temperature to "
            f"{targets.temperature} (and no temperature_final), or rebuild the cache at {temperature}."
        )
    if student_logits.shape[:-1] != targets.ids.shape[:-1] or student_logits.shape[-1] != targets.num_classes:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} do not fit sparse targets of "
            f"{tuple(targets.ids.shape)} over {targets.num_classes} classes"
        )
    keep = _keep(student_logits.shape[:-1], mask, labels)
    k, device = targets.ids.shape[-1], student_logits.device
    s = student_logits.reshape(-1, targets.num_classes).float()  # (N, V)
    ids, logw = targets.ids.to(device).reshape(-1, k), targets.log_weights.to(device).reshape(-1, k).float()
    aux = targets.aux.to(device).reshape(-1).float()
    if keep is not None:
        keep = keep.to(device)
        s, ids, logw, aux = s[keep], ids[keep], logw[keep], aux[keep]
    if s.shape[0] == 0:
        return s.sum() * 0.0
    if temperature != 1.0:
        s = s / temperature
    # log q_student at the stored ids without a second (N, V) tensor: gather, then subtract logsumexp.
    log_q = s.gather(-1, ids) - torch.logsumexp(s, dim=-1, keepdim=True)  # (N, k)
    if targets.form == "sampled":
        per_row = aux - _weighted(logw, log_q).sum(-1)
    elif tail == "renormalize":
        log_w = torch.log_softmax(logw, dim=-1)
        per_row = _weighted(log_w, log_w - log_q).sum(-1)
    else:
        head = _weighted(logw, logw - log_q).sum(-1)
        # The student's mass outside the teacher's top-k; the floor keeps log and gradient finite.
        student_tail = (1.0 - log_q.exp().sum(-1)).clamp_min(1e-12).log()
        t = aux.clamp_min(0.0)
        per_row = head + torch.where(t > 0, t * (t.clamp_min(1e-30).log() - student_tail), 0.0)
    return per_row.mean() * (temperature * temperature)
