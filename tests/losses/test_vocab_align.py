"""Vocabularies that differ by padding rows are cut to the common ids; anything else is refused."""

from __future__ import annotations

import pytest
import torch

from distil.config import KDConfig
from distil.errors import ConfigError
from distil.losses import kd_kl
from distil.losses.compose import ComposedLoss
from distil.losses.registry import TermContext, build_term
from distil.losses.vocab import align_vocab, padding_mass


def _loss(tolerance: float = 1e-3) -> ComposedLoss:
    ctx = TermContext()
    terms = {"kd": build_term("kd", ctx), "ce": build_term("ce", ctx)}
    return ComposedLoss(terms, {"kd": 1.0, "ce": 1.0}, temperature=2.0, vocab_tolerance=tolerance)


def _batch(b: int = 2, t: int = 5, v: int = 37) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"labels": torch.randint(0, v, (b, t), generator=g), "mask": torch.rand(b, t, generator=g) > 0.3}


def test_a_teacher_with_padding_rows_is_aligned_to_the_real_vocabulary() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 5, 37, generator=g, requires_grad=True)
    real = torch.randn(2, 5, 37, generator=g)
    teacher = torch.cat([real, torch.full((2, 5, 27), -30.0)], dim=-1)  # 64 rows, 27 never predicted
    batch = _batch()
    out = _loss()(s, teacher, batch)
    torch.testing.assert_close(out["kd"], kd_kl(s, real, 2.0, mask=batch["mask"]))


def test_a_student_with_padding_rows_trains_only_the_real_ids() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 5, 64, generator=g, requires_grad=True)
    teacher = torch.randn(2, 5, 37, generator=g)
    batch = _batch()
    out = _loss()(s, teacher, batch)
    torch.testing.assert_close(out["kd"], kd_kl(s[..., :37], teacher, 2.0, mask=batch["mask"]))
    out["loss"].backward()
    assert s.grad is not None and not s.grad[..., 37:].any() and s.grad[..., :37].any()


def test_teacher_mass_on_the_dropped_ids_is_refused_with_what_is_needed() -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 5, 37, generator=g)
    teacher = torch.randn(2, 5, 64, generator=g)  # the extra ids are real tokens
    with pytest.raises(ConfigError, match="same tokenizer") as err:
        _loss()(s, teacher, _batch())
    assert "ids 37..63" in str(err.value) and "vocab_tolerance" in str(err.value)
    # A looser tolerance accepts it (ids known to be unused).
    mass = float(padding_mass(teacher, 37, 2.0))
    assert 0 < mass < 1
    _loss(tolerance=mass + 1e-6)(s, teacher, _batch())


def test_mass_at_padded_positions_does_not_count() -> None:
    teacher = torch.full((1, 3, 40), -30.0)
    teacher[0, :, :37] = 0.0
    teacher[0, 2, 39] = 30.0  # all mass on a dropped id, at a position the mask leaves out
    mask = torch.tensor([[True, True, False]])
    assert float(padding_mass(teacher, 37, 1.0, mask)) < 1e-12
    assert float(padding_mass(teacher, 37, 1.0)) > 0.99
    align_vocab(torch.zeros(1, 3, 37), teacher, mask=mask)


def test_vocabularies_beyond_padding_are_different_tokenizers() -> None:
    with pytest.raises(ConfigError, match=r"different tokenizers.*same tokenizer"):
        align_vocab(torch.zeros(1, 2, 32000), torch.zeros(1, 2, 50257))


def test_recipe_key_reaches_the_loss() -> None:
    assert KDConfig().vocab_tolerance == 1e-3
    with pytest.raises(ValueError):
        KDConfig(vocab_tolerance=2.0)
