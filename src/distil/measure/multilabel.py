"""Multilabel metrics as sums over batches: mAP, micro/macro F1 at 0.5, and agreement with the teacher.

A multilabel model decides each of its L labels on its own: label l is on when sigmoid(logit) >= 0.5,
i.e. logit >= 0. The metrics, per label l (TP/FP/FN counted over the samples):

* ``mAP``: the mean over labels with at least one positive sample of the average precision of the
  label's scores (sklearn's ``average_precision_score``, average="macro"). To be a sum over batches, the
  logits are binned (`BINS` bins of width 1/32 over [-40, 40], the values beyond in the end bins), and
  samples in one bin are tied scores: the value is exactly sklearn's on the logits rounded down to a
  multiple of 1/32 and clipped to [-40, 40], so exactly sklearn's on the raw logits when no two distinct
  scores of a label share a bin. The range reaches past the confident logits of a trained model (17 to 40,
  sigmoid 1 - 4e-8 to 1 - 4e-18), which [-16, 16] tied in its end bin.
* ``micro_f1``: 2 TP / (2 TP + FP + FN) over all labels' counts together;
* ``macro_f1``: the mean over labels of the same ratio, leaving out labels with no positive sample and
  no positive decision (0/0);
* ``agreement``: the share of (sample, label) decisions equal to the teacher's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.errors import DataError

# Bins of width 1/32 over [-LOGIT_RANGE, LOGIT_RANGE]: beyond 40 a sigmoid differs from 1 by under 5e-18.
LOGIT_RANGE = 40.0
BINS = 2560


def decisions(logits: Tensor) -> Tensor:
    """(B, L) bool: the labels a model turns on (logit >= 0, i.e. sigmoid >= 0.5)."""
    return logits >= 0


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or tuple(labels.shape) != tuple(logits.shape):
        raise DataError(
            f"multilabel evaluation compares (N, L) outputs with (N, L) 0/1 labels, got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}; build the model with one output per label."
        )


def multilabel_sums(logits: Tensor, labels: Tensor, reference: Tensor | None) -> Tensor:
    """The sums of one (B, L) batch, float64 on the logits' device (size :func:`sums_size`).

    Layout: [TP (L), FP (L), FN (L), agreeing decisions, decisions compared, reference given,
    positives per (label, bin) (L*BINS), negatives per (label, bin) (L*BINS)].
    """
    _check(logits, labels)
    width = logits.shape[1]
    truth = labels.to(logits.device) >= 0.5
    pred = decisions(logits)
    tp = (pred & truth).sum(0)
    fp = (pred & ~truth).sum(0)
    fn = (~pred & truth).sum(0)
    if reference is not None:
        same = (pred == reference.to(logits.device).bool()).sum().reshape(1)
        compared = torch.full_like(same, pred.numel())
        given = torch.ones_like(same)
    else:
        same = compared = given = torch.zeros(1, dtype=torch.long, device=logits.device)
    scaled = (logits.float().clamp(-LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) * (BINS / (2 * LOGIT_RANGE))
    bins = scaled.long().clamp(max=BINS - 1)
    cell = (torch.arange(width, device=logits.device) * BINS).unsqueeze(0) + bins
    pos = torch.bincount(cell[truth], minlength=width * BINS)
    neg = torch.bincount(cell[~truth], minlength=width * BINS)
    return torch.cat([tp, fp, fn, same, compared, given, pos, neg]).double()


def sums_size(width: int) -> int:
    """The number of sums :func:`multilabel_sums` gives for `width` labels."""
    return 3 * width + 3 + 2 * width * BINS


def _average_precision(pos: Tensor, neg: Tensor) -> Tensor:
    """(L,) AP per label from (L, BINS) positive/negative counts per score bin (ties within a bin)."""
    # Thresholds from the highest bin down: precision and recall at each, as sklearn's step-wise sum.
    tp = pos.flip(1).cumsum(1)
    fp = neg.flip(1).cumsum(1)
    total = pos.sum(1, keepdim=True)
    precision = tp / (tp + fp).clamp(min=1)
    return (pos.flip(1) * precision).sum(1) / total.squeeze(1).clamp(min=1)


def multilabel_finish(totals: Tensor, width: int) -> dict[str, float | None]:
    """mAP, micro/macro F1 and agreement from the totals of :func:`multilabel_sums`.

    Raises:
        DataError: no label has a positive sample (mAP is then undefined).
    """
    tp, fp, fn = totals[:width], totals[width : 2 * width], totals[2 * width : 3 * width]
    same, compared, given = (float(v) for v in totals[3 * width : 3 * width + 3])
    cells = totals[3 * width + 3 :].reshape(2, width, BINS)
    has_pos = cells[0].sum(1) > 0
    if not bool(has_pos.any()):
        raise DataError(
            "multilabel evaluation: no label has a positive sample in the split, so mAP is undefined; "
            "evaluate on a split where some labels are 1."
        )
    ap = _average_precision(cells[0], cells[1])
    f1_den = 2 * tp + fp + fn
    counted = f1_den > 0
    micro_den = float(f1_den.sum())
    m_ap = float(ap[has_pos].mean())
    return {
        "accuracy": m_ap,
        "mAP": m_ap,
        "micro_f1": float(2 * tp.sum()) / micro_den if micro_den else 0.0,
        "macro_f1": float((2 * tp[counted] / f1_den[counted]).mean()) if bool(counted.any()) else 0.0,
        "agreement": same / compared if given > 0 and compared > 0 else None,
    }
