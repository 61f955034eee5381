"""Dense (per-pixel) metrics as sums over batches: a confusion matrix, then mIoU and pixel accuracy.

Over the labelled pixels of a split (`IGNORE_INDEX`, 255 as saved, left out), with K classes:

* ``mIoU``: per class TP / (TP + FP + FN), averaged over the classes present in the labels or the
  predictions (sklearn's ``jaccard_score(average="macro")``); the report's quality column;
* ``pixel_accuracy``: the share of labelled pixels whose top-1 class is the label's;
* ``agreement``: the share of labelled pixels whose top-1 class is the teacher's.

The sums are the K x K confusion matrix (labels by rows), then agreeing pixels, compared pixels, and
whether a reference was given, so a split is measured batch by batch and across processes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.data.batch import IGNORE_INDEX
from distil.errors import DataError


def pixel_predictions(logits: Tensor) -> Tensor:
    """(B, K, H, W) logits -> (B, H, W) top-1 classes."""
    return logits.argmax(dim=1)


def dense_sums(logits: Tensor, labels: Tensor, reference: Tensor | None) -> Tensor:
    """The sums of one batch, float64 on the logits' device: [K*K confusion, agreeing, compared, given].

    Args:
        logits: (B, K, H, W).
        labels: (B, H, W) classes, `IGNORE_INDEX` where a pixel has none.
        reference: (B, H, W) the teacher's top-1 classes, or None.

    Raises:
        DataError: shapes that do not match, or a label outside [0, K).
    """
    k = logits.shape[1] if logits.dim() == 4 else 0
    if logits.dim() != 4 or tuple(labels.shape) != (logits.shape[0], *logits.shape[2:]):
        raise DataError(
            f"dense evaluation compares (N, K, H, W) logits with (N, H, W) pixel classes, got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}; use a model that keeps H x W on dense data."
        )
    labels = labels.to(logits.device)
    valid = labels != IGNORE_INDEX
    if bool(((labels < 0) & valid).any()) or bool((labels >= k).any()):
        raise DataError(
            f"dense evaluation: pixel labels must lie in [0, {k}) or be 255 (no label); found "
            f"{int(labels[valid].min())}..{int(labels[valid].max())}. Fix the labels or build the model with "
            "one output per class."
        )
    pred = pixel_predictions(logits)
    pairs = labels[valid] * k + pred[valid]
    confusion = torch.bincount(pairs, minlength=k * k).double()
    device = logits.device
    if reference is not None:
        ref = reference.to(device)
        tail = [(pred[valid] == ref[valid]).sum(), valid.sum(), torch.ones((), device=device)]
    else:
        tail = [torch.zeros((), device=device)] * 3
    return torch.cat([confusion, torch.stack([t.double() for t in tail])])


def sums_size(num_classes: int) -> int:
    """The number of sums :func:`dense_sums` gives for K classes."""
    return num_classes * num_classes + 3


def dense_finish(totals: Tensor, num_classes: int) -> dict[str, float | None]:
    """mIoU, pixel accuracy and agreement from the totals of :func:`dense_sums`.

    Raises:
        DataError: a split without a labelled pixel.
    """
    k = num_classes
    confusion = totals[: k * k].reshape(k, k)
    agree, compared, given = (float(v) for v in totals[k * k :])
    labelled = float(confusion.sum())
    if labelled == 0:
        raise DataError("dense evaluation: the split holds no labelled pixel (every label is 255).")
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    miou = float((tp[present] / union[present]).mean())
    return {
        "accuracy": miou,
        "mIoU": miou,
        "pixel_accuracy": float(tp.sum()) / labelled,
        "agreement": agree / compared if given > 0 and compared > 0 else None,
    }
