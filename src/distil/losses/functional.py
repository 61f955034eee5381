"""Distillation losses as pure functions: tensors in, scalar tensor out.

Shapes of the logit losses: logits are (B, K) for B samples and K classes, or (B, T, V) for B sequences
of T positions over a vocabulary of V; labels are (B,) or (B, T) int64. An optional `mask` ((B,) or, for
sequences, (B, T) bool) marks the positions that count; (B, T) labels equal to `IGNORE_INDEX` (-100, the
Hugging Face convention) are left out of the label losses too. Every logit loss is the mean, over the
valid positions, of its per-position value (for (B, K) logits without a mask: over the batch, exactly as
before), so a padded sequence and a batch of classes are the same computation on flattened rows. A batch
with no valid position gives 0 (with a gradient path), not NaN.

Both layouts take the one path of `distil.losses.chunked`: positions are rows ((B, K) is B rows, (B, T, V)
is B*T) weighted by mask / count (no boolean selection, so no host synchronisation), each loss computed by
its one row kernel, a chunk of rows at a time with that kernel's gradient as backward, so no fp32
(B, T, V) softmax is kept from forward to backward. `chunk_size` (rows per chunk) tunes it; None picks
about 8M elements per chunk.

Feature and relational losses take (B, ...) tensors per sample and have no mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# A (B, T) label that no loss counts (Hugging Face's padding label); the batch contract defines it.
from distil.data.batch import IGNORE_INDEX as IGNORE_INDEX
from distil.losses.chunked import row_loss


def valid_rows(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The logits of the valid positions as rows: (B, K) or (B, T, V) -> (N_valid, K or V).

    Args:
        logits: (B, K) or (B, T, V).
        mask: None (every position counts), (B,) bool (the samples, or whole sequences, that count), or
            (B, T) bool for (B, T, V) logits (the positions that count).

    Returns:
        (B, K) logits without a mask are returned as they are (no copy); otherwise the flattened rows of
        the positions where `mask` is true.

    Raises:
        ValueError: logits that are not 2-D or 3-D, or a mask whose shape fits neither convention.
    """
    if logits.dim() not in (2, 3):
        raise ValueError(
            f"logit losses take (B, K) or (B, T, V) logits, got shape {tuple(logits.shape)}; "
            "flatten other layouts to one of these"
        )
    if mask is None:
        return logits if logits.dim() == 2 else logits.reshape(-1, logits.shape[-1])
    mask = _expand_mask(mask, logits.shape[:-1]).to(logits.device)
    return logits.reshape(-1, logits.shape[-1])[mask.reshape(-1)]


def _expand_mask(mask: torch.Tensor, positions: torch.Size) -> torch.Tensor:
    """A (B,) or (B, T) mask as a bool mask of `positions` ((B,) or (B, T)), or a clear error."""
    if tuple(mask.shape) == tuple(positions):
        return mask.bool()
    if mask.dim() == 1 and len(positions) == 2 and mask.shape[0] == positions[0]:
        return mask.bool().unsqueeze(1).expand(positions)
    raise ValueError(
        f"mask {tuple(mask.shape)} does not fit logits with positions {tuple(positions)}: give a (B,) mask "
        "of samples or a (B, T) mask of the positions that count"
    )


