"""Logit losses on (B, K) and (B, T, V) outputs with masks, against the formulas written out with loops.

Each reference computes the per-position value with explicit softmax/log in Python floats and averages
it over the valid positions only; the library functions flatten the positions and must agree.
"""

from __future__ import annotations

import math

import pytest
import torch

from distil.errors import ConfigError
from distil.losses import (
    IGNORE_INDEX,
    Term,
    TermContext,
    TermInputs,
    cross_entropy,
    dkd,
    js_divergence,
    kd_kl,
    logit_mse,
    reverse_kl,
)
from distil.losses.compose import ComposedLoss
from distil.losses.registry import build_term


def softmax(row: list[float], t: float = 1.0) -> list[float]:
    m = max(row)
    z = [math.exp((v - m) / t) for v in row]
    return [v / sum(z) for v in z]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def per_position(name: str, s: list[float], t: list[float], y: int, temp: float) -> float:
    """The loss of one position, from its definition."""
    if name == "kd":
        return temp * temp * kl(softmax(t, temp), softmax(s, temp))
    if name == "rkl":
        return temp * temp * kl(softmax(s, temp), softmax(t, temp))
    if name == "js":
        ps, pt = softmax(s, temp), softmax(t, temp)
        m = [(a + b) / 2 for a, b in zip(ps, pt, strict=True)]
        return temp * temp * (kl(pt, m) + kl(ps, m)) / 2
    if name == "mse":
        return sum((a - b) ** 2 for a, b in zip(s, t, strict=True)) / len(s)
    if name == "ce":
        return -math.log(softmax(s)[y])
    if name == "dkd":  # alpha=1, beta=8
        ps, pt = softmax(s, temp), softmax(t, temp)
        tckd = kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        s_nt = [v for j, v in enumerate(s) if j != y]
        t_nt = [v for j, v in enumerate(t) if j != y]
        return temp * temp * (tckd + 8.0 * kl(softmax(t_nt, temp), softmax(s_nt, temp)))
    raise AssertionError(name)


def call(name: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, mask) -> torch.Tensor:
    if name == "kd":
        return kd_kl(s, t, temp, mask=mask)
    if name == "rkl":
        return reverse_kl(s, t, temp, mask=mask)
    if name == "js":
        return js_divergence(s, t, temp, mask=mask)
    if name == "mse":
        return logit_mse(s, t, mask=mask)
    if name == "ce":
        return cross_entropy(s, y, mask=mask)
    return dkd(s, t, y, temp, mask=mask)


def reference(name: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, mask) -> float:
    """Mean over the valid positions (mask true, label not ignored) of the per-position value, by loops."""
    s3, t3 = (s, t) if s.dim() == 3 else (s.unsqueeze(1), t.unsqueeze(1))
    y2 = y if y.dim() == 2 else y.unsqueeze(1)
    m2 = torch.ones(y2.shape, dtype=torch.bool) if mask is None else mask.reshape(y2.shape[0], -1)
    values = []
    for b in range(s3.shape[0]):
        for p in range(s3.shape[1]):
            valid = bool(m2[b, p if m2.shape[1] > 1 else 0])
            if name in ("ce", "dkd") and int(y2[b, p]) == IGNORE_INDEX:
                valid = False
            if valid:
                values.append(per_position(name, s3[b, p].tolist(), t3[b, p].tolist(), int(y2[b, p]), temp))
    return sum(values) / len(values)


NAMES = ["kd", "rkl", "js", "mse", "ce", "dkd"]


