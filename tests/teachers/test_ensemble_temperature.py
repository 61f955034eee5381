"""An ensemble teacher mixes at the loss's current temperature, which follows `temperature_final`
(issue 23, item 4): its mixture was formed at the first epoch's T in every epoch."""

from __future__ import annotations

import pytest
import torch

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.losses import build_loss, logit
from distil.models import create_model
from distil.teachers import ensemble
from distil.teachers.ensemble import EnsembleTeacher


def teachers(k: int = 5) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [torch.nn.Linear(3, k), torch.nn.Linear(3, k)]


def test_after_a_later_epoch_the_mixture_is_the_hand_mixture_at_the_current_temperature() -> None:
    nets, x = teachers(), torch.randn(4, 3)
    kd = KDConfig(temperature=4.0, temperature_final=1.0)
    loss = build_loss(kd, student=nets[0], teacher=nets[0], sample_x=x, num_classes=5, epochs=3)
    mix = EnsembleTeacher(nets, [3.0, 1.0], kd.temperature).follow(loss.current_temperature)
    loss.set_epoch(2)
    t = loss.current_temperature()
    assert t == 1.0
    with torch.no_grad():
        z1, z2 = nets[0](x), nets[1](x)
        want = 0.75 * torch.softmax(z1 / t, dim=-1) + 0.25 * torch.softmax(z2 / t, dim=-1)
    torch.testing.assert_close(torch.softmax(mix({"inputs": x}) / t, dim=-1), want)


def test_distill_mixes_each_epoch_at_the_temperature_the_kd_term_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mixed: list[float] = []
    used: list[float] = []
    real_mix, real_kd = ensemble.ensemble_logits, logit.kd_kl

    def spy_mix(logits: list[torch.Tensor], weights: list[float], temperature: float) -> torch.Tensor:
        mixed.append(temperature)
        return real_mix(logits, weights, temperature)

    def spy_kd(s: torch.Tensor, t: torch.Tensor, temperature: float, mask=None, **kw) -> torch.Tensor:
        used.append(temperature)
        return real_kd(s, t, temperature, mask=mask, **kw)

    monkeypatch.setattr(ensemble, "ensemble_logits", spy_mix)
    monkeypatch.setattr(logit, "kd_kl", spy_kd)
    data = load_dataset("digits", limit=64, val_fraction=0.1, seed=0)
    torch.manual_seed(0)
    nets = [create_model("smallnet", num_classes=10, in_channels=1, image_size=8) for _ in range(3)]
    cfg = StudentTrainConfig(epochs=3, batch_size=32, augment="none", teacher_cache="off")
    kd = KDConfig(temperature=4.0, temperature_final=1.0)
    distill(nets[:2], nets[2], data, cfg, kd)
    assert mixed == used and sorted(set(used), reverse=True) == [4.0, 2.5, 1.0]


def test_the_logits_mix_is_the_weighted_mean_of_the_logits_at_any_temperature() -> None:
    # rev27: FedDF's ensemble averages logits (Lin et al. 2020); the probability mixture is another target.
    nets, x = teachers(), torch.randn(4, 3)
    with torch.no_grad():
        want = 0.75 * nets[0](x) + 0.25 * nets[1](x)
    for t in (1.0, 4.0):
        mix = EnsembleTeacher(nets, [3.0, 1.0], t, mix="logits")
        torch.testing.assert_close(mix({"inputs": x}), want)
    probs = EnsembleTeacher(nets, [3.0, 1.0], 1.0)  # the default is unchanged: the probability mixture
    assert probs.mix == "probs" and not torch.allclose(probs({"inputs": x}), want)


def test_an_unknown_ensemble_mix_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="probs, logits"):
        EnsembleTeacher(teachers(), mix="median")  # type: ignore[arg-type]
