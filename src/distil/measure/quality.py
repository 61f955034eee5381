"""Quality: predictions and the metrics computed from them (accuracy, agreement, per-class accuracy,
next-token NLL, perplexity).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distil.data.batch import IGNORE_INDEX, INPUTS, call_model, to_device
from distil.data.bundle import SampleSplit, Split
from distil.errors import DataError
from distil.measure._util import _check_positive, _eval_mode, _model_device


def _top1(logits_or_preds: Tensor, labels: Tensor | None = None) -> Tensor:
    """Class indices from ``(N, C)`` or ``(N, T, V)`` logits, or predictions passed through.

    Predictions are ``(N,)``, or ``(N, T)`` when ``labels`` of that shape tell them from ``(N, C)`` logits.
    """
    if labels is not None and logits_or_preds.shape == labels.shape:
        return logits_or_preds
    if logits_or_preds.ndim in (2, 3):
        return logits_or_preds.argmax(dim=-1)
    if logits_or_preds.ndim == 1:
        return logits_or_preds
    raise DataError(
        "expected logits of shape (N, C) or (N, T, V), or predictions of shape (N,), got "
        f"{tuple(logits_or_preds.shape)}."
    )


def _valid(preds: Tensor, mask: Tensor | None, labels: Tensor | None = None) -> Tensor | None:
    """The bool mask of positions that count: ``mask`` ((N,) or (N, T)), and-ed with labels that are not
    ``IGNORE_INDEX`` (unlabelled samples, padded positions); ``None`` when every position counts."""
    valid = None
    if labels is not None and labels.shape == preds.shape:
        # (N,) samples of an unlabelled transfer set, (N, T) padding: IGNORE_INDEX never counts.
        valid = labels.to(preds.device) != IGNORE_INDEX
    if mask is not None:
        m = mask.to(preds.device).bool()
        if m.ndim == 1 and preds.ndim == 2:
            m = m.unsqueeze(1).expand(preds.shape)
        if m.shape != preds.shape:
            raise DataError(
                f"mask {tuple(mask.shape)} does not fit predictions {tuple(preds.shape)}: give (N,) or (N, T)."
            )
        valid = m if valid is None else valid & m
    return valid


def _mean_over(hits: Tensor, valid: Tensor | None, what: str) -> float:
    """The fraction of true ``hits`` among the valid positions."""
    if valid is not None:
        hits = hits[valid]
    if hits.numel() == 0:
        raise DataError(f"{what}: no valid positions (the mask or the labels exclude them all).")
    return hits.float().mean().item()


def _check_same_length(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{what}: got {a.shape[0]} and {b.shape[0]} samples; they must be equal.")
    if a.shape[0] == 0:
        raise DataError(f"{what}: got 0 samples; evaluate on a non-empty set.")


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` on ``x``, computed in batches in eval mode.

    Args:
        model: The model; its training flags are restored afterwards.
        x: Inputs, shape ``(N, ...)``; moved batch by batch to the model's device.
        batch_size: Samples per forward pass (bounds memory, not results).

    Returns:
        Logits, shape ``(N, C)``, on ``x``'s device.

    Raises:
        ConfigError: If ``batch_size`` is not positive.
    """
    _check_positive("batch_size", batch_size)
    device = _model_device(model)
    outputs: list[Tensor] = []
    with _eval_mode(model), torch.inference_mode():
        # max(..., 1) runs one (empty) batch for an empty x, so the output keeps its shape.
        for start in range(0, max(x.shape[0], 1), batch_size):
            outputs.append(model(x[start : start + batch_size].to(device)).to(x.device))
    return torch.cat(outputs)


def predict_split(
    model: nn.Module, split: SampleSplit, batch_size: int = 512, start: int = 0, stop: int | None = None
) -> Tensor:
    """Logits of ``model`` on positions [start, stop) of a split, in batches of ``batch_size``, on the CPU.

    An in-memory split takes :func:`predict`; any other is read batch by batch
    (``split.batches``), with the same batches, so both give the same logits.
    """
    if isinstance(split, Split):
        return predict(model, split.x[start:stop], batch_size).cpu()
    _check_positive("batch_size", batch_size)
    device = _model_device(model)
    outputs: list[Tensor] = []
    with _eval_mode(model), torch.inference_mode():
        for batch in split.batches(batch_size, start, stop):
            outputs.append(call_model(model, to_device(batch, device)[INPUTS]).cpu())
    if not outputs:
        return predict(model, split.head(0), batch_size).cpu()
    return torch.cat(outputs)


def accuracy(logits_or_preds: Tensor, y: Tensor, mask: Tensor | None = None) -> float:
    """Top-1 accuracy over the valid positions.

    Args:
        logits_or_preds: Logits ``(N, C)`` or ``(N, T, V)``, or predicted classes ``(N,)`` / ``(N, T)``.
        y: True classes ``(N,)`` or tokens ``(N, T)`` (``IGNORE_INDEX`` positions do not count).
        mask: Optional ``(N,)`` or ``(N, T)`` bool, the positions that count.

    Returns:
        Fraction of correct predictions among the valid positions, in [0, 1].

    Raises:
        DataError: If the sizes differ or there are no valid positions.
    """
    preds = _top1(logits_or_preds, y)
    _check_same_length(preds, y, "accuracy")
    y = y.to(preds.device)
    if preds.shape != y.shape:
        raise DataError(f"accuracy: predictions {tuple(preds.shape)} and labels {tuple(y.shape)} differ.")
    return _mean_over(preds == y, _valid(preds, mask, y), "accuracy")


