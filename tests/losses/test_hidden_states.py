"""Per-token hidden-state distillation of transformer blocks by layer map, with a trained projection."""

from __future__ import annotations

import pytest
import torch

from distil.config import KDConfig
from distil.errors import ConfigError
from distil.features import block_pairs, transformer_blocks
from distil.losses import build_loss
from distil.losses.functional import hidden_state_loss

pytest.importorskip("transformers")

from distil.models import create_model

VOCAB = 61


def _lm(hidden: int, layers: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    }
    return create_model("hf-causal-lm", num_classes=VOCAB, config=config)


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    return _lm(48, 4, 0).eval(), _lm(32, 2, 1)


def test_block_stacks_and_maps(pair) -> None:
    teacher, student = pair
    assert transformer_blocks(teacher) == ("hf.model.layers", 4)
    assert block_pairs(student, teacher) == [
        ("hf.model.layers.0", "hf.model.layers.1"),
        ("hf.model.layers.1", "hf.model.layers.3"),
    ]
    assert block_pairs(student, teacher, {0: 2, -1: -1}) == [
        ("hf.model.layers.0", "hf.model.layers.2"),
        ("hf.model.layers.1", "hf.model.layers.3"),
    ]
    with pytest.raises(ConfigError, match="out of range: the student has 2 blocks"):
        block_pairs(student, teacher, {2: 0})
    with pytest.raises(ConfigError, match="no stack of transformer blocks"):
        transformer_blocks(torch.nn.Linear(2, 2))


def test_masked_mean_over_positions() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[True, True, False, False, False], [True, False, True, True, True]])
    torch.testing.assert_close(hidden_state_loss(s, t, mask), ((s - t) ** 2).mean(-1)[mask].mean())
    cos = 1 - torch.nn.functional.cosine_similarity(s, t, dim=-1)
    torch.testing.assert_close(hidden_state_loss(s, t, mask, "cosine"), cos[mask].mean())


@pytest.mark.parametrize("term", ["hidden_mse", "hidden_cosine"])
def test_the_projection_trains_with_the_student_and_the_loss_falls(pair, term: str) -> None:
    teacher, student = pair
    student = _lm(32, 2, 1)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (4, 12), generator=g)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[0, 8:] = False
    kd = KDConfig(
        terms={"kd": 1.0, term: 1.0}, options={term: {"layer_map": {0: 1, -1: -1}}}, temperature=2.0
    )
    loss = build_loss(kd, student=student, teacher=teacher, sample_x=ids[:2], num_classes=VOCAB)
    proj = loss.terms[term].adapters[0]
    assert isinstance(proj, torch.nn.Linear) and tuple(proj.weight.shape) == (48, 32)
    # What the training loop does: one optimizer over the student and the loss's own parameters.
    opt = torch.optim.Adam([*student.parameters(), *loss.parameters()], lr=3e-3)
    before = proj.weight.detach().clone()
    values = []
    for _ in range(25):
        with torch.no_grad():
            t_logits = teacher(ids)
        out = loss(student(ids), t_logits, {"labels": ids, "mask": mask})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        values.append(float(out[term].detach()))
    loss.close()
    assert not torch.equal(before, proj.weight.detach())
    assert values[-1] < 0.7 * values[0], values


def test_default_map_without_feature_pairs_is_auto(pair) -> None:
    teacher, student = pair
    ids = torch.randint(0, VOCAB, (2, 6))
    loss = build_loss(
        KDConfig(terms={"hidden_mse": 1.0}), student=student, teacher=teacher, sample_x=ids, num_classes=VOCAB
    )
    assert loss.student_capture is not None and loss.teacher_capture is not None
    captured = list(zip(loss.student_capture.paths, loss.teacher_capture.paths, strict=True))
    assert [captured[i] for i in loss.terms["hidden_mse"].indices] == block_pairs(student, teacher)
    loss.close()
