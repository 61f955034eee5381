"""One kernel per loss: (B, K) logits, (B, T, V) logits and the chunks are the same computation, the
kernels' gradients are their values' derivatives, and extreme logits (large magnitudes, -inf entries of a
masked vocabulary) give the values of the formulas written out in float64, not NaN or a clamped
approximation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distil.losses import cross_entropy, dkd, js_divergence, kd_kl, logit_mse, reverse_kl
from distil.losses.chunked import KINDS, RowOptions, row_kernel
from distil.losses.functional import total_variation

DIVERGENCES = ["kd", "rkl", "js", "js03", "tvd"]
NAMES = [*DIVERGENCES, "mse", "ce", "ce_smooth", "dkd"]


def call(name: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, **kw) -> torch.Tensor:
    if name == "kd":
        return kd_kl(s, t, temp, **kw)
    if name == "rkl":
        return reverse_kl(s, t, temp, **kw)
    if name in ("js", "js03"):
        return js_divergence(s, t, temp, beta=0.3 if name == "js03" else 0.5, **kw)
    if name == "tvd":
        return total_variation(s, t, temp, **kw)
    if name == "mse":
        return logit_mse(s, t, **kw)
    if name.startswith("ce"):
        return cross_entropy(s, y, 0.1 if name == "ce_smooth" else 0.0, **kw)
    kw.pop("chunk_size", None)
    return dkd(s, t, y, temp, **kw)


def exact(name: str, s: torch.Tensor, t: torch.Tensor, temp: float) -> torch.Tensor:
    """The per-row divergence written out in float64: m = beta p + (1 - beta) q directly, no floor; a
    class with p = 0 (q = 0) adds nothing to the sums weighted by p (q)."""
    log_q = F.log_softmax(s.double() / temp, 1)
    log_p = F.log_softmax(t.double() / temp, 1)
    q, p = log_q.exp(), log_p.exp()

    def kl(a: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (log_a - log_b), 0.0).sum(1)

    if name == "kd":
        per = kl(p, log_p, log_q)
    elif name == "rkl":
        per = kl(q, log_q, log_p)
    elif name == "tvd":
        per = 0.5 * (q - p).abs().sum(1)
    else:
        beta = 0.3 if name == "js03" else 0.5
        log_m = (beta * p + (1 - beta) * q).log()
        per = beta * kl(p, log_p, log_m) + (1 - beta) * kl(q, log_q, log_m)
    return per.mean() * temp * temp


def _logits(b: int, k: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g) * scale, torch.randn(b, k, generator=g) * scale


def _extreme(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of large magnitudes (logits / T far below -1e4, and far above) and -inf entries (a masked
    vocabulary: the same classes on both sides, so that every divergence is finite)."""
    s, t = _logits(6, 9, seed)
    s[0], t[0] = s[0] * 1e3, t[0] * 1e3  # near one-hot rows
    s[1], t[1] = s[1] - 5e4, t[1] - 8e4  # every logit / T below -1e4
    s[2], t[2] = s[2] + 1e6, t[2] + 1e6
    s[3:, 6:], t[3:, 6:] = -math.inf, -math.inf
    return s, t


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("data", ["random", "extreme"])
def test_class_logits_are_rows_of_the_sequence_path_and_its_chunks(name: str, data: str) -> None:
    s, t = _logits(6, 9, seed=1) if data == "random" else _extreme(seed=1)
    if name in ("mse", "ce_smooth", "dkd") and data == "extreme":
        s, t = s.clamp_min(-1e7), t.clamp_min(-1e7)  # raw-logit losses: -inf - -inf has no value
    y = torch.tensor([0, 3, 5, 2, 4, 1])  # classes 6.. are masked in rows 3..
    mask = torch.tensor([True, True, False, True, True, True])
    flat = call(name, s, t, y, 2.0, mask=mask)
    assert torch.isfinite(flat)
    for chunk in (1, 4, None):
        seq = call(
            name, s.unsqueeze(0), t.unsqueeze(0), y.unsqueeze(0), 2.0, mask=mask[None], chunk_size=chunk
        )
        torch.testing.assert_close(flat, seq, rtol=1e-6, atol=1e-6)
    if name in DIVERGENCES:
        want = exact(name, s[mask], t[mask], 2.0).float()
        # Extreme rows: an fp32 logit near 4e4 is itself rounded by 0.004, which the loss inherits.
        tol = {"rtol": 1e-5, "atol": 1e-5} if data == "random" else {"rtol": 1e-4, "atol": 2e-2}
        torch.testing.assert_close(flat, want, **tol)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_a_masked_vocabulary_is_the_loss_over_the_unmasked_classes(name: str) -> None:
    """-inf on both sides at the same classes: the value and the gradient of the loss without those
    classes (old: NaN for kd and rkl on every path, for js on (B, T, V) logits)."""
    s, t = _logits(4, 10, seed=2)
    keep = torch.tensor([True] * 7 + [False] * 3)
    masked_s, masked_t = s.clone(), t.clone()
    masked_s[:, ~keep], masked_t[:, ~keep] = -math.inf, -math.inf
    for shape in ((4, 10), (2, 2, 10)):
        x = masked_s.reshape(shape).clone().requires_grad_(True)
        value = call(name, x, masked_t.reshape(shape), torch.zeros(shape[:-1], dtype=torch.long), 2.0)
        value.backward()
        ref_x = s[:, keep].clone().requires_grad_(True)
        ref = call(name, ref_x, t[:, keep], torch.zeros(4, dtype=torch.long), 2.0)
        ref.backward()
        assert x.grad is not None and ref_x.grad is not None
        torch.testing.assert_close(value, ref)
        grad = x.grad.reshape(4, 10)
        torch.testing.assert_close(grad[:, keep], ref_x.grad)
        assert not grad[:, ~keep].any()


