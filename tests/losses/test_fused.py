"""The fused LM head + loss (distil.losses.fused) against the naive path: materialised logits and the
pure functions of distil.losses.functional; the wiring through the composed loss and the training loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distil.losses.chunked import RowOptions
from distil.losses.functional import (
    cross_entropy,
    js_divergence,
    kd_kl,
    logit_mse,
    reverse_kl,
    total_variation,
)
from distil.losses.fused import FusedPart, HeadOutput, fused_loss

B, T, H, HT, V = 2, 5, 8, 12, 37
TEMP = 2.0


def _naive(name: str, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference: the pure functions on whole (B, T, V) logits (mask and-ed with labels != -100)."""
    m = mask & (labels != -100)
    if name == "kd":
        return kd_kl(s, t, TEMP, mask=m)
    if name == "rkl":
        return reverse_kl(s, t, TEMP, mask=m)
    if name == "js":
        return js_divergence(s, t, TEMP, mask=m, beta=0.3)
    if name == "tvd":
        return total_variation(s, t, TEMP, mask=m)
    if name == "mse":
        return logit_mse(s, t, mask=m)
    return cross_entropy(s, labels, 0.1, mask=m)


PARTS = {
    "kd": FusedPart("kl", RowOptions(TEMP), 1.0),
    "rkl": FusedPart("rkl", RowOptions(TEMP), 1.0),
    "js": FusedPart("jsd", RowOptions(TEMP, beta=0.3), 1.0),
    "tvd": FusedPart("tvd", RowOptions(TEMP), 1.0),
    "mse": FusedPart("mse", RowOptions(1.0), 1.0),
    "ce": FusedPart("ce", RowOptions(smoothing=0.1), 1.0),
}


def _setup(dtype: torch.dtype = torch.float32, bias: bool = True, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g).to(dtype).requires_grad_(True)
    weight = (torch.randn(V, H, generator=g) * 0.5).to(dtype).requires_grad_(True)
    b = (torch.randn(V, generator=g) * 0.1).to(dtype).requires_grad_(True) if bias else None
    th = torch.randn(B, T, HT, generator=g).to(dtype)
    tw = (torch.randn(V, HT, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 0] = -100
    labels[1, 3] = -100
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, -1] = False
    return {"hidden": hidden, "weight": weight, "bias": b, "th": th, "tw": tw, "labels": labels, "mask": mask}


def _grads(x: dict) -> list[torch.Tensor]:
    out = [x["hidden"].grad, x["weight"].grad] + ([x["bias"].grad] if x["bias"] is not None else [])
    for t in (x["hidden"], x["weight"], x["bias"]):
        if t is not None:
            t.grad = None
    return out