def position_weights(
    positions: torch.Size,
    mask: torch.Tensor | None,
    labels: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(N,) float weights of the flattened positions whose sum is 1 over the valid ones (0 elsewhere).

    Valid: `mask` true (all when None) and, with `labels`, the label is not `IGNORE_INDEX`. The mean is a
    tensor division (count floored at 1, so no valid position gives all-zero weights), with no host sync.
    """
    keep: torch.Tensor | None = None
    if labels is not None:
        if tuple(labels.shape) != tuple(positions):
            raise ValueError(
                f"labels {tuple(labels.shape)} do not fit logits with positions {tuple(positions)}: (B, K) "
                "logits take (B,) labels and (B, T, V) logits take (B, T) labels"
            )
        keep = labels != IGNORE_INDEX
    if mask is not None:
        m = _expand_mask(mask, positions)
        keep = m if keep is None else keep & m.to(keep.device)
    if keep is None:
        n = math.prod(positions)
        return torch.full((n,), 1.0 / max(n, 1), device=device)
    w = keep.reshape(-1).to(device=device, dtype=torch.float32)
    return w / w.sum().clamp(min=1.0)


def _rows(logits: torch.Tensor) -> torch.Tensor:
    if logits.dim() not in (2, 3):
        raise ValueError(
            f"logit losses take (B, K) or (B, T, V) logits, got shape {tuple(logits.shape)}; "
            "flatten other layouts to one of these"
        )
    return logits.reshape(-1, logits.shape[-1])  # a view for contiguous logits and for [..., :V] slices


def _divergence(
    kind: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None,
    beta: float = 0.5,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The mean over the valid positions of a per-position divergence: (B, K) or (B, T, V) logits viewed
    as rows for its row kernel (chunked, sync-free)."""
    _check_same(student, teacher, "logits")
    rows_s, rows_t = _rows(student), _rows(teacher)
    weights = position_weights(student.shape[:-1], mask, device=student.device)
    return row_loss(
        kind,
        rows_s,
        rows_t,
        weights,
        temperature=temperature,
        beta=beta,
        chunk_size=chunk_size,
    )


def kd_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Hinton's soft-target loss: T^2 * KL(p_teacher^T || p_student^T), averaged over the valid positions.

    The T^2 factor keeps the gradient scale of the soft term independent of T (Hinton et al. 2015). On
    (B, K) logits without a mask this is KL's "batchmean" over the batch, as always.

    Args:
        student_logits: (B, K) or (B, T, V) raw student outputs.
        teacher_logits: the teacher's, same shape (no gradient needed).
        temperature: T > 0; larger T gives softer distributions.
        mask: optional (B,) or (B, T) bool, the positions that count.
        chunk_size: positions per chunk of the (B, T, V) path (module docstring).

    Returns:
        A scalar tensor.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ: do teacher and student have the same classes?"
        )
    return _divergence("kl", student_logits, teacher_logits, temperature, mask, chunk_size=chunk_size)


def cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
    mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Hard-label cross-entropy, averaged over the valid positions.

    Args:
        logits: (B, K) or (B, T, V).
        labels: (B,) or (B, T); a label equal to `IGNORE_INDEX` (-100) does not count.
        label_smoothing: as in `torch.nn.functional.cross_entropy`.
        mask: optional (B,) or (B, T) bool, the positions that count (and-ed with the labels' own).
        chunk_size: positions per chunk of the (B, T, V) path (module docstring).

    Returns:
        A scalar tensor.
    """
    # Labels of IGNORE_INDEX (padding; samples of an unlabelled transfer set) get weight 0, and a batch
    # without any label gives 0 (F.cross_entropy's mean would be 0/0 = NaN), with no host sync.
    rows = _rows(logits)
    weights = position_weights(logits.shape[:-1], mask, labels, device=logits.device)
    return row_loss(
        "ce",
        rows,
        None,
        weights,
        labels=labels.reshape(-1),
        smoothing=label_smoothing,
        chunk_size=chunk_size,
    )


# ---------------------------------------------------------------------------------------------------
# Logit losses. Shapes: logits (B, K) or (B, T, V); labels (B,) or (B, T) int64; optional mask (B,) or
# (B, T) bool. All return a scalar averaged over the valid positions (module docstring).
# ---------------------------------------------------------------------------------------------------


def _check_same(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {what} {tuple(student.shape)} and teacher {what} {tuple(teacher.shape)} differ; "
            "add an adapter or pick layers with equal shapes"
        )


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Reverse KL, T^2 * KL(p_student^T || p_teacher^T): mode-seeking, the student need not cover every
    class the teacher spreads mass on. Logits (B, K) or (B, T, V), optional mask (B,) or (B, T); returns
    the mean over the valid positions."""
    return _divergence("rkl", student_logits, teacher_logits, temperature, mask, chunk_size=chunk_size)


def js_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence, times T^2, as in GKD (Agarwal et al. 2024) and TRL:

        JSD(beta) = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m),  m = beta * p_t + (1 - beta) * p_s

    with p_t, p_s the teacher's and student's softened distributions. beta = 0.5 is the symmetric JSD,
    bounded by T^2 * log 2. The end points follow TRL's `generalized_jsd_loss`: beta = 0 is the forward
    KL(p_t || p_s) (`kd`) and beta = 1 the reverse KL(p_s || p_t) (`rkl`) - the formula itself tends to 0
    there, so they are the KLs it interpolates between, not its limits.

    Args:
        student_logits: (B, K) or (B, T, V).
        teacher_logits: the same shape.
        temperature: T.
        mask: optional (B,) or (B, T) bool, the positions that count.
        beta: the teacher's weight in the mixture, in [0, 1].
        chunk_size: positions per chunk of the (B, T, V) path (module docstring).

    Returns:
        A scalar tensor: the mean over the valid positions.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"js beta must be in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta}")
    if beta == 0.0:
        return kd_kl(student_logits, teacher_logits, temperature, mask, chunk_size=chunk_size)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, temperature, mask, chunk_size=chunk_size)
    return _divergence("jsd", student_logits, teacher_logits, temperature, mask, beta, chunk_size)