def test_js_is_the_exact_formula_where_the_old_clamped_mixture_was_negative() -> None:
    """Both distributions almost one-hot on the same class, differing in a tail of mass below 1e-12 per
    class: the JSD is a small positive number, 2.47e-10. The old (B, K) formula floored m at 1e-12 and
    gave -1.23e-9 (off by 1.5e-9, six times the value, with the wrong sign: a divergence below 0); the
    logaddexp kernel gives the exact value to float32 rounding."""
    k = 10000
    s, t = torch.full((1, k), -33.0), torch.full((1, k), -30.0)
    s[0, 0] = t[0, 0] = 0.0

    def old_js(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # functional.py before one kernel
        ps, pt = F.softmax(s.float(), dim=1), F.softmax(t.float(), dim=1)
        log_m = ((ps + pt) / 2).clamp_min(1e-12).log()
        return (F.kl_div(log_m, pt, reduction="batchmean") + F.kl_div(log_m, ps, reduction="batchmean")) / 2

    want = exact("js", s, t, 1.0)
    assert 2.46e-10 < float(want) < 2.47e-10
    assert float(old_js(s, t)) < -1.2e-9  # below 0: the floor, not rounding
    assert float(js_divergence(s, t, 1.0)) == pytest.approx(float(want), rel=1e-4)
    assert float(js_divergence(s.unsqueeze(0), t.unsqueeze(0), 1.0)) == pytest.approx(float(want), rel=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("data", ["random", "extreme"])
def test_each_kernel_gradient_is_the_derivative_of_its_values(kind: str, data: str) -> None:
    """The hand-written gradient (the chunked backward) against autograd through the same kernel."""
    s, t = _logits(6, 9, seed=3) if data == "random" else _extreme(seed=3)
    if kind in ("ce", "mse"):
        s, t = s.clamp_min(-1e7), t.clamp_min(-1e7)
    y = torch.tensor([0, 3, 5, 2, 7, 1])
    coef = torch.rand(6, generator=torch.Generator().manual_seed(4))
    options = RowOptions(temperature=2.0, beta=0.3, smoothing=0.1)
    with torch.no_grad():
        out = row_kernel(kind, s, None if kind == "ce" else t, y, options, coef=coef)
    x = s.clone().requires_grad_(True)
    values = row_kernel(kind, x, None if kind == "ce" else t, y, options).values
    assert values is not None and out.values is not None
    torch.testing.assert_close(out.values, values.detach(), rtol=1e-6, atol=1e-6)
    (want,) = torch.autograd.grad((values * coef).sum(), x)
    assert out.grad is not None and torch.isfinite(out.grad).all()
    # Extreme rows: a logit of 5e5 in fp32 is rounded by 0.03, so log q is only known to that.
    tol = {"rtol": 1e-5, "atol": 1e-6} if data == "random" else {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(out.grad, want, **tol)


@pytest.mark.parametrize("name", [*DIVERGENCES, "mse"])
def test_a_trained_teacher_gets_the_gradient_of_the_formula_written_out(name: str) -> None:
    """With a teacher that needs a gradient the kernels run under autograd (their in-place updates go
    to copies): both gradients equal those of the float64 formula."""
    s, t = _logits(3, 8, seed=5)
    xs, xt = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    call(name, xs, xt, torch.zeros(3, dtype=torch.long), 2.0).backward()
    rs, rt = s.double().requires_grad_(True), t.double().requires_grad_(True)
    ref = F.mse_loss(rs, rt) if name == "mse" else exact(name, rs, rt, 2.0)
    ref.backward()
    assert xs.grad is not None and xt.grad is not None and rs.grad is not None and rt.grad is not None
    torch.testing.assert_close(xs.grad, rs.grad.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(xt.grad, rt.grad.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backward", ["stored", "recompute"])
def test_chunks_free_their_temporaries_before_the_next_chunk(
    monkeypatch: pytest.MonkeyPatch, backward: str
) -> None:
    """Only one chunk's (n, V) temporaries are alive at a time: the peak memory of the chunked loss is the
    gradient plus one chunk (benchmarks/token_loss_memory.py), not two chunks."""
    import weakref

    from distil.losses import chunked
    from distil.losses.chunked import row_loss

    kernel = chunked.KERNELS["kl"]
    earlier: list[weakref.ref[torch.Tensor]] = []
    alive_at_call: list[int] = []

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        alive_at_call.append(sum(ref() is not None for ref in earlier))
        out = kernel(*args, **kwargs)
        if out.grad is not None:
            earlier.append(weakref.ref(out.grad))
        return out

    monkeypatch.setitem(chunked.KERNELS, "kl", watched)
    s = torch.randn(8, 5, requires_grad=True)
    t = torch.randn(8, 5)
    row_loss("kl", s, t, torch.full((8,), 1 / 8), temperature=2.0, chunk_size=2, backward=backward).backward()
    assert len(alive_at_call) >= 4 and earlier
    assert alive_at_call == [0] * len(alive_at_call)
