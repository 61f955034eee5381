"""Batches with unlabelled samples ((B,) labels of -100): CE counts the labelled ones, KD every sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distil.config import KDConfig
from distil.data.batch import IGNORE_INDEX
from distil.losses.compose import build_loss
from distil.losses.functional import cross_entropy, kd_kl


def test_cross_entropy_skips_unlabelled_samples_and_is_zero_without_any_label() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, requires_grad=True)
    labels = torch.tensor([1, IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX, 0])
    keep = labels != IGNORE_INDEX
    # Reference: -log softmax at the label, written out, averaged over the labelled rows only.
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    ref = -log_p[keep, labels[keep]].mean()
    torch.testing.assert_close(cross_entropy(logits, labels), ref)
    torch.testing.assert_close(
        cross_entropy(logits, labels, 0.1), F.cross_entropy(logits[keep], labels[keep], label_smoothing=0.1)
    )
    none = cross_entropy(logits, torch.full((6,), IGNORE_INDEX))
    assert none.item() == 0.0
    none.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and (logits.grad == 0).all()
    full = torch.tensor([1, 2, 3, 0, 1, 2])
    torch.testing.assert_close(cross_entropy(logits, full), F.cross_entropy(logits, full))


def test_the_composed_hinton_loss_matches_the_teacher_on_every_sample() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    labels = torch.full((8,), IGNORE_INDEX)
    labels[2] = 4
    student = torch.nn.Linear(2, 5)
    loss = build_loss(KDConfig(), student=student, teacher=student, sample_x=torch.zeros(2, 2), num_classes=5)
    out = loss(s, t, {"labels": labels})
    torch.testing.assert_close(out["kd"], kd_kl(s, t, 4.0))  # all 8 samples, labelled or not
    torch.testing.assert_close(out["ce"], F.cross_entropy(s[2:3], labels[2:3]))
    torch.testing.assert_close(out["loss"], 0.9 * out["kd"] + 0.1 * out["ce"])


def test_dkd_and_masked_ce_skip_unlabelled_samples() -> None:
    # Review finding: dkd one-hot-encoded -100 labels (a crash), and a mask hid the -100 check from CE.
    from distil.losses.functional import dkd

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    labels = torch.tensor([1, -100, 2, -100])
    kept = torch.tensor([0, 2])
    torch.testing.assert_close(dkd(s, t, labels, 4.0), dkd(s[kept], t[kept], labels[kept], 4.0))
    assert float(dkd(s, t, torch.full((4,), -100), 4.0)) == 0.0
    mask = torch.ones(4, dtype=torch.bool)
    assert float(cross_entropy(s, torch.full((4,), -100), mask=mask)) == 0.0
    torch.testing.assert_close(cross_entropy(s, labels, mask=mask), cross_entropy(s[kept], labels[kept]))


def test_mixing_token_ids_is_refused() -> None:
    from distil.data.augment import mix_batch
    from distil.errors import ConfigError

    with pytest.raises(ConfigError, match="token ids"):
        mix_batch(torch.arange(12).view(4, 3), "mixup", 1.0, 0)


def test_accuracy_leaves_unlabelled_samples_out() -> None:
    from distil.measure import accuracy

    logits = torch.eye(4)
    assert accuracy(logits, torch.tensor([0, 1, -100, -100])) == 1.0
