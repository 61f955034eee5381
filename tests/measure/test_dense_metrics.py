"""Dense metrics (issue 26.1): mIoU and pixel accuracy from streamed confusion sums, against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, jaccard_score

from distil.data.batch import IGNORE_INDEX
from distil.data.bundle import Split
from distil.errors import DataError
from distil.measure.dense import dense_finish, dense_sums
from distil.measure.tasks import split_quality


class _Fixed(torch.nn.Module):
    """Returns stored logits for the inputs' sample indices (inputs are the indices)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.long().flatten()]


def test_streamed_miou_and_pixel_accuracy_match_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 4, 3, 3, generator=g)
    labels = torch.randint(0, 3, (9, 3, 3), generator=g)  # class 3 never labelled, maybe predicted
    labels[0, 0] = IGNORE_INDEX
    x = torch.arange(9).float().unsqueeze(1)
    quality = split_quality(_Fixed(logits), Split(x, labels), "dense", batch_size=4)
    valid = labels != IGNORE_INDEX
    y, p = labels[valid].numpy(), logits.argmax(1)[valid].numpy()
    present = np.union1d(y, p)
    assert quality.metrics["mIoU"] == pytest.approx(jaccard_score(y, p, labels=present, average="macro"))
    assert quality.metrics["pixel_accuracy"] == pytest.approx(accuracy_score(y, p))
    assert quality.metrics["accuracy"] == quality.metrics["mIoU"] and quality.metrics["agreement"] is None


def test_agreement_counts_labelled_pixels_equal_to_the_teacher() -> None:
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 0] = 1  # predicts 1, 0, 0
    labels = torch.tensor([[[1, 0, IGNORE_INDEX]]])
    ref = torch.tensor([[[1, 1, 0]]])
    found = dense_finish(dense_sums(logits, labels, ref), 2)
    assert found["agreement"] == 0.5 and found["pixel_accuracy"] == 1.0 and found["mIoU"] == 1.0


def test_labels_outside_the_classes_and_unlabelled_splits_are_refused() -> None:
    with pytest.raises(DataError, match=r"must lie in \[0, 2\)"):
        dense_sums(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 5]]]), None)
    with pytest.raises(DataError, match="no labelled pixel"):
        dense_finish(dense_sums(torch.zeros(1, 2, 1, 1), torch.full((1, 1, 1), IGNORE_INDEX), None), 2)
