"""A narrower student's key/value groups divide its heads and can be filled from the teacher's (issue 23,
item 3): 8 heads in 2 groups narrowed to 48 hidden units is 6 heads in 2 groups of 3, not 1 group of 6."""

from __future__ import annotations

import pytest
import torch

from distil.models import create_model
from distil.models.hf import CausalLM, derive_student_config, kv_groups
from distil.transfer import transfer_parameters

pytest.importorskip("transformers")

TEACHER = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
}


def lm(config: dict, seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    model = create_model("hf-causal-lm", num_classes=259, config=config)
    assert isinstance(model, CausalLM)
    return model


def test_eight_heads_in_two_groups_narrowed_to_48_keep_two_groups_and_transfer() -> None:
    teacher = lm(TEACHER)
    derived = derive_student_config(teacher.config, hidden_size=48)
    assert (derived["num_attention_heads"], derived["num_key_value_heads"]) == (6, 2)
    student = lm(derived, seed=1)
    report = transfer_parameters(teacher, student, selection="first")
    assert not [r for r in report.parameters if r.method == "random-init"]
    # Group g of the student holds the first 3 of the teacher group g's 4 query heads (head size 8).
    q_t = teacher.hf.model.layers[0].self_attn.q_proj.weight
    q_s = student.hf.model.layers[0].self_attn.q_proj.weight
    rows = [h * 8 + d for h in (0, 1, 2, 4, 5, 6) for d in range(8)]
    torch.testing.assert_close(q_s, q_t[rows][:, :48], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("heads", "heads_t", "kv_t", "want"),
    [(6, 8, 2, 2), (2, 4, 2, 1), (4, 8, 8, 4), (8, 8, 2, 2), (3, 8, 2, 1), (12, 16, 4, 3), (4, 8, 1, 1)],
)
def test_kv_groups_divide_the_heads_and_fit_the_teachers_groups(
    heads: int, heads_t: int, kv_t: int, want: int
) -> None:
    kv = kv_groups(heads, heads_t, kv_t)
    assert kv == want and heads % kv == 0 and kv <= kv_t and heads // kv <= heads_t // kv_t