def agreement(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of (valid) positions where student and teacher predict the same top-1 class.

    A student can beat its teacher's accuracy yet disagree with it often; agreement measures
    how faithfully it imitates, independently of the labels.

    Args:
        student_logits: Logits ``(N, C)`` or ``(N, T, V)``, or predictions ``(N,)``.
        teacher_logits: The same shape.
        mask: Optional ``(N,)`` or ``(N, T)`` bool, the positions that count.

    Returns:
        Agreement, in [0, 1].

    Raises:
        DataError: If the sizes differ or there are no valid positions.
    """
    student, teacher = _top1(student_logits), _top1(teacher_logits)
    _check_same_length(student, teacher, "agreement")
    return _mean_over(student == teacher.to(student.device), _valid(student, mask), "agreement")


def per_class_accuracy(
    logits: Tensor, y: Tensor, num_classes: int, mask: Tensor | None = None
) -> list[float]:
    """Top-1 accuracy of each true class (over the valid positions).

    Args:
        logits: Logits ``(N, C)`` or ``(N, T, V)``, or predictions ``(N,)`` / ``(N, T)``.
        y: True class indices ``(N,)`` or ``(N, T)``, in ``[0, num_classes)`` (or ``IGNORE_INDEX``).
        num_classes: Number of classes.
        mask: Optional ``(N,)`` or ``(N, T)`` bool, the positions that count.

    Returns:
        ``num_classes`` accuracies in [0, 1]; ``nan`` for a class with no samples.

    Raises:
        DataError: If the sizes differ, there are no samples, or a label is out of range.
    """
    preds = _top1(logits, y)
    _check_same_length(preds, y, "per_class_accuracy")
    y = y.to(preds.device).long()
    valid = _valid(preds, mask, y)
    if valid is not None:
        preds, y = preds[valid], y[valid]
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DataError(
            f"labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]; "
            "check num_classes."
        )
    total = torch.bincount(y, minlength=num_classes)
    correct = torch.bincount(y[preds == y], minlength=num_classes)
    return [c / t if t else float("nan") for c, t in zip(correct.tolist(), total.tolist(), strict=True)]


def _token_valid(logits: Tensor, labels: Tensor, mask: Tensor | None, what: str) -> Tensor:
    """The (N, T) bool positions of (N, T, V) logits that count: labels not IGNORE_INDEX, and `mask`."""
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise DataError(
            f"{what}: expected (N, T, V) logits and (N, T) labels, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}."
        )
    valid = _valid(labels, mask, labels)
    assert valid is not None  # (N, T) labels always give a mask
    return valid.to(logits.device)


def token_nll(
    logits: Tensor, labels: Tensor, mask: Tensor | None = None, chunk: int = 64
) -> tuple[float, int]:
    """The summed next-token negative log-likelihood (nats) over the valid positions, and their count.

    Args:
        logits: ``(N, T, V)`` next-token logits.
        labels: ``(N, T)`` next tokens, ``IGNORE_INDEX`` where a position has none.
        mask: optional ``(N,)`` or ``(N, T)`` bool, the positions that count.
        chunk: sequences per step (the log-softmax of all N x T x V at once could double the memory).
    """
    valid = _token_valid(logits, labels, mask, "token_nll")
    total, count = 0.0, 0
    for b in range(0, logits.shape[0], chunk):
        v = valid[b : b + chunk]
        rows = logits[b : b + chunk][v].double()
        target = labels[b : b + chunk].to(logits.device)[v].long()
        total += (torch.logsumexp(rows, dim=-1) - rows.gather(1, target[:, None])[:, 0]).sum().item()
        count += int(v.sum())
    return total, count


def perplexity(logits: Tensor, labels: Tensor, mask: Tensor | None = None) -> float:
    """exp of the mean next-token cross-entropy over the valid positions (``IGNORE_INDEX`` labels and
    positions outside `mask` do not count).

    Raises:
        DataError: wrong shapes, or no valid position.
    """
    total, count = token_nll(logits, labels, mask)
    if count == 0:
        raise DataError("perplexity: no valid positions (the mask or the labels exclude them all).")
    return float(torch.tensor(total / count, dtype=torch.float64).exp())


def next_token_agreement(
    logits: Tensor, teacher_logits: Tensor, labels: Tensor, mask: Tensor | None = None
) -> float:
    """Fraction of the valid positions (those with a label, within `mask`) where the student's most likely
    next token is the teacher's.

    Raises:
        DataError: wrong shapes, or no valid position.
    """
    if teacher_logits.shape != logits.shape:
        raise DataError(
            f"next_token_agreement: student logits {tuple(logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; the models need the same tokenizer and data."
        )
    valid = _token_valid(logits, labels, mask, "next_token_agreement")
    hits = logits.argmax(-1) == teacher_logits.to(logits.device).argmax(-1)
    return _mean_over(hits, valid, "next_token_agreement")
