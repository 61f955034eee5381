"""Regression metrics as sums over batches: R^2, MAE, RMSE, and agreement as R^2 to the teacher.

For D outputs (target columns), over the N samples of a split:

* ``r2``: per output 1 - sum (y - s)^2 / sum (y - mean y)^2, averaged over the outputs (sklearn's
  ``r2_score``, multioutput="uniform_average"); it is the report's quality column;
* ``mae``: mean |y - s| over samples and outputs; ``rmse``: the root of the mean (y - s)^2;
* ``agreement``: the same R^2 with the teacher's outputs in place of the targets: how much of the
  teacher's variation the student reproduces (1: identical outputs).

The sums are per output: count, sum |e|, sum e^2, sum y, sum y^2 and, with a teacher, sum t, sum t^2,
sum (s - t)^2, so the sum of squares around the mean follows as sum y^2 - (sum y)^2 / N.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.errors import DataError


def _rows(values: Tensor, width: int) -> Tensor:
    """(B,) or (B, D) values as (B, D) float64."""
    return values.reshape(values.shape[0], width).double()


def regression_sums(outputs: Tensor, targets: Tensor, reference: Tensor | None) -> Tensor:
    """The sums of one batch, float64 on the outputs' device: [N, then per output (D each): sum |e|,
    sum e^2, sum y, sum y^2, sum t, sum t^2, sum (s - t)^2, then reference given]."""
    width = outputs.shape[-1]
    if outputs.dim() != 2 or targets.numel() != outputs.numel():
        raise DataError(
            f"regression evaluation compares (N, D) outputs with (N, D) targets, got {tuple(outputs.shape)} "
            f"and {tuple(targets.shape)}; build the model with one output per target column."
        )
    s = outputs.double()
    y = _rows(targets.to(outputs.device), width)
    err = s - y
    n = torch.full((1,), float(s.shape[0]), dtype=torch.float64, device=s.device)
    if reference is not None:
        t = _rows(reference.to(outputs.device), width)
        teacher = [t.sum(0), t.square().sum(0), (s - t).square().sum(0)]
        given = torch.ones(1, dtype=torch.float64, device=s.device)
    else:
        teacher = [torch.zeros(width, dtype=torch.float64, device=s.device)] * 3
        given = torch.zeros(1, dtype=torch.float64, device=s.device)
    parts = [err.abs().sum(0), err.square().sum(0), y.sum(0), y.square().sum(0), *teacher]
    return torch.cat([n, *parts, given])


def sums_size(width: int) -> int:
    """The number of sums :func:`regression_sums` gives for `width` outputs."""
    return 2 + 7 * width


# A column whose spread around its mean is below this fraction of its sum of squares is constant: float64
# cancellation leaves ~1e-16 of it, so real variation of one part in 1e5 of the mean is still counted.
CONSTANT_SPREAD = 1e-10


def _r2(residual: Tensor, total: Tensor, mean_sq: Tensor, n: float) -> float | None:
    """Mean over outputs of 1 - residual / (sum of squares around the mean); None when every output is
    constant (R^2 undefined), and outputs that are constant are left out.

    Constant is relative to the column's own scale (its sum of squares, float64 sums): targets in units of
    1e-7 vary as much as any, and a constant column of 2000s leaves only rounding in `spread`."""
    spread = total - mean_sq.square() / n
    ok = spread > CONSTANT_SPREAD * total
    if not bool(ok.any()):
        return None
    return float((1 - residual[ok] / spread[ok]).mean())


def regression_finish(totals: Tensor, width: int) -> dict[str, float | None]:
    """R^2, MAE, RMSE and agreement (R^2 to the teacher) from the totals of :func:`regression_sums`.

    Raises:
        DataError: an empty split, or targets constant in every output (R^2 undefined).
    """
    n = float(totals[0])
    if n == 0:
        raise DataError("regression evaluation: the split holds no samples.")
    abs_e, sq_e, sum_y, sum_y2, sum_t, sum_t2, sq_st = totals[1:-1].reshape(7, width)
    r2 = _r2(sq_e, sum_y2, sum_y, n)
    if r2 is None:
        raise DataError(
            "regression evaluation: every target column is constant over the split, so R^2 is undefined; "
            "evaluate on a split whose targets vary."
        )
    return {
        "accuracy": r2,
        "r2": r2,
        "mae": float(abs_e.sum()) / (n * width),
        "rmse": (float(sq_e.sum()) / (n * width)) ** 0.5,
        "agreement": _r2(sq_st, sum_t2, sum_t, n) if float(totals[-1]) > 0 else None,
    }