def total_variation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Total variation distance T^2 * 0.5 * sum |p_s^T - p_t^T| (as in DistiLLM's TVD baseline), averaged
    over the valid positions. Bounded (by T^2), symmetric, and its gradient does not blow up where the
    teacher puts almost no mass. Logits (B, K) or (B, T, V), optional mask (B,) or (B, T)."""
    return _divergence("tvd", student_logits, teacher_logits, temperature, mask, chunk_size=chunk_size)


def logit_mse(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean squared error between raw logits (Ba & Caruana 2014): over the valid positions, the mean of
    each position's mean over the K (or V) logits. Logits (B, K) or (B, T, V), optional mask (B,) or
    (B, T); returns a scalar."""
    return _divergence("mse", student_logits, teacher_logits, 1.0, mask, chunk_size=chunk_size)


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float = 1.0,
    beta: float = 8.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): alpha * TCKD + beta * NCKD, each scaled by T^2.

    TCKD is the binary KL between (p_target, 1 - p_target) of teacher and student; NCKD is the KL
    between the distributions over the non-target classes only (the target logit masked out).

    Args:
        student_logits: (B, K) or (B, T, V).
        teacher_logits: the same shape.
        labels: (B,) or (B, T) ground-truth classes (tokens); `IGNORE_INDEX` positions do not count.
        temperature: T.
        alpha: weight of the target-class term.
        beta: weight of the non-target term (8 in the paper's CIFAR-100 set-up).
        mask: optional (B,) or (B, T) bool, the positions that count.

    Returns:
        A scalar tensor: the mean over the valid positions.
    """
    _check_same(student_logits, teacher_logits, "logits")
    # Every position is a row, weighted (no selection of valid rows, so no host sync); IGNORE_INDEX labels
    # get weight 0 and are read as class 0 (any class would do: the row does not count).
    weights = position_weights(student_logits.shape[:-1], mask, labels, device=student_logits.device)
    t = temperature
    s, te = _rows(student_logits).float() / t, _rows(teacher_logits).float() / t
    labels = labels.reshape(-1).clamp(min=0)
    # scatter, not F.one_hot: one_hot reads the largest label back to the host to check it.
    gt = torch.zeros_like(s, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), True)
    ps, pt = F.softmax(s, dim=1), F.softmax(te, dim=1)
    ps_bin = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], dim=1).clamp_min(1e-12)
    pt_bin = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], dim=1)
    # Masking the target logit with a large negative value removes it from both softmaxes.
    log_ps_nt = F.log_softmax(s.masked_fill(gt, -1e4), dim=1)
    pt_nt = F.softmax(te.masked_fill(gt, -1e4), dim=1)
    rows = alpha * F.kl_div(ps_bin.log(), pt_bin, reduction="none").sum(1)
    rows = rows + beta * F.kl_div(log_ps_nt, pt_nt, reduction="none").sum(1)
    return torch.where(weights > 0, rows * weights, 0.0).sum() * (t * t)


def ensemble_logits(
    teacher_logits: list[torch.Tensor], weights: list[float], temperature: float
) -> torch.Tensor:
    """Logits whose T-softened distribution is the weighted mixture of the teachers' softened ones.

    Returns T * log(sum_i w_i softmax(z_i / T)) with weights normalised to sum 1, so
    softmax(result / T) == sum_i w_i softmax(z_i / T) exactly: any logit loss at temperature T then
    distills from the ensemble of softened distributions. Each input (B, K) or (B, T, V); returns the same
    shape (softmax over the last dimension).
    """
    total = _weight_total(teacher_logits, weights)
    t = temperature
    # log(0) = -inf drops a zero-weight teacher; logsumexp is stable for the rest.
    log_terms = [
        F.log_softmax(z.float() / t, dim=-1) + (math.log(w / total) if w > 0 else -math.inf)
        for z, w in zip(teacher_logits, weights, strict=True)
    ]
    log_mix = torch.logsumexp(torch.stack(log_terms), dim=0)
    return log_mix * t


def mean_logits(teacher_logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The weighted mean of the teachers' logits, sum_i w_i z_i with weights normalised to sum 1.

    FedDF's ensemble (Lin et al. 2020): the logits are averaged, then softened by the KD term's T. Each
    input (B, K) or (B, T, V); returns the same shape, float32.
    """
    total = _weight_total(teacher_logits, weights)
    share = torch.tensor([w / total for w in weights], device=teacher_logits[0].device)
    return torch.tensordot(share, torch.stack([z.float() for z in teacher_logits]), dims=1)


def _weight_total(teacher_logits: list[torch.Tensor], weights: list[float]) -> float:
    """The sum of an ensemble's weights, after checking one non-negative weight per teacher."""
    if len(teacher_logits) != len(weights) or not teacher_logits:
        raise ValueError(
            f"need one weight per teacher, got {len(teacher_logits)} teachers, {len(weights)} weights"
        )
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"teacher weights must be >= 0 with a positive sum, got {weights}")
    return total


