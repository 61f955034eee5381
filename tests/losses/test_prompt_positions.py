"""Prompt tokens (labels -100, no mask) count in no loss term of a language-model batch (issue 23, item 1)."""

from __future__ import annotations

import torch
from torch import nn

from distil.config import KDConfig
from distil.losses import build_loss
from distil.losses.compose import ComposedLoss

TEACHER_TERMS = ("kd", "rkl", "js", "tvd", "logit_mse", "dkd")
V = 11


def lm_loss() -> ComposedLoss:
    kd = KDConfig(terms={"ce": 1.0, **dict.fromkeys(TEACHER_TERMS, 1.0)}, temperature=2.0)
    net = nn.Linear(1, 1)  # logit terms capture no features: the modules are never run
    return build_loss(kd, student=net, teacher=net, sample_x=torch.zeros(2, 1), num_classes=V)


def prompt_batch() -> dict[str, torch.Tensor]:
    """Two sequences of 7 tokens; the first 3 (and 4) positions are the prompt, as the text reader marks them."""
    labels = torch.randint(0, V, (2, 7))
    labels[0, :3] = -100
    labels[1, :4] = -100
    return {"inputs": torch.zeros(2, 7, dtype=torch.long), "labels": labels, "index": torch.arange(2)}


def test_kd_averages_over_completion_tokens_only() -> None:
    torch.manual_seed(0)
    s, t, b = torch.randn(2, 7, V), torch.randn(2, 7, V), prompt_batch()
    out = lm_loss()(s, t, b)
    # Written out: T^2 * KL(p_t^T || p_s^T), the mean over the completion positions alone.
    keep = b["labels"] != -100
    p_t = torch.softmax(t[keep] / 2.0, dim=-1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s[keep] / 2.0, dim=-1))).sum(-1).mean() * 4.0
    torch.testing.assert_close(out["kd"], kl)


def test_changing_the_teacher_at_prompt_positions_changes_no_term() -> None:
    torch.manual_seed(1)
    s, t, b = torch.randn(2, 7, V), torch.randn(2, 7, V), prompt_batch()
    loss = lm_loss()
    before = loss(s, t, b)
    t2 = t.clone()
    t2[b["labels"] == -100] = 10 * torch.randn(int((b["labels"] == -100).sum()), V)
    after = loss(s, t2, b)
    for name in ("loss", "ce", *TEACHER_TERMS):
        torch.testing.assert_close(after[name], before[name], msg=f"term {name} counts prompt tokens")


def test_a_batch_mask_still_applies_on_top_of_the_labels() -> None:
    torch.manual_seed(2)
    s, t, b = torch.randn(2, 7, V), torch.randn(2, 7, V), prompt_batch()
    loss = lm_loss()
    only_first = loss(s, t, {**b, "mask": torch.tensor([True, False])})
    alone = loss(s[:1], t[:1], {k: v[:1] for k, v in b.items()})
    for name in ("ce", *TEACHER_TERMS):
        torch.testing.assert_close(only_first[name], alone[name])