def _logits(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2, torch.randn(
        *shape, generator=g, dtype=torch.float64
    ) * 2


@pytest.mark.parametrize("name", NAMES)
def test_classification_logits_with_a_sample_mask(name: str) -> None:
    s, t = _logits(6, 5)
    y = torch.tensor([0, 4, 2, 1, 3, 2])
    mask = torch.tensor([True, False, True, True, False, True])
    got = call(name, s, t, y, 3.0, mask).item()
    assert got == pytest.approx(reference(name, s, t, y, 3.0, mask), rel=1e-5)
    assert got == pytest.approx(call(name, s[mask], t[mask], y[mask], 3.0, None).item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_sequence_logits_with_random_position_masks_and_ignored_labels(name: str) -> None:
    s, t = _logits(3, 7, 6, seed=1)
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 6, (3, 7), generator=g)
    y[0, 5:] = IGNORE_INDEX  # padding labels, as Hugging Face writes them
    mask = torch.rand(3, 7, generator=g) > 0.4
    mask[2, 0] = True
    got = call(name, s, t, y, 2.0, mask).item()
    assert got == pytest.approx(reference(name, s, t, y, 2.0, mask), rel=1e-5)
    # No mask: every position counts (ignored labels still drop out of ce and dkd).
    got_all = call(name, s, t, y, 2.0, None).item()
    assert got_all == pytest.approx(reference(name, s, t, y, 2.0, None), rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_an_all_true_mask_equals_no_mask(name: str) -> None:
    for shape in ((5, 4), (2, 3, 4)):
        s, t = _logits(*shape, seed=3)
        y = torch.randint(0, 4, shape[:-1], generator=torch.Generator().manual_seed(4))
        mask = torch.ones(shape[:-1], dtype=torch.bool)
        torch.testing.assert_close(call(name, s, t, y, 4.0, mask), call(name, s, t, y, 4.0, None))
    # A (B,) mask on sequences keeps or drops whole sequences.
    s, t = _logits(3, 4, 5, seed=5)
    y = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(6))
    keep = torch.tensor([True, False, True])
    torch.testing.assert_close(
        call(name, s, t, y, 2.0, keep), call(name, s[keep], t[keep], y[keep], 2.0, None)
    )


def test_unmasked_classification_is_the_batchmean_formula() -> None:
    """(B, K) logits are B rows of the row kernels: torch's batchmean formulas, to float rounding (no
    longer bit for bit: the kernel's KL is sum p (t - s) + lse_s - lse_t, which has no NaN at -inf)."""
    s, t = _logits(8, 10, seed=7)
    s, t = s.float(), t.float()
    log_ps, log_pt = torch.log_softmax(s / 4, dim=1), torch.log_softmax(t / 4, dim=1)
    want = torch.nn.functional.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * 16
    torch.testing.assert_close(kd_kl(s, t, 4.0), want, rtol=2e-6, atol=1e-7)
    y = torch.arange(8) % 10
    torch.testing.assert_close(
        cross_entropy(s, y), torch.nn.functional.cross_entropy(s, y), rtol=2e-6, atol=1e-7
    )


def test_no_valid_position_gives_zero_with_a_gradient() -> None:
    s = torch.randn(2, 3, 4, requires_grad=True)
    t = torch.randn(2, 3, 4)
    none = torch.zeros(2, 3, dtype=torch.bool)
    for value in (kd_kl(s, t, 2.0, mask=none), cross_entropy(s, torch.full((2, 3), IGNORE_INDEX))):
        assert value.item() == 0.0
        value.backward()
        assert s.grad is not None and not s.grad.any()


def test_masks_and_labels_of_the_wrong_shape_say_what_fits() -> None:
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"mask \(2, 4\) does not fit"):
        kd_kl(s, t, 1.0, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"labels \(2,\) do not fit"):
        cross_entropy(s, torch.zeros(2, dtype=torch.long), mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, K\) or \(B, T, V\)"):
        kd_kl(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), 1.0)


def test_composed_loss_passes_the_batch_mask_to_its_terms() -> None:
    ctx = TermContext()
    loss = ComposedLoss(
        {"kd": build_term("kd", ctx), "ce": build_term("ce", ctx)}, {"kd": 0.5, "ce": 0.5}, temperature=2.0
    )
    s, t = _logits(2, 5, 6, seed=8)
    y = torch.randint(0, 6, (2, 5), generator=torch.Generator().manual_seed(9))
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    out = loss(s, t, {"inputs": s, "labels": y, "index": torch.arange(2), "mask": mask})
    torch.testing.assert_close(out["kd"], kd_kl(s, t, 2.0, mask=mask))
    torch.testing.assert_close(out["ce"], cross_entropy(s, y, mask=mask))
    torch.testing.assert_close(out["loss"], 0.5 * out["kd"] + 0.5 * out["ce"])


def test_a_per_sample_term_refuses_a_masked_batch() -> None:
    from distil.losses.registry import LOSSES

    feature_terms = [n for n in LOSSES.names() if not getattr(LOSSES.get(n), "uses_mask", False)]
    assert {"fitnet", "at", "rkd", "pkt", "sp", "crd"} <= set(feature_terms)

    class PerSample(Term):  # like a feature term: a mask of positions means nothing to it
        def forward(self, inputs: TermInputs) -> torch.Tensor:
            return inputs.student_logits.sum()

    loss = ComposedLoss({"ce": build_term("ce", TermContext()), "pkt": PerSample()}, {"ce": 1.0, "pkt": 1.0})
    batch = {"labels": torch.zeros(2, dtype=torch.long), "mask": torch.ones(2, dtype=torch.bool)}
    with pytest.raises(ConfigError, match="terms pkt compare whole samples"):
        loss(torch.randn(2, 3), torch.randn(2, 3), batch)
