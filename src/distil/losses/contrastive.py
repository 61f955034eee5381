"""Contrastive representation distillation (CRD, Tian et al. ICLR 2020) with a bounded memory bank."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distil.errors import ConfigError
from distil.losses.feature import select_pairs
from distil.losses.functional import contrastive_nce
from distil.losses.registry import Term, TermContext, TermInputs, register_loss


def draw_negatives(index: torch.Tensor, n_data: int, k: int) -> torch.Tensor:
    """`(B, k)` negative sample positions for each of `index` `(B,)`: uniform over the others, never itself.

    Draws from the n_data - 1 other positions (a draw at or above the sample's own position shifts up
    by one), with replacement as in CRD. Drawing from all n_data instead makes a sample its own negative
    with probability 1 - (1 - 1/n)^k per row (28% for n = 50,000, k = 16,384), which pushes the positive
    away from itself.
    """
    drawn = torch.randint(0, n_data - 1, (len(index), k), device=index.device)
    return drawn + (drawn >= index.unsqueeze(1)).long()


@register_loss("crd")
class CRDTerm(Term):
    """CRD: student and teacher embeddings of the same sample attract, of other samples repel.

    Both features (default: the last pair, flattened) are projected by trainable linear heads to
    `feat_dim` and L2-normalised. Each sample's student and teacher embeddings are kept in two memory
    banks (momentum-updated); the student embedding is contrasted against the teacher memory of its own
    sample (positive) and of `n_negatives` samples drawn uniformly from the other ones (negatives; a
    sample is never its own negative, see `draw_negatives`), and symmetrically the
    teacher embedding against the student memory. This is the softmax (InfoNCE) form of CRD's objective,
    which RepDistiller also ships; the paper's default uses the NCE form with a normalising constant.

    Memory: the banks hold `n_data * feat_dim * 2` float32 values, i.e. `n_data * feat_dim * 8` bytes
    (CIFAR-100, 50,000 x 128: 51.2 MB), reported by `memory_bytes`; they never grow. Each step also
    gathers a transient `batch * n_negatives * feat_dim * 4`-byte block per direction.

    Options:
        feat_dim: embedding size (128).
        n_negatives: negatives per sample (16384, CRD's default `nce_k`; capped at n_data - 1).
        nce_temperature: tau (0.07).
        momentum: memory update momentum (0.5).
        pairs: indices into kd.feature_pairs (default: the last pair).

    Needs `batch["index"]` (the sample's position in the training split; TensorLoader provides it).
    """

    needs_features = True
    memory_s: torch.Tensor
    memory_t: torch.Tensor

    def __init__(
        self,
        ctx: TermContext,
        feat_dim: int = 128,
        n_negatives: int = 16384,
        nce_temperature: float = 0.07,
        momentum: float = 0.5,
        pairs: list[int] | None = None,
    ) -> None:
        super().__init__()
        if ctx.n_data < 2:
            raise ConfigError("CRD needs the training-set size (n_data >= 2) to size its memory bank")
        (self.pair_index,) = select_pairs(ctx, pairs if pairs is None else pairs[:1], "last", "crd")
        s_dim = math.prod(ctx.student_shapes[self.pair_index])
        t_dim = math.prod(ctx.teacher_shapes[self.pair_index])
        self.embed_s = nn.Linear(s_dim, feat_dim)
        self.embed_t = nn.Linear(t_dim, feat_dim)
        self.n_negatives = min(n_negatives, ctx.n_data - 1)
        self.nce_temperature = nce_temperature
        self.momentum = momentum
        # Random unit vectors, as in CRD: the banks become meaningful after the first epoch.
        g = torch.Generator().manual_seed(0)
        self.register_buffer("memory_s", F.normalize(torch.randn(ctx.n_data, feat_dim, generator=g), dim=1))
        self.register_buffer("memory_t", F.normalize(torch.randn(ctx.n_data, feat_dim, generator=g), dim=1))

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the two memory banks: n_data * feat_dim * 2 * 4 (float32)."""
        return int(self.memory_s.numel() * self.memory_s.element_size() * 2)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        if inputs.index is None:
            raise ValueError("CRD needs batch['index'] (sample positions in the training split)")
        idx = inputs.index
        v_s = F.normalize(self.embed_s(inputs.student_features[self.pair_index].float().flatten(1)), dim=1)
        v_t = F.normalize(self.embed_t(inputs.teacher_features[self.pair_index].float().flatten(1)), dim=1)
        mem_s, mem_t = self.memory_s, self.memory_t
        neg_idx = draw_negatives(idx, len(mem_s), self.n_negatives)
        loss = contrastive_nce(v_s, mem_t[idx], mem_t[neg_idx], self.nce_temperature) + contrastive_nce(
            v_t, mem_s[idx], mem_s[neg_idx], self.nce_temperature
        )
        if self.training:
            with torch.no_grad():
                # Data parallel: every rank updates its banks with the whole global batch (all ranks'
                # rows), so the banks stay identical across ranks, as in a single-process run.
                idx, new_s, new_t = _gather_rows(idx, v_s.detach(), v_t.detach())
                m = self.momentum
                mem_s[idx] = F.normalize(mem_s[idx] * m + new_s * (1 - m), dim=1)
                mem_t[idx] = F.normalize(mem_t[idx] * m + new_t * (1 - m), dim=1)
        return loss


def _gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor's rows from every data-parallel rank, concatenated in rank order.

    Without an initialised process group (or with one process) the tensors are returned as they are.
    Ranks may hold different numbers of rows (a last, short batch): rows are padded to the largest
    count for the all-gather and the padding is dropped.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    world = dist.get_world_size()
    count = torch.tensor([len(tensors[0])], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    gathered = []
    for t in tensors:
        padded = t.new_zeros((max(sizes), *t.shape[1:]))
        padded[: len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)]))
    return tuple(gathered)