# ---------------------------------------------------------------------------------------------------
# Feature losses. Feature maps (B, C, H, W) or vectors (B, D).
# ---------------------------------------------------------------------------------------------------


def fitnet_hint(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss (Romero et al. 2015): mean squared error between the (adapted) student
    feature and the teacher feature of the same shape."""
    _check_same(student_feature, teacher_feature, "features")
    return F.mse_loss(student_feature.float(), teacher_feature.float())


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    distance: str = "mse",
) -> torch.Tensor:
    """Per-token hidden-state distillation: the mean over the valid positions of a per-position distance.

    Args:
        student_hidden: (B, T, D) (or (B, D)) student hidden states, already projected to the teacher's
            width where they differ.
        teacher_hidden: the teacher's, same shape.
        mask: optional (B,) or (B, T) bool, the positions that count.
        distance: "mse" (the mean over D of the squared difference, TinyBERT) or "cosine" (1 - cosine
            similarity, DistilBERT's hidden-state term).

    Returns:
        A float32 scalar (sync-free: padded positions are weighted 0, not selected out).
    """
    _check_same(student_hidden, teacher_hidden, "hidden states")
    s, t = student_hidden.float(), teacher_hidden.float()
    if distance == "mse":
        per = (s - t).pow(2).mean(-1)
    elif distance == "cosine":
        per = 1.0 - F.cosine_similarity(s, t, dim=-1)
    else:
        raise ValueError(f"hidden-state distance must be 'mse' or 'cosine', got {distance!r}")
    weights = position_weights(per.shape, mask, device=per.device)
    return torch.where(weights > 0, per.reshape(-1) * weights, 0.0).sum()


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a (B, C, H, W) map: L2-normalised mean over channels of |f|^p, as (B, H*W)."""
    if feature.dim() != 4:
        raise ValueError(
            f"attention transfer needs (B, C, H, W) feature maps, got shape {tuple(feature.shape)}"
        )
    return F.normalize(feature.float().abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer(
    student_feature: torch.Tensor, teacher_feature: torch.Tensor, p: float = 2.0
) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017): mean squared difference of the normalised
    attention maps. Channel counts may differ; spatial sizes must match. Maps (B, C, H, W)."""
    a_s, a_t = attention_map(student_feature, p), attention_map(teacher_feature, p)
    if a_s.shape != a_t.shape:
        raise ValueError(
            f"attention maps need equal spatial sizes: student feature {tuple(student_feature.shape)}, "
            f"teacher feature {tuple(teacher_feature.shape)}; pick layers at the same resolution"
        )
    return (a_s - a_t).pow(2).mean()


# ---------------------------------------------------------------------------------------------------
# Relational losses: structure among the samples of a batch. Embeddings (B, D) (maps are flattened).
# ---------------------------------------------------------------------------------------------------


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


def rkd_distance(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD distance term (Park et al. 2019): smooth-L1 between pairwise distances, each normalised by
    its mean non-zero distance. Embeddings (B, Ds) and (B, Dt); dimensions may differ."""
    s, t = student_emb.float().flatten(1), teacher_emb.float().flatten(1)
    with torch.no_grad():
        td = _pairwise_distances(t)
        td = td / td[td > 0].mean()
    sd = _pairwise_distances(s)
    sd = sd / sd[sd > 0].mean()
    return F.smooth_l1_loss(sd, td)


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (B, B, D): unit vectors e_j - e_i
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_angle(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """RKD angle term: smooth-L1 between the cosines of the angles of all sample triplets. (B, D)."""
    s, t = student_emb.float().flatten(1), teacher_emb.float().flatten(1)
    with torch.no_grad():
        ta = _angles(t)
    return F.smooth_l1_loss(_angles(s), ta)


def pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas 2018): KL between the teacher's and the
    student's conditional distributions of cosine similarity between samples. (B, D)."""
    s = F.normalize(student_emb.float().flatten(1), dim=1, eps=eps)
    t = F.normalize(teacher_emb.float().flatten(1), dim=1, eps=eps)
    s_sim, t_sim = (s @ s.t() + 1) / 2, (t @ t.t() + 1) / 2
    s_sim = s_sim / s_sim.sum(1, keepdim=True)
    t_sim = t_sim / t_sim.sum(1, keepdim=True)
    return (t_sim * torch.log((t_sim + eps) / (s_sim + eps))).mean()


def similarity_preserving(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori 2019): squared Frobenius distance between the row-normalised
    (B, B) Gram matrices of the flattened features, divided by B^2."""
    b = student_feature.shape[0]
    s, t = student_feature.float().flatten(1), teacher_feature.float().flatten(1)
    gs, gt = F.normalize(s @ s.t(), dim=1), F.normalize(t @ t.t(), dim=1)
    return (gt - gs).pow(2).sum() / (b * b)


# ---------------------------------------------------------------------------------------------------
# Contrastive losses.
# ---------------------------------------------------------------------------------------------------


def contrastive_nce(
    anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """InfoNCE: -log softmax over [positive, negatives] of the cosine similarities divided by T.

    Args:
        anchor: (B, D) L2-normalised embeddings.
        positive: (B, D) the matching embeddings.
        negatives: (B, K, D) K non-matching embeddings per anchor.
        temperature: tau (0.07 in CRD).

    Returns:
        A scalar: the mean over the batch.
    """
    pos = (anchor * positive).sum(1, keepdim=True)  # (B, 1)
    neg = torch.bmm(negatives, anchor.unsqueeze(2)).squeeze(2)  # (B, K)
    logits = torch.cat([pos, neg], dim=1).float() / temperature
    return F.cross_entropy(logits, torch.zeros(len(anchor), dtype=torch.long, device=anchor.device))
