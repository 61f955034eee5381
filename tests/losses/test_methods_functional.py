"""Each loss function against an independent computation: the formula written out with Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from distil.losses import (
    attention_transfer,
    contrastive_nce,
    dkd,
    ensemble_logits,
    fitnet_hint,
    js_divergence,
    kd_kl,
    logit_mse,
    pkt,
    reverse_kl,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)


def softmax(row: list[float], t: float = 1.0) -> list[float]:
    z = [math.exp(v / t) for v in row]
    return [v / sum(z) for v in z]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def smooth_l1(a: list[float], b: list[float]) -> float:
    d = [abs(x - y) for x, y in zip(a, b, strict=True)]
    return sum(0.5 * v * v if v < 1 else v - 0.5 for v in d) / len(d)


def logits(seed: int = 0, b: int = 4, k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g, dtype=torch.float64) * 2, torch.randn(
        b, k, generator=g, dtype=torch.float64
    ) * 2


def close(a: torch.Tensor, b: float) -> None:
    torch.testing.assert_close(a.double(), torch.tensor(b, dtype=torch.float64), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_reverse_kl_and_js(t: float) -> None:
    s, te = logits()
    ps = [softmax(r, t) for r in s.tolist()]
    pt = [softmax(r, t) for r in te.tolist()]
    close(reverse_kl(s, te, t), sum(kl(a, b) for a, b in zip(ps, pt, strict=True)) / len(ps) * t * t)
    js = 0.0
    for a, b in zip(ps, pt, strict=True):
        m = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
        js += (kl(a, m) + kl(b, m)) / 2
    close(js_divergence(s, te, t), js / len(ps) * t * t)
    assert js_divergence(s, te, t) <= math.log(2) * t * t


def test_logit_mse_and_fitnet_hint() -> None:
    s, te = logits()
    ref = sum(
        (a - b) ** 2
        for ra, rb in zip(s.tolist(), te.tolist(), strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    close(logit_mse(s, te), ref / s.numel())
    close(fitnet_hint(s, te), ref / s.numel())
    with pytest.raises(ValueError, match=r"\(4, 6\).*\(4, 5\)"):
        fitnet_hint(s, te[:, :5])


@pytest.mark.parametrize(("alpha", "beta", "t"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_tckd_and_nckd_written_out(alpha: float, beta: float, t: float) -> None:
    s, te = logits(1)
    y = torch.tensor([0, 3, 5, 2])
    total = 0.0
    for rs, rt, c in zip(s.tolist(), te.tolist(), y.tolist(), strict=True):
        ps, pt = softmax(rs, t), softmax(rt, t)
        tckd = kl([pt[c], 1 - pt[c]], [ps[c], 1 - ps[c]])
        ps_nt = softmax([v for i, v in enumerate(rs) if i != c], t)
        pt_nt = softmax([v for i, v in enumerate(rt) if i != c], t)
        total += alpha * tckd + beta * kl(pt_nt, ps_nt)
    close(dkd(s, te, y, t, alpha, beta), total / len(y) * t * t)


def test_dkd_decomposes_kd() -> None:
    """The paper's identity: KD = TCKD + (1 - p_t[target]) * NCKD, per sample."""
    s, te = logits(2, b=1)
    y, t = torch.tensor([2]), 3.0
    tckd, nckd = dkd(s, te, y, t, 1.0, 0.0), dkd(s, te, y, t, 0.0, 1.0)
    pt_target = torch.softmax(te / t, 1)[0, 2]
    torch.testing.assert_close(kd_kl(s, te, t).double(), tckd + (1 - pt_target) * nckd, rtol=1e-5, atol=1e-7)


def test_ensemble_logits_soften_to_the_weighted_mixture() -> None:
    a, b = logits(3)
    t, w = 4.0, [3.0, 1.0]
    mix = ensemble_logits([a, b], w, t)
    ref = 0.75 * torch.softmax(a / t, 1) + 0.25 * torch.softmax(b / t, 1)
    torch.testing.assert_close(torch.softmax(mix / t, 1).double(), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ensemble_logits([a, b], [1.0, 0.0], t), ensemble_logits([a], [1.0], t))
    with pytest.raises(ValueError, match="weight"):
        ensemble_logits([a, b], [1.0], t)