@pytest.mark.parametrize("name", list(PARTS))
def test_value_and_gradients_equal_naive(name: str) -> None:
    x = _setup()
    s_logits = F.linear(x["hidden"], x["weight"], x["bias"])
    t_logits = F.linear(x["th"], x["tw"])
    ref = _naive(name, s_logits, t_logits, x["labels"], x["mask"])
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    student = HeadOutput(x["hidden"], x["weight"], x["bias"], torch.float32)
    teacher = HeadOutput(x["th"], x["tw"], None, torch.float32)
    # chunk_size 3 < N = 10, and not a divisor of it: a ragged last chunk.
    total, values = fused_loss(student, teacher, x["labels"], mask, [PARTS[name]], chunk_size=3)
    total.backward()
    got = _grads(x)
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values[0], ref.detach(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_several_terms_share_one_pass_with_their_weights() -> None:
    x = _setup()
    s_logits = F.linear(x["hidden"], x["weight"], x["bias"])
    t_logits = F.linear(x["th"], x["tw"])
    ref = 0.9 * _naive("kd", s_logits, t_logits, x["labels"], x["mask"]) + 0.1 * _naive(
        "ce", s_logits, t_logits, x["labels"], x["mask"]
    )
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    parts = [PARTS["kd"]._replace(weight=0.9), PARTS["ce"]._replace(weight=0.1)]
    student = HeadOutput(x["hidden"], x["weight"], x["bias"], torch.float32)
    total, _ = fused_loss(student, HeadOutput(x["th"], x["tw"], None, torch.float32), x["labels"], mask, parts, chunk_size=4)
    total.backward()
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-6)
    for g, w in zip(_grads(x), want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_teacher_logits_rows_serve_as_teacher() -> None:
    """A full teacher cache gives (B, T, V) logits: the student side stays fused."""
    x = _setup(bias=False)
    t_logits = F.linear(x["th"], x["tw"])
    ref = _naive("kd", F.linear(x["hidden"], x["weight"]), t_logits, x["labels"], x["mask"])
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    total, _ = fused_loss(
        HeadOutput(x["hidden"], x["weight"], None, torch.float32), t_logits, x["labels"], mask, [PARTS["kd"]], chunk_size=2
    )
    total.backward()
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-6)
    for g, w in zip(_grads(x), want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_tied_head_accumulates_into_the_embedding() -> None:
    """The head weight is the embedding matrix: its gradient is the embedding's plus the head's."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, H)
    ids = torch.randint(0, V, (B, T))
    labels = torch.randint(0, V, (B, T))

    def hidden() -> torch.Tensor:
        return torch.tanh(emb(ids))

    ref = cross_entropy(F.linear(hidden(), emb.weight), labels)
    ref.backward()
    want = emb.weight.grad.clone()
    emb.weight.grad = None
    total, _ = fused_loss(
        HeadOutput(hidden(), emb.weight, None, torch.float32), None, labels, None, [PARTS["ce"]._replace(options=RowOptions())], chunk_size=3
    )
    total.backward()
    torch.testing.assert_close(emb.weight.grad, want, rtol=1e-4, atol=1e-6)


def test_bf16_matches_naive_within_tolerance() -> None:
    x = _setup(torch.bfloat16)
    s_logits = F.linear(x["hidden"], x["weight"], x["bias"])
    t_logits = F.linear(x["th"], x["tw"])
    ref = _naive("kd", s_logits, t_logits, x["labels"], x["mask"])
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    total, _ = fused_loss(
        HeadOutput(x["hidden"], x["weight"], x["bias"], torch.bfloat16),
        HeadOutput(x["th"], x["tw"], None, torch.bfloat16),
        x["labels"],
        mask,
        [PARTS["kd"]],
        chunk_size=3,
    )
    total.backward()
    got = _grads(x)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16
    torch.testing.assert_close(total, ref, rtol=2e-2, atol=1e-3)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.float(), w.float(), rtol=5e-2, atol=5e-3)


def test_single_position_and_all_masked() -> None:
    """T = 1 rows, and a batch where no position counts (0 with a gradient path, not NaN)."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 1, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    teacher = torch.randn(3, 1, V, generator=g)
    labels = torch.randint(0, V, (3, 1), generator=g)
    ref = kd_kl(F.linear(hidden, weight), teacher, TEMP)
    ref.backward()
    want = hidden.grad.clone()
    hidden.grad = None
    total, _ = fused_loss(HeadOutput(hidden, weight, None, torch.float32), teacher, labels, None, [PARTS["kd"]], chunk_size=2)
    total.backward()
    torch.testing.assert_close(hidden.grad, want, rtol=1e-4, atol=1e-6)
    none = torch.zeros(3, 1, dtype=torch.bool)
    hidden.grad = None
    total, _ = fused_loss(HeadOutput(hidden, weight, None, torch.float32), teacher, labels, none, [PARTS["kd"]])
    total.backward()
    assert float(total.detach()) == 0.0 and torch.count_nonzero(hidden.grad) == 0


def test_mismatched_teacher_is_refused() -> None:
    x = _setup()
    with pytest.raises(ValueError, match="same of both"):
        fused_loss(
            HeadOutput(x["hidden"], x["weight"], None, torch.float32),
            torch.zeros(B, T, V + 1),
            x["labels"],
            None,
            [PARTS["kd"]],
        )
    del warnings
