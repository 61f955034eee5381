"""KD on sparse teacher targets: top-k is the documented (biased) approximation, sampled is unbiased."""

from __future__ import annotations

import pytest
import torch

from distil.errors import ConfigError
from distil.losses.functional import kd_kl
from distil.losses.logit import KDTerm, ReverseKLTerm
from distil.losses.registry import TermContext, TermInputs
from distil.losses.sparse import SparseTargets, sparse_kd
from distil.teachers.seqcache import sparse_rows

V = 37


def _logits(seed: int, shape: tuple[int, ...] = (3, 6, V), scale: float = 2.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _targets(z: torch.Tensor, form: str, k: int, t: float = 1.0, **kw: object) -> SparseTargets:
    ids, logw, aux = sparse_rows(z, form, k, t, **kw)  # type: ignore[arg-type]
    return SparseTargets(form, ids, logw, aux, t, z.shape[-1])


def _grad(fn: object, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = s.clone().requires_grad_(True)
    loss = fn(x)  # type: ignore[operator]
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


@pytest.mark.parametrize("tail", ["renormalize", "bucket"])
def test_topk_with_every_token_is_the_full_kd_with_masks_and_ignored_labels(tail: str) -> None:
    z, s = _logits(0), _logits(1)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(2)) > 0.3
    labels = torch.randint(0, V, (3, 6))
    labels[0, :2] = -100
    for t in (1.0, 2.5):
        targets = _targets(z, "topk", V, t)
        for m in (None, mask):
            torch.testing.assert_close(sparse_kd(s, targets, t, mask=m, tail=tail), kd_kl(s, z, t, mask=m))
        keep = mask & (labels != -100)
        torch.testing.assert_close(
            sparse_kd(s, targets, t, mask=mask, labels=labels, tail=tail), kd_kl(s, z, t, mask=keep)
        )


def test_topk_losses_match_their_formulas_written_out() -> None:
    z, s, k, t = _logits(3), _logits(4), 5, 2.0
    p, q = torch.softmax(z.double() / t, -1), torch.softmax(s.double() / t, -1)
    top = z.topk(k, -1).indices
    pk, qk = p.gather(-1, top), q.gather(-1, top)
    renorm = pk / pk.sum(-1, keepdim=True)
    want_renorm = (renorm * (renorm.log() - qk.log())).sum(-1).mean() * t * t
    pt, qt = 1 - pk.sum(-1), 1 - qk.sum(-1)
    want_bucket = ((pk * (pk.log() - qk.log())).sum(-1) + pt * (pt.log() - qt.log())).mean() * t * t
    targets = _targets(z, "topk", k, t)
    torch.testing.assert_close(sparse_kd(s, targets, t).double(), want_renorm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        sparse_kd(s, targets, t, tail="bucket").double(), want_bucket, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("proposal", [None, 3.0])
def test_sampled_loss_and_gradient_are_unbiased_estimates_of_the_full(proposal: float | None) -> None:
    z, s, k, t, draws = _logits(5, (2, 4, V)), _logits(6, (2, 4, V)), 4, 2.0, 600
    full, g_full = _grad(lambda x: kd_kl(x, z, t), s)
    gen = torch.Generator().manual_seed(7)
    directions = torch.randn(3, s.numel(), generator=gen)
    losses, projections = [], []
    for _ in range(draws):
        targets = _targets(z, "sampled", k, t, proposal_temperature=proposal, generator=gen)
        loss, g = _grad(lambda x, targets=targets: sparse_kd(x, targets, t), s)
        losses.append(loss)
        projections.append(directions @ g.reshape(-1))
    for got, want in (
        (torch.stack(losses), full),
        (torch.stack(projections), directions @ g_full.reshape(-1)),
    ):
        se = got.std(0) / draws**0.5
        assert torch.all((got.mean(0) - want).abs() < 4 * se + 1e-6), (got.mean(0), want, se)
    # And the sample is not degenerate: one draw is noticeably off, so the test has power.
    assert torch.stack(losses).std() > 1e-3


def test_topk_is_biased_where_sampling_is_not() -> None:
    z, s, t = _logits(8, scale=1.0), _logits(9, scale=1.0), 1.0
    _, g_full = _grad(lambda x: kd_kl(x, z, t), s)
    _, g_top = _grad(lambda x: sparse_kd(x, _targets(z, "topk", 4, t), t), s)
    gen, mean = torch.Generator().manual_seed(10), torch.zeros_like(s)
    for _ in range(400):
        targets = _targets(z, "sampled", 4, t, generator=gen)
        mean += _grad(lambda x, targets=targets: sparse_kd(x, targets, t), s)[1] / 400
    assert (g_top - g_full).norm() / g_full.norm() > 0.3
    assert (mean - g_full).norm() / g_full.norm() < 0.5 * (g_top - g_full).norm() / g_full.norm()


def test_targets_at_another_temperature_or_shape_are_refused() -> None:
    z, s = _logits(11), _logits(12)
    targets = _targets(z, "sampled", 3, 1.0)
    with pytest.raises(ValueError, match=r"stored at temperature 1\.0"):
        sparse_kd(s, targets, 2.0)
    with pytest.raises(ValueError, match="do not fit"):
        sparse_kd(s[:, :3], targets, 1.0)
    with pytest.raises(ValueError, match="tail"):
        sparse_kd(s, targets, 1.0, tail="spread")


def test_the_kd_term_dispatches_on_sparse_targets_and_other_terms_refuse_them() -> None:
    z, s, labels = _logits(13), _logits(14), torch.zeros(3, 6, dtype=torch.long)
    targets = _targets(z, "topk", 6, 1.0)
    inputs = TermInputs(s, targets, labels, temperature=1.0)  # type: ignore[arg-type]
    torch.testing.assert_close(KDTerm(TermContext())(inputs), sparse_kd(s, targets, 1.0))
    torch.testing.assert_close(
        KDTerm(TermContext(), tail="bucket")(inputs), sparse_kd(s, targets, 1.0, tail="bucket")
    )
    dense = TermInputs(s, z, labels, temperature=1.0)
    torch.testing.assert_close(KDTerm(TermContext())(dense), kd_kl(s, z, 1.0))
    with pytest.raises(ValueError, match="only the kd term"):
        ReverseKLTerm(TermContext())(inputs)
    with pytest.raises(ConfigError, match="tail"):
        KDTerm(TermContext(), tail="nope")


def test_a_batch_without_valid_positions_gives_zero_with_a_gradient() -> None:
    z, s = _logits(15), _logits(16).requires_grad_(True)
    loss = sparse_kd(s, _targets(z, "sampled", 3), 1.0, mask=torch.zeros(3, 6, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and s.grad is not None


@pytest.mark.parametrize("tail", ["renormalize", "bucket"])
def test_minus_inf_teacher_logits_give_a_finite_loss_equal_to_the_kl(tail: str) -> None:
    # A masked vocabulary (-inf logits) and top-k with k beyond the finite support: weight-0 terms are 0.
    z, s, t = _logits(11), _logits(12), 2.0
    z[..., 20:] = -float("inf")
    z[0, 0, 3:] = -float("inf")  # three finite logits, k = 8
    p, log_q = torch.softmax(z.double() / t, -1), torch.log_softmax(s.double() / t, -1)
    kl = (t * t * (torch.special.xlogy(p, p) - p * log_q).sum(-1)).mean()
    targets = _targets(z, "topk", 25, t)  # every finite logit and some -inf ones: exact
    loss, g = _grad(lambda x: sparse_kd(x, targets, t, tail=tail), s)
    torch.testing.assert_close(loss.double(), kl, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(g).all()
    for targets in (_targets(z, "topk", 8, t), _targets(z, "sampled", 8, t, generator=torch.Generator())):
        loss, g = _grad(lambda x, targets=targets: sparse_kd(x, targets, t, tail=tail), s)
        assert torch.isfinite(loss) and torch.isfinite(g).all(), targets.form
