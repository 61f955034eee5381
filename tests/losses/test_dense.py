"""Dense terms (issue 26.1): per-pixel KD and CE are the plain functions over pixel rows, written out here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distil.data.batch import IGNORE_INDEX
from distil.errors import ConfigError
from distil.losses.dense import dense_cross_entropy, dense_kd, pixel_rows


def test_dense_kd_is_the_pixel_mean_of_hintons_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    temp = 2.0
    # Written out: per pixel KL(softmax(t/T) || softmax(s/T)) over the K channel, mean over pixels, T^2.
    p, log_q = F.softmax(t / temp, dim=1), F.log_softmax(s / temp, dim=1)
    want = (p * (p.log() - log_q)).sum(1).mean() * temp**2
    assert torch.allclose(dense_kd(s, t, temp), want, atol=1e-6)
    # A cached teacher arrives as (B, H*W, K) pixel rows: the same value.
    assert torch.allclose(dense_kd(s, pixel_rows(t), temp), want, atol=1e-6)


def test_dense_ce_skips_unlabelled_pixels() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 2, 2, generator=g)
    labels = torch.tensor([[[0, 1], [2, IGNORE_INDEX]], [[IGNORE_INDEX, 1], [1, 0]]])
    want = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    assert torch.allclose(dense_cross_entropy(logits, labels), want, atol=1e-6)
    smooth = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, label_smoothing=0.1)
    assert torch.allclose(dense_cross_entropy(logits, labels, label_smoothing=0.1), smooth, atol=1e-6)


def test_dense_terms_refuse_per_sample_outputs() -> None:
    with pytest.raises(ConfigError, match=r"\(B, K, H, W\) per-pixel logits"):
        dense_kd(torch.randn(2, 4), torch.randn(2, 4), 1.0)
    with pytest.raises(ConfigError, match="pixel classes"):
        dense_cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
