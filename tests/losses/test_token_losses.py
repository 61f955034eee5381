"""The chunked (B, T, V) path of the logit losses: equal to the naive formulas (values and gradients, fp32
and bf16 logits), sync-free, and keeping no (B, T, V) fp32 tensor from forward to backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from distil.losses import IGNORE_INDEX, cross_entropy, js_divergence, kd_kl, logit_mse, reverse_kl
from distil.losses.functional import total_variation

NAMES = ["kd", "rkl", "js", "js03", "tvd", "ce", "ce_smooth", "mse"]


def call(
    name: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, mask, chunk
) -> torch.Tensor:
    kw = {"mask": mask, "chunk_size": chunk}
    if name == "kd":
        return kd_kl(s, t, temp, **kw)
    if name == "rkl":
        return reverse_kl(s, t, temp, **kw)
    if name == "js":
        return js_divergence(s, t, temp, **kw)
    if name == "js03":
        return js_divergence(s, t, temp, beta=0.3, **kw)
    if name == "tvd":
        return total_variation(s, t, temp, **kw)
    if name == "ce":
        return cross_entropy(s, y, **kw)
    if name == "ce_smooth":
        return cross_entropy(s, y, 0.1, **kw)
    return logit_mse(s, t, **kw)


def naive(name: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, mask) -> torch.Tensor:
    """The textbook computation: select the valid rows, up-cast, full softmaxes, autograd."""
    keep = mask.clone()
    if name.startswith("ce"):
        keep &= y != IGNORE_INDEX
    s, t, y = s[keep].float(), t[keep].float(), y[keep]
    if name.startswith("ce"):
        return F.cross_entropy(s, y, label_smoothing=0.1 if name == "ce_smooth" else 0.0)
    if name == "mse":
        return F.mse_loss(s, t)
    log_q, log_p = F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1)
    q, p = log_q.exp(), log_p.exp()
    if name == "kd":
        per = (p * (log_p - log_q)).sum(1)
    elif name == "rkl":
        per = (q * (log_q - log_p)).sum(1)
    elif name == "tvd":
        per = 0.5 * (q - p).abs().sum(1)
    else:
        beta = 0.3 if name == "js03" else 0.5
        m = beta * p + (1 - beta) * q
        per = beta * (p * (log_p - m.log())).sum(1) + (1 - beta) * (q * (log_q - m.log())).sum(1)
    return per.mean() * temp * temp


def _data(dtype: torch.dtype, b: int = 3, t: int = 11, v: int = 37):
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(b, t, v, generator=g) * 3).to(dtype)
    te = (torch.randn(b, t, v, generator=g) * 3).to(dtype)
    y = torch.randint(0, v, (b, t), generator=g)
    y[0, 8:] = IGNORE_INDEX
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[1, 0] = True
    return s, te, y, mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_equals_naive_in_value_and_gradient(name: str, dtype: torch.dtype) -> None:
    s, t, y, mask = _data(dtype)
    grads = []
    values = []
    for fn in (lambda x: call(name, x, t, y, 2.0, mask, 4), lambda x: naive(name, x, t, y, 2.0, mask)):
        x = s.clone().requires_grad_(True)
        value = fn(x)
        value.backward()
        assert x.grad is not None and x.grad.dtype == dtype
        values.append(value)
        grads.append(x.grad.float())
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-4}
    torch.testing.assert_close(values[0], values[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], **tol)
    # Padded positions get exactly no gradient.
    dead = ~mask if not name.startswith("ce") else ~(mask & (y != IGNORE_INDEX))
    assert not grads[0][dead].any()


@pytest.mark.parametrize("name", NAMES)
def test_chunk_size_does_not_change_the_result(name: str) -> None:
    s, t, y, mask = _data(torch.float32)
    ref = call(name, s, t, y, 3.0, mask, 1000)
    for chunk in (1, 5, None):
        torch.testing.assert_close(call(name, s, t, y, 3.0, mask, chunk), ref)


def test_js_beta_end_points_are_the_kls_as_in_trl() -> None:
    s, t, _, mask = _data(torch.float32)
    assert torch.equal(js_divergence(s, t, 2.0, mask, beta=0.0), kd_kl(s, t, 2.0, mask))
    assert torch.equal(js_divergence(s, t, 2.0, mask, beta=1.0), reverse_kl(s, t, 2.0, mask))
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        js_divergence(s, t, 2.0, mask, beta=1.5)
    # (B, K) logits with beta != 0.5 take the row path too.
    s2, t2 = s[0], t[0]
    got = js_divergence(s2, t2, 2.0, beta=0.3)
    want = naive(
        "js03",
        s2.unsqueeze(0),
        t2.unsqueeze(0),
        torch.zeros(1, 11, dtype=torch.long),
        2.0,
        torch.ones(1, 11, dtype=torch.bool),
    )
    torch.testing.assert_close(got, want)


def test_nan_logits_at_padded_positions_stay_out() -> None:
    s, t, y, mask = _data(torch.float32)
    s[~mask] = float("nan")
    t[~mask] = float("inf")
    x = s.clone().requires_grad_(True)
    value = kd_kl(x, t, 2.0, mask=mask) + cross_entropy(x, y, mask=mask)
    value.backward()
    assert torch.isfinite(value) and x.grad is not None and torch.isfinite(x.grad).all()


SYNCING = ("nonzero", "_local_scalar_dense", "masked_select", "bool_index")


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = str(func)
        if name.startswith("aten.index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
        ):
            name = "bool_index:" + name  # x[mask]: the device counts the rows before the host can go on
        self.names.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", NAMES)
def test_the_sequence_path_never_syncs_with_the_host(name: str) -> None:
    """Boolean row selection (nonzero), .item() (_local_scalar_dense) and masked_select wait for the
    device; on CPU they are still visible as dispatched operations, so their absence is checked here."""
    s, t, y, mask = _data(torch.float32)
    x = s.clone().requires_grad_(True)
    with _Ops() as ops:
        value = call(name, x, t, y, 2.0, mask, 4)
        value.backward()
    syncing = [op for op in ops.names if any(k in op for k in SYNCING)]
    assert not syncing, syncing
    # The naive formula does sync (the selection of valid rows), which is what this rules out.
    with _Ops() as ops:
        naive(name, s, t, y, 2.0, mask)
    assert any(k in op for op in ops.names for k in SYNCING)


def test_forward_keeps_no_fp32_copy_of_the_logits_for_backward() -> None:
    s, t, y, mask = _data(torch.bfloat16, b=2, t=64, v=512)
    saved: list[torch.Tensor] = []

    def pack(x: torch.Tensor) -> torch.Tensor:
        saved.append(x)
        return x

    for fn in (lambda x: kd_kl(x, t, 2.0, mask=mask), lambda x: cross_entropy(x, y, mask=mask)):
        saved.clear()
        x = s.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            value = fn(x)
        # Saved: the inputs (references), (N,) weights and the gradient in the logits' dtype (bf16).
        assert all(v.dtype != torch.float32 or v.numel() <= 2 * 64 for v in saved), [
            (v.dtype, tuple(v.shape)) for v in saved
        ]
        value.backward()
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        naive("kd", s.clone().requires_grad_(True), t, y, 2.0, mask)
    assert any(v.dtype == torch.float32 and v.shape[-1] == 512 for v in saved)


def test_a_trained_teacher_gets_its_gradient() -> None:
    s, t, y, mask = _data(torch.float32)
    t = t.clone().requires_grad_(True)
    kd_kl(s, t, 2.0, mask=mask).backward()
    t2 = t.detach().clone().requires_grad_(True)
    naive("kd", s, t2, y, 2.0, mask).backward()
    assert t.grad is not None and t2.grad is not None
    torch.testing.assert_close(t.grad, t2.grad)


@pytest.mark.parametrize("kind", ["kl", "rkl", "jsd", "tvd", "ce", "mse"])
def test_stored_and_recomputed_backward_agree_and_scale_with_the_incoming_gradient(kind: str) -> None:
    from distil.losses.chunked import row_loss

    s, t, y, mask = _data(torch.bfloat16)
    w = mask.reshape(-1).float() / mask.sum()
    grads = []
    for mode in ("stored", "recompute"):
        x = s.reshape(-1, s.shape[-1]).clone().requires_grad_(True)
        value = row_loss(
            kind,
            x,
            None if kind == "ce" else t.reshape(-1, 37),
            w,
            labels=y.reshape(-1),
            temperature=2.0,
            beta=0.3,
            chunk_size=5,
            backward=mode,
        )
        (0.9 * value).backward()
        assert x.grad is not None
        grads.append(x.grad.float())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-2, atol=1e-5)
    # The same as 0.9 times the gradient of the value alone.
    x = s.reshape(-1, s.shape[-1]).clone().requires_grad_(True)
    row_loss(
        kind,
        x,
        None if kind == "ce" else t.reshape(-1, 37),
        w,
        labels=y.reshape(-1),
        temperature=2.0,
        beta=0.3,
        chunk_size=5,
    ).backward()
    assert x.grad is not None
    torch.testing.assert_close(grads[0], 0.9 * x.grad.float(), rtol=1e-2, atol=1e-5)


def test_a_second_backward_of_a_stored_gradient_is_refused() -> None:
    s, t, _, mask = _data(torch.float32)
    x = s.clone().requires_grad_(True)
    value = kd_kl(x, t, 2.0, mask=mask)
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="recompute"):
        value.backward()


def test_dkd_on_sequences_is_sync_free_too() -> None:
    from distil.losses import dkd

    s, t, y, mask = _data(torch.float32)
    x = s.clone().requires_grad_(True)
    with _Ops() as ops:
        dkd(x, t, y, 2.0, mask=mask).backward()
    assert not [op for op in ops.names if any(k in op for k in SYNCING)]
    keep = mask & (y != IGNORE_INDEX)
    torch.testing.assert_close(dkd(s, t, y, 2.0, mask=mask), dkd(s[keep], t[keep], y[keep], 2.0))


def test_the_composed_lm_loss_is_sync_free_after_the_first_batch() -> None:
    from distil.losses.compose import ComposedLoss
    from distil.losses.registry import TermContext, build_term

    ctx = TermContext()
    loss = ComposedLoss(
        {n: build_term(n, ctx) for n in ("kd", "ce", "tvd")}, {"kd": 0.5, "ce": 0.4, "tvd": 0.1}
    )
    s, t, y, mask = _data(torch.bfloat16)
    padded_teacher = torch.cat([t, torch.full((*t.shape[:2], 27), -30.0, dtype=t.dtype)], dim=-1)
    batch = {"labels": y, "mask": mask}
    loss(s, padded_teacher, batch)  # the first batch checks the padding rows' mass: one sync, once
    x = s.clone().requires_grad_(True)
    with _Ops() as ops:
        loss(x, padded_teacher, batch)["loss"].backward()
    assert not [op for op in ops.names if any(k in op for k in SYNCING)]
