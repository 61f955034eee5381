"""The composed loss: weights, schedules, feature capture with adapters, registry errors, CRD memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.config import KDConfig
from distil.errors import ConfigError
from distil.losses import LOSSES, METHODS, build_loss, fitnet_hint, method_terms
from distil.losses.contrastive import CRDTerm
from distil.losses.registry import TermContext, TermInputs
from distil.models import create_model


def nets() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    return teacher, student, torch.randn(4, 1, 8, 8)


def batch(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"inputs": x, "labels": torch.tensor([0, 1, 2, 3])[: len(x)], "index": torch.arange(len(x))}


def test_default_terms_equal_the_hinton_loss() -> None:
    t, s, x = nets()
    loss = build_loss(
        KDConfig(temperature=3.0, kd_weight=0.7, ce_weight=0.3),
        student=s,
        teacher=t,
        sample_x=x,
        num_classes=10,
    )
    s_out, t_out, y = s(x), t(x), batch(x)["labels"]
    out = loss(s_out, t_out, batch(x))
    assert set(out) == {"loss", "kd", "ce"}
    # Hinton et al. 2015 written out: T^2 * sum p_t^T log(p_t^T / p_s^T), and CE on the labels.
    p_t = torch.softmax(t_out / 3.0, dim=1)
    kd = (p_t * (p_t.log() - torch.log_softmax(s_out / 3.0, dim=1))).sum(1).mean() * 9.0
    ce = -torch.log_softmax(s_out, dim=1).gather(1, y[:, None]).mean()
    torch.testing.assert_close(out["kd"], kd)
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["loss"], 0.7 * kd + 0.3 * ce)
    assert not loss.teacher_needs.live  # logits only: the teacher cache can stand in


def test_every_term_is_logged_and_the_total_is_the_weighted_sum() -> None:
    t, s, x = nets()
    kd = KDConfig(terms={"ce": 0.5, "kd": 2.0, "dkd": 0.25, "js": 1.0})
    out = build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10)(s(x), t(x), batch(x))
    assert set(out) == {"loss", "ce", "kd", "dkd", "js"}
    torch.testing.assert_close(out["loss"], 0.5 * out["ce"] + 2.0 * out["kd"] + 0.25 * out["dkd"] + out["js"])


def test_warmup_and_temperature_schedule_follow_the_epoch() -> None:
    t, s, x = nets()
    kd = KDConfig(terms={"ce": 1.0, "kd": 1.0}, warmup={"kd": 4}, temperature=4.0, temperature_final=1.0)
    loss = build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10, epochs=4)
    seen = []
    for epoch in range(4):
        loss.set_epoch(epoch)
        seen.append((loss.current_weight("kd"), loss.current_temperature()))
    assert seen == [(0.25, 4.0), (0.5, 3.0), (0.75, 2.0), (1.0, 1.0)]
    assert loss.current_weight("ce") == 1.0


def test_unknown_term_lists_valid_names_and_closest_match() -> None:
    t, s, x = nets()
    with pytest.raises(ConfigError) as err:
        build_loss(KDConfig(terms={"fitnets": 1.0}), student=s, teacher=t, sample_x=x, num_classes=10)
    msg = str(err.value)
    assert "'fitnets'" in msg and "Did you mean 'fitnet'" in msg and "at, ce, crd" in msg
    with pytest.raises(ConfigError, match="Did you mean 'dkd'"):
        method_terms("dkdd")
    with pytest.raises(ConfigError, match=r"valid options: alpha=1\.0, beta=8\.0"):
        build_loss(
            KDConfig(terms={"dkd": 1.0}, options={"dkd": {"gamma": 1}}),
            student=s,
            teacher=t,
            sample_x=x,
            num_classes=10,
        )


def test_methods_use_registered_terms() -> None:
    for terms in METHODS.values():
        assert all(name in LOSSES for name in terms)


def test_fitnet_captures_the_current_batch_and_trains_its_adapter() -> None:
    t, s, x = nets()
    kd = KDConfig(terms={"fitnet": 1.0}, feature_pairs=[("conv2", "conv2")])  # 32 vs 128 channels
    loss = build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10)
    adapters = list(loss.parameters())
    assert adapters, "a 1x1-conv adapter should be trainable"
    x2 = torch.randn(4, 1, 8, 8)
    t(x)
    s(x)
    with torch.no_grad():
        t_out = t(x2)  # the last forward wins: features of x2, not x
    out = loss(s(x2), t_out, batch(x2))
    # Independent: the same hint from features computed directly.
    feats: dict[str, torch.Tensor] = {}
    hs = s.conv2.register_forward_hook(lambda m, i, o: feats.__setitem__("s", o))
    ht = t.conv2.register_forward_hook(lambda m, i, o: feats.__setitem__("t", o))
    s(x2)
    t(x2)
    hs.remove()
    ht.remove()
    adapter = loss.terms["fitnet"].adapters[0]
    torch.testing.assert_close(out["fitnet"], fitnet_hint(adapter(feats["s"]), feats["t"]))
    out["loss"].backward()
    assert all(p.grad is not None for p in adapters)
    assert s.conv2.weight.grad is not None and t.conv2.weight.grad is None
    assert loss.student_capture is not None
    loss.student_capture.features()  # hands over and clears the features of the last forward
    with pytest.raises(RuntimeError, match="no student feature captured"):
        loss.student_capture.features()  # no stale features from an earlier batch
    loss.close()
    assert not s.conv2._forward_hooks and not t.conv2._forward_hooks


def test_fitnet_trains_a_regressor_also_when_shapes_match() -> None:
    # FitNets always trains a regressor (conv + BN + ReLU); equal shapes used to get nn.Identity.
    torch.manual_seed(0)
    t = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    s = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    x = torch.randn(4, 1, 8, 8)
    kd = KDConfig(terms={"fitnet": 1.0}, feature_pairs=[("relu2", "relu2")])  # (32, 4, 4) both
    loss = build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10)
    (regressor,) = loss.terms["fitnet"].adapters
    kinds = [type(m) for m in regressor.children()]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert regressor[0].kernel_size == (1, 1) and regressor[0].in_channels == regressor[0].out_channels == 32
    loss.close()
    # Other feature terms keep their papers' (absent) projections: attention transfer has none.
    at = build_loss(
        KDConfig(terms={"at": 1.0}, feature_pairs=[("relu2", "relu2")]),
        student=s,
        teacher=t,
        sample_x=x,
        num_classes=10,
    )
    assert not list(at.parameters())
    at.close()


def test_incompatible_shapes_without_adapter_name_both_shapes() -> None:
    t, s, x = nets()
    kd = KDConfig(terms={"fitnet": 1.0}, feature_pairs=[("conv2", "conv2")], adapters=False)
    with pytest.raises(ConfigError, match=r"\(32, 4, 4\).*\(128, 4, 4\)"):
        build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10)
    kd = KDConfig(terms={"fitnet": 1.0}, feature_pairs=[("conv1", "conv2")])
    with pytest.raises(ConfigError, match=r"\(16, 8, 8\).*\(128, 4, 4\)"):
        build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10)


def test_unknown_module_path_names_the_closest_one() -> None:
    t, s, x = nets()
    kd = KDConfig(terms={"at": 1.0}, feature_pairs=[("conv_2", "conv2")])
    with pytest.raises(
        ConfigError, match=r"unknown module path 'conv_2' in the student.*Did you mean 'conv2'"
    ):
        build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10)


@pytest.mark.parametrize("name", ["at", "sp", "rkd", "pkt", "fitnet"])
def test_feature_terms_run_on_auto_pairs_and_give_gradients(name: str) -> None:
    t, s, x = nets()
    loss = build_loss(
        KDConfig(terms={"ce": 1.0, name: 1.0}), student=s, teacher=t, sample_x=x, num_classes=10
    )
    with torch.no_grad():
        t_out = t(x)
    out = loss(s(x), t_out, batch(x))
    assert torch.isfinite(out[name])
    out["loss"].backward()
    assert s.conv1.weight.grad is not None
    loss.close()


def test_crd_memory_is_bounded_and_updates_only_the_batch_rows() -> None:
    t, s, x = nets()
    kd = KDConfig(terms={"crd": 1.0}, options={"crd": {"feat_dim": 16, "n_negatives": 8}})
    loss = build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10, n_data=50)
    crd = loss.terms["crd"]
    assert isinstance(crd, CRDTerm)
    assert crd.memory_bytes == 50 * 16 * 2 * 4
    before = crd.memory_s.clone()
    with torch.no_grad():
        t_out = t(x)
    b = batch(x)
    b["index"] = torch.tensor([3, 7, 11, 40])
    out = loss(s(x), t_out, b)
    out["loss"].backward()
    changed = (crd.memory_s != before).any(1).nonzero().flatten().tolist()
    assert changed == [3, 7, 11, 40]
    assert crd.embed_s.weight.grad is not None
    with pytest.raises(ConfigError, match="n_data"):
        build_loss(kd, student=s, teacher=t, sample_x=x, num_classes=10, n_data=0)


@pytest.mark.parametrize("recipe", ["cifar100-resnet56-resnet20", "cifar100-resnet32x4-resnet8x4"])
def test_cifar100_recipes_build_every_method(recipe: str) -> None:
    from distil.config import load_recipe
    from distil.recipes import resolve_recipe

    r = load_recipe(resolve_recipe(recipe))
    assert (r.student_train.epochs, r.student_train.batch_size, r.student_train.lr, r.kd.temperature) == (
        240,
        64,
        0.05,
        4.0,
    )
    if recipe.endswith("resnet8x4"):
        return  # its kd section is the resnet56 one with other module sizes; one probe is enough
    teacher = create_model(r.teacher.model, num_classes=100, in_channels=3, image_size=32)
    student = create_model(r.student.model, num_classes=100, in_channels=3, image_size=32)
    x = torch.randn(2, 3, 32, 32)
    for method, terms in METHODS.items():
        kd = r.kd.model_copy(update={"terms": terms})
        loss = build_loss(kd, student=student, teacher=teacher, sample_x=x, num_classes=100, n_data=500)
        assert set(loss.terms) == set(terms), method
        loss.close()


def test_crd_never_draws_a_sample_as_its_own_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    # Few samples, many draws: sampling from all positions would hit the sample itself almost surely.
    from distil.losses import contrastive

    ctx = TermContext(pairs=[("fc1", "fc1")], student_shapes=[(4,)], teacher_shapes=[(4,)], n_data=6)
    crd = CRDTerm(ctx, feat_dim=3, n_negatives=64)
    assert crd.n_negatives == 5  # capped at n_data - 1
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = contrastive.contrastive_nce

    def spy(
        anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float
    ) -> torch.Tensor:
        calls.append((positive.detach().clone(), negatives.detach().clone()))
        return real(anchor, positive, negatives, tau)

    monkeypatch.setattr(contrastive, "contrastive_nce", spy)
    idx = torch.arange(6)
    for _ in range(40):
        features = [torch.randn(6, 4)]
        crd(
            TermInputs(
                torch.zeros(6, 3),
                torch.zeros(6, 3),
                torch.zeros(6, dtype=torch.long),
                idx,
                features,
                [torch.randn(6, 4)],
            )
        )
    assert len(calls) == 80
    for positive, negatives in calls:  # memory rows are distinct random unit vectors
        assert not torch.isclose(negatives, positive.unsqueeze(1)).all(-1).any()
    # Uniform over the others: every other position is drawn, never the sample itself.
    from distil.losses.contrastive import draw_negatives

    many = draw_negatives(idx.repeat(500), 6, 5)
    hits = torch.zeros(6, 6, dtype=torch.long).index_put_(
        (idx.repeat(500).unsqueeze(1).expand_as(many), many), torch.tensor(1), accumulate=True
    )
    assert (hits.diagonal() == 0).all() and (hits + torch.eye(6, dtype=torch.long) > 0).all()


def test_crd_defaults_to_the_papers_16384_negatives() -> None:
    ctx = TermContext(pairs=[("fc1", "fc1")], student_shapes=[(4,)], teacher_shapes=[(4,)], n_data=50_000)
    assert CRDTerm(ctx, feat_dim=2).n_negatives == 16384
