"""Embedding metrics (issue 26.1): recall@k against sklearn's cosine neighbours, mean cosines, widths."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from distil.data.bundle import Split
from distil.measure.embedding import embedding_finish, embedding_sums, recall_at_k
from distil.measure.tasks import split_quality


def _sk_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x)
    return nn.kneighbors(x, return_distance=False)[:, 1:]  # drop the sample itself


def test_recall_at_k_matches_sklearn_neighbours() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 3))  # two spaces of different widths
    for k in (1, 5):
        na, nb = _sk_neighbours(a, k), _sk_neighbours(b, k)
        want = np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(30)])
        assert abs(recall_at_k(torch.tensor(a), torch.tensor(b), k) - want) < 1e-9
    assert recall_at_k(torch.tensor(a), torch.tensor(3 * a), 5) == 1.0  # scale does not move neighbours
    assert recall_at_k(torch.tensor(a[:4]), torch.tensor(a[:4]), 10) == 1.0  # k bounded by N - 1


def test_mean_cosines_and_widths_that_differ() -> None:
    s, y = torch.randn(6, 4), torch.randn(6, 4)
    want = torch.nn.functional.cosine_similarity(s, y).mean()
    found = embedding_finish(embedding_sums(s, y, torch.randn(6, 2)).cpu())
    assert abs(found["cos_target"] - float(want)) < 1e-6 and found["accuracy"] == found["cos_target"]
    assert (
        found["cos_teacher"] is None and found["agreement"] is None
    )  # a 2-wide teacher: no sample-wise cosine


def test_split_quality_adds_recall_from_the_whole_split() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(25, 3, generator=g), torch.randn(25, 4, generator=g)
    model = torch.nn.Linear(3, 4)
    split = Split(x, y)
    teacher = split_quality(model, split, "embedding", batch_size=7, keep_predictions=True)
    assert teacher.metrics["agreement"] is None and 0 <= teacher.metrics["accuracy"] <= 1
    with torch.no_grad():
        out = model(x)
    assert teacher.metrics["accuracy"] == recall_at_k(out, y, 10)
    # Against itself as the reference: every neighbour is recovered.
    student = split_quality(model, split, "embedding", reference=teacher.predictions, batch_size=7)
    assert student.metrics["agreement"] == 1.0 and abs(student.metrics["cos_teacher"] - 1) < 1e-6
