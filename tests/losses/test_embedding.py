"""Embedding terms (issue 26.1) against the formulas written out, and the projection where widths differ."""

from __future__ import annotations

import pytest
import torch

from distil.errors import ConfigError
from distil.losses.embedding import embedding_cosine, embedding_mse
from distil.losses.registry import TermContext, TermInputs, build_term


def test_mse_and_cosine_match_their_formulas_with_a_mask() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    mask = torch.tensor([True, False, True, True, False])
    keep = mask.nonzero().flatten()
    mse = sum(((s[i] - t[i]) ** 2).sum() / 3 for i in keep) / len(keep)
    cos = sum(1 - (s[i] @ t[i]) / (s[i].norm() * t[i].norm()) for i in keep) / len(keep)
    assert torch.allclose(embedding_mse(s, t, mask), mse)
    assert torch.allclose(embedding_cosine(s, t, mask), cos)
    assert torch.allclose(embedding_cosine(s, 2 * s), torch.tensor(0.0), atol=1e-6)  # direction only


def test_emb_kd_is_mse_plus_cosine_and_refuses_other_shapes() -> None:
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    term = build_term("emb_kd", TermContext(num_classes=6, student_width=6))
    want = embedding_mse(s, t) + embedding_cosine(s, t)
    assert torch.allclose(term(TermInputs(s, t, t)), want)
    assert not list(term.parameters())  # same width: no projection
    with pytest.raises(ConfigError, match="embedding terms compare"):
        build_term("emb_mse", TermContext(num_classes=6))(TermInputs(torch.randn(4, 5), t, t))


def test_a_narrower_student_trains_through_the_terms_projection() -> None:
    term = build_term("emb_cos", TermContext(num_classes=8, student_width=4))
    (weight,) = term.parameters()
    assert tuple(weight.shape) == (8, 4)
    student = torch.randn(3, 4, requires_grad=True)
    term(TermInputs(student, torch.randn(3, 8), torch.randn(3, 8))).backward()
    assert weight.grad is not None and student.grad is not None


def test_emb_label_refuses_a_student_narrower_than_the_targets() -> None:
    with pytest.raises(ConfigError, match=r"kd.terms=\{emb_kd: 1.0\}"):
        build_term("emb_label", TermContext(num_classes=8, student_width=4))
    with pytest.raises(ConfigError, match="set label_smoothing to 0"):
        build_term("emb_label", TermContext(num_classes=8, label_smoothing=0.1))
    y = torch.randn(3, 8)
    term = build_term("emb_label", TermContext(num_classes=8))
    assert torch.allclose(term(TermInputs(y + 1, None, y)), torch.tensor(1.0))
