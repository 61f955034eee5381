"""Embedding metrics: retrieval recall@k against reference neighbours, and mean cosine similarity.

An embedding is judged by the neighbours it finds. For each sample of a split, its k nearest other samples
by cosine similarity in the model's space are compared with its k nearest in a reference space:

* ``recall@k`` (k = 1, 5, 10): the share of the target vectors' k neighbours that the model's k
  neighbours recover, averaged over samples; ``recall@10`` is the report's quality column;
* ``teacher_recall@k``: the same against the teacher's own neighbours (``agreement`` is
  ``teacher_recall@10``); None for the teacher itself;
* ``cos_target`` / ``cos_teacher``: the mean cosine similarity to the target vectors / the teacher's
  embedding, sample by sample (None where the widths differ: a student narrower than its teacher has no
  sample-wise direction to compare).

k is bounded by N - 1 (a split of 6 samples measures recall@10 as recall@5). Neighbours need the whole
split, so recall is computed from the embeddings kept over a pass (:func:`recall_metrics`); the cosines are
sums over batches (:func:`embedding_sums`), which is all a per-epoch evaluation, sharded over processes,
measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.errors import DataError

RECALL_KS = (1, 5, 10)
# Rows of the similarity matrix per block: bounds memory at BLOCK x N floats.
_BLOCK = 1024


def embedding_sums(outputs: Tensor, targets: Tensor, reference: Tensor | None) -> Tensor:
    """The sums of one batch, float64 on the outputs' device: [N, sum cos to targets, targets comparable,
    sum cos to reference, reference comparable] (a pair of another width adds 0 and is marked not comparable)."""
    if outputs.dim() != 2:
        raise DataError(
            f"embedding evaluation needs (N, D) embeddings, got outputs of shape {tuple(outputs.shape)}."
        )
    n = float(outputs.shape[0])
    parts = [torch.tensor([n], dtype=torch.float64, device=outputs.device)]
    for other in (targets, reference):
        if other is not None and other.dim() == 2 and tuple(other.shape) == tuple(outputs.shape):
            cos = F.cosine_similarity(outputs.double(), other.to(outputs.device).double(), dim=1, eps=1e-12)
            parts += [cos.sum().reshape(1), torch.ones(1, dtype=torch.float64, device=outputs.device)]
        else:
            parts += [torch.zeros(2, dtype=torch.float64, device=outputs.device)]
    return torch.cat(parts)


SUMS_SIZE = 5


def embedding_finish(totals: Tensor) -> dict[str, float | None]:
    """Mean cosines from the totals of :func:`embedding_sums`; ``accuracy`` is the cosine to the targets
    until :func:`recall_metrics` replaces it with recall@10 (a per-epoch evaluation keeps the cosine).

    Raises:
        DataError: an empty split.
    """
    n = float(totals[0])
    if n == 0:
        raise DataError("embedding evaluation: the split holds no samples.")
    cos_target = float(totals[1]) / n if float(totals[2]) > 0 else None
    cos_teacher = float(totals[3]) / n if float(totals[4]) > 0 else None
    return {
        "accuracy": cos_target,
        "agreement": cos_teacher,
        "cos_target": cos_target,
        "cos_teacher": cos_teacher,
    }


def neighbours(embeddings: Tensor, k: int) -> Tensor:
    """(N, k) indices of each row's k most cosine-similar other rows (itself excluded), most similar first."""
    unit = F.normalize(embeddings.double(), dim=1, eps=1e-12)
    out = []
    for start in range(0, unit.shape[0], _BLOCK):
        sim = unit[start : start + _BLOCK] @ unit.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = float("-inf")  # a sample is not its own neighbour
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def recall_at_k(embeddings: Tensor, reference: Tensor, k: int) -> float:
    """The share of each sample's k reference neighbours found among its k neighbours in `embeddings`,
    averaged over samples (the two spaces may have different widths).

    Raises:
        DataError: fewer than 2 samples, or row counts that differ.
    """
    n = embeddings.shape[0]
    if n < 2 or reference.shape[0] != n:
        raise DataError(
            f"recall@k needs 2+ samples in both spaces, got {n} embeddings and {reference.shape[0]} references."
        )
    k = min(k, n - 1)
    found, wanted = neighbours(embeddings, k), neighbours(reference, k)
    hits = (found.unsqueeze(2) == wanted.unsqueeze(1)).any(dim=2).double().sum(dim=1)
    return float((hits / k).mean())


def recall_metrics(embeddings: Tensor, targets: Tensor, reference: Tensor | None) -> dict[str, float | None]:
    """recall@k against the targets' neighbours and teacher_recall@k against the reference's, for k in
    `RECALL_KS`; ``accuracy`` is recall@10 and ``agreement`` teacher_recall@10 (None without a reference).

    Args:
        embeddings: (N, D) the model's embeddings of a whole split (CPU).
        targets: (N, D') the split's target vectors.
        reference: (N, D'') the teacher's embeddings of the same samples, or None.
    """
    out: dict[str, float | None] = {}
    for k in RECALL_KS:
        out[f"recall@{k}"] = recall_at_k(embeddings, targets.reshape(targets.shape[0], -1), k)
        out[f"teacher_recall@{k}"] = recall_at_k(embeddings, reference, k) if reference is not None else None
    out["accuracy"] = out[f"recall@{RECALL_KS[-1]}"]
    out["agreement"] = out[f"teacher_recall@{RECALL_KS[-1]}"]
    return out