def test_attention_transfer_written_out() -> None:
    g = torch.Generator().manual_seed(4)
    fs, ft = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 5, 2, 2, generator=g)  # channels differ
    total, n = 0.0, 0
    for bs, bt in zip(fs.tolist(), ft.tolist(), strict=True):
        maps = []
        for f in (bs, bt):
            a = [sum(f[c][i][j] ** 2 for c in range(len(f))) / len(f) for i in range(2) for j in range(2)]
            norm = math.sqrt(sum(v * v for v in a))
            maps.append([v / norm for v in a])
        total += sum((x - y) ** 2 for x, y in zip(*maps, strict=True))
        n += 4
    close(attention_transfer(fs, ft), total / n)
    with pytest.raises(ValueError, match="spatial"):
        attention_transfer(fs, torch.randn(2, 5, 3, 3))


def _dist(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def test_rkd_distance_and_angle_written_out() -> None:
    g = torch.Generator().manual_seed(5)
    s, t = (
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(4, 7, generator=g, dtype=torch.float64),
    )
    n = 4
    dists = []
    for e in (s.tolist(), t.tolist()):
        d = [[_dist(e[i], e[j]) for j in range(n)] for i in range(n)]
        mean = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * n - n)
        dists.append([d[i][j] / mean for i in range(n) for j in range(n)])
    close(rkd_distance(s, t), smooth_l1(dists[0], dists[1]))
    angles = []
    for e in (s.tolist(), t.tolist()):
        vals = []
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    u = [a - b for a, b in zip(e[j], e[i], strict=True)]
                    v = [a - b for a, b in zip(e[k], e[i], strict=True)]
                    nu, nv = (
                        max(math.sqrt(sum(x * x for x in u)), 1e-12),
                        max(math.sqrt(sum(x * x for x in v)), 1e-12),
                    )
                    vals.append(sum(a * b for a, b in zip(u, v, strict=True)) / (nu * nv))
        angles.append(vals)
    close(rkd_angle(s, t), smooth_l1(angles[0], angles[1]))


def test_pkt_and_sp_written_out() -> None:
    g = torch.Generator().manual_seed(6)
    s, t = (
        torch.randn(3, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 6, generator=g, dtype=torch.float64),
    )
    eps = 1e-7

    def cond(e: list[list[float]]) -> list[list[float]]:
        unit = [[x / math.sqrt(sum(v * v for v in r)) for x in r] for r in e]
        sim = [[(sum(a * b for a, b in zip(u, w, strict=True)) + 1) / 2 for w in unit] for u in unit]
        return [[v / sum(r) for v in r] for r in sim]

    ps, pt = cond(s.tolist()), cond(t.tolist())
    ref = sum(
        b * math.log((b + eps) / (a + eps))
        for ra, rb in zip(ps, pt, strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    close(pkt(s, t), ref / 9)

    def gram(e: list[list[float]]) -> list[list[float]]:
        gm = [[sum(a * b for a, b in zip(u, w, strict=True)) for w in e] for u in e]
        return [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in gm]

    gs, gt = gram(s.tolist()), gram(t.tolist())
    ref_sp = sum((b - a) ** 2 for ra, rb in zip(gs, gt, strict=True) for a, b in zip(ra, rb, strict=True)) / 9
    close(similarity_preserving(s, t), ref_sp)


def test_contrastive_nce_written_out() -> None:
    g = torch.Generator().manual_seed(7)
    a = torch.nn.functional.normalize(torch.randn(2, 3, generator=g, dtype=torch.float64), dim=1)
    p = torch.nn.functional.normalize(torch.randn(2, 3, generator=g, dtype=torch.float64), dim=1)
    n = torch.nn.functional.normalize(torch.randn(2, 4, 3, generator=g, dtype=torch.float64), dim=2)
    tau, total = 0.5, 0.0
    for i in range(2):
        dots = [
            sum(x * y for x, y in zip(a[i].tolist(), v, strict=True)) / tau
            for v in [p[i].tolist(), *n[i].tolist()]
        ]
        total += -dots[0] + math.log(sum(math.exp(d) for d in dots))
    close(contrastive_nce(a, p, n, tau), total / 2)


def test_relational_losses_are_zero_for_identical_structure_and_differentiable() -> None:
    e = torch.randn(5, 8)
    for fn in (rkd_distance, rkd_angle, pkt, similarity_preserving):
        assert float(fn(e, e * 3)) < 1e-5 if fn is not pkt else float(fn(e, e)) < 1e-5
        s = torch.randn(5, 4, requires_grad=True)
        fn(s, e).backward()
        assert s.grad is not None and torch.isfinite(s.grad).all()
