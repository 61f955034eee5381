"""Multilabel metrics (issue 26.2) against scikit-learn and hand counts, streamed and whole."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

from distil.data.bundle import Split
from distil.errors import DataError
from distil.measure.multilabel import BINS, LOGIT_RANGE, decisions, multilabel_finish, multilabel_sums
from distil.measure.tasks import MetricInputs, split_quality, task_metrics


def _scores(n: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and logits at bin centres (so every distinct score has its own bin, as sklearn sees it)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, width, generator=g) < 0.35).float()
    y[0] = 1.0  # every label has a positive
    step = 2 * LOGIT_RANGE / BINS
    z = torch.randint(-200, 200, (n, width), generator=g).float() * step + step / 2 + 1.5 * y
    return y, ((z + LOGIT_RANGE) / step).floor() * step - LOGIT_RANGE + step / 2


def test_map_and_f1_equal_sklearn() -> None:
    y, z = _scores(120, 5, 0)
    got = multilabel_finish(multilabel_sums(z, y, None), 5)
    assert got["mAP"] == pytest.approx(
        average_precision_score(y.numpy(), z.numpy(), average="macro"), abs=1e-9
    )
    assert got["accuracy"] == got["mAP"]
    pred = (z >= 0).numpy()
    assert got["micro_f1"] == pytest.approx(f1_score(y.numpy(), pred, average="micro"), abs=1e-9)
    assert got["macro_f1"] == pytest.approx(f1_score(y.numpy(), pred, average="macro"), abs=1e-9)
    assert got["agreement"] is None


def test_agreement_is_the_share_of_equal_decisions() -> None:
    z = torch.tensor([[1.0, -1.0], [2.0, 3.0]])
    teacher = torch.tensor([[1.0, 1.0], [2.0, 3.0]])
    got = multilabel_finish(multilabel_sums(z, torch.ones(2, 2), decisions(teacher)), 2)
    assert got["agreement"] == 0.75  # 3 of 4 (sample, label) decisions match


def test_streamed_over_batches_equals_one_pass_and_whole_logits() -> None:
    y, z = _scores(90, 4, 1)
    x = torch.randn(90, 3)
    weight = torch.linalg.lstsq(x, z).solution
    model = torch.nn.Linear(3, 4, bias=False)
    model.weight.data = weight.T.contiguous()
    logits = model(x).detach()
    whole = task_metrics("multilabel", MetricInputs(logits, y))
    streamed = split_quality(model, Split(x, y), "multilabel", batch_size=7).metrics
    for name in ("mAP", "micro_f1", "macro_f1"):
        assert streamed[name] == pytest.approx(whole[name], abs=1e-12)


def test_no_positive_label_is_an_error() -> None:
    with pytest.raises(DataError, match="no label has a positive"):
        multilabel_finish(multilabel_sums(torch.randn(4, 3), torch.zeros(4, 3), None), 3)


def test_map_ranks_confident_logits_17_to_40_as_sklearn() -> None:
    # A trained model's confident logits (17..40) were tied in the end bin of [-16, 16]: mAP lost the ranking.
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0], [0.0]])
    z = torch.tensor([[40.0], [17.0], [35.0], [20.0], [30.0], [25.0]])
    got = multilabel_finish(multilabel_sums(z, y, None), 1)["mAP"]
    assert got == pytest.approx(average_precision_score(y.numpy(), z.numpy()), abs=1e-9)
    assert got == pytest.approx(1.0)
