"""Layer transfer for Hugging Face students: every other layer (DistilBERT), block maps, width selection."""

from __future__ import annotations

import pytest
import torch

from distil.errors import TransferError
from distil.models import create_model
from distil.models.hf import CausalLM, block_names, derive_student_config
from distil.transfer import transfer_parameters

pytest.importorskip("transformers")

V = 259
LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4}
GPT2 = {"model_type": "gpt2", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2}


def lm(config: dict, seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    model = create_model("hf-causal-lm", num_classes=V, config=config)
    assert isinstance(model, CausalLM)
    return model


def _block(model: torch.nn.Module, i: int) -> dict[str, torch.Tensor]:
    prefix = f"{block_names(model)[i]}."
    return {k[len(prefix) :]: v for k, v in model.state_dict().items() if k.startswith(prefix)}


@pytest.mark.parametrize("config", [LLAMA, {**LLAMA, "tie_word_embeddings": True}, GPT2])
def test_every_other_layer_is_copied_bit_for_bit(config: dict) -> None:
    teacher = lm(config)
    student = lm(derive_student_config(teacher.config, num_hidden_layers=2), seed=1)
    report = transfer_parameters(teacher, student)
    for s, t in ((0, 0), (1, 2)):
        a, b = _block(student, s), _block(teacher, t)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    s_emb, t_emb = student.hf.get_input_embeddings().weight, teacher.hf.get_input_embeddings().weight
    assert torch.equal(s_emb, t_emb)
    assert torch.equal(student.hf.get_output_embeddings().weight, teacher.hf.get_output_embeddings().weight)
    if config.get("tie_word_embeddings") or config["model_type"] == "gpt2":
        assert student.hf.get_output_embeddings().weight is s_emb  # still tied
    assert {r.method for r in report.parameters} <= {"exact", "depth-mapped"}
    ids = torch.randint(0, V, (2, 8))
    assert torch.isfinite(student(ids)).all()


def test_a_bert_classifier_keeps_every_other_layer_as_distilbert() -> None:
    bert = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 6, "num_attention_heads": 2}
    torch.manual_seed(0)
    teacher = create_model("hf-seq-classifier", num_classes=3, config={**bert, "intermediate_size": 64})
    student = create_model(
        "hf-seq-classifier", num_classes=3, config={**bert, "intermediate_size": 64, "num_hidden_layers": 3}
    )
    transfer_parameters(teacher, student)
    for s, t in ((0, 0), (1, 2), (2, 4)):
        a, b = _block(student, s), _block(teacher, t)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(
        student.state_dict()["hf.classifier.weight"], teacher.state_dict()["hf.classifier.weight"]
    )


def test_block_numbers_choose_teacher_layers() -> None:
    teacher = lm(LLAMA)
    student = lm(derive_student_config(teacher.config, num_hidden_layers=2), seed=1)
    transfer_parameters(teacher, student, layer_map={0: 1, 1: 3})
    assert all(torch.equal(v, _block(teacher, 3)[k]) for k, v in _block(student, 1).items())
    assert all(torch.equal(v, _block(teacher, 1)[k]) for k, v in _block(student, 0).items())
    with pytest.raises(TransferError, match="out of range"):
        transfer_parameters(teacher, student, layer_map={0: 7})


def _is_slice(small: torch.Tensor, big: torch.Tensor) -> bool:
    """Whether `small` is `big` restricted to some rows and columns (each kept index found in `big`)."""
    if small.dim() == 1:
        return all(bool((big == x).any()) for x in small)
    rows = [
        next((i for i in range(big.shape[0]) if _row_in(small[r], big[i])), None) for r in range(len(small))
    ]
    return None not in rows


def _row_in(row: torch.Tensor, big_row: torch.Tensor) -> bool:
    return all(bool((big_row == x).any()) for x in row)


@pytest.mark.parametrize("selection", ["first", "uniform", "l1"])
def test_narrower_student_takes_slices_of_the_teacher(selection: str) -> None:
    teacher = lm({**LLAMA, "num_attention_heads": 4, "num_key_value_heads": 2})
    derived = derive_student_config(teacher.config, num_hidden_layers=2, hidden_size=16, intermediate_size=32)
    student = lm(derived, seed=1)
    assert (student.config.num_attention_heads, student.config.num_key_value_heads) == (2, 1)
    report = transfer_parameters(teacher, student, selection=selection)
    assert {r.method for r in report.parameters} <= {"selected", "depth-mapped"}
    assert not [r for r in report.parameters if r.method == "random-init"]
    s, t = student.state_dict(), teacher.state_dict()
    for name in (
        "hf.model.embed_tokens.weight",
        "hf.model.norm.weight",
        "hf.model.layers.1.self_attn.q_proj.weight",
    ):
        source = name.replace("layers.1", "layers.2")
        assert _is_slice(s[name], t[source]), name
    if (
        selection == "first"
    ):  # exact positions: hidden units 0..15, heads 0 and 2 (one per kept group: group 0)
        torch.testing.assert_close(
            s["hf.model.embed_tokens.weight"], t["hf.model.embed_tokens.weight"][:, :16]
        )
        q_t = t["hf.model.layers.0.self_attn.q_proj.weight"]
        torch.testing.assert_close(s["hf.model.layers.0.self_attn.q_proj.weight"], q_t[:16, :16])
        down = t["hf.model.layers.2.mlp.down_proj.weight"]
        torch.testing.assert_close(s["hf.model.layers.1.mlp.down_proj.weight"], down[:16, :32])
    out = student(torch.randint(0, V, (2, 8)))
    assert out.shape == (2, 8, V) and torch.isfinite(out).all()


def test_width_refusals_say_why() -> None:
    teacher = lm(LLAMA)
    other_heads = lm({**LLAMA, "hidden_size": 16, "num_attention_heads": 4, "intermediate_size": 32}, seed=1)
    with pytest.raises(TransferError, match="head size"):
        transfer_parameters(teacher, other_heads)
    bert = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    teacher_clf = create_model("hf-seq-classifier", num_classes=3, config={**bert, "intermediate_size": 64})
    narrow = create_model(
        "hf-seq-classifier",
        num_classes=3,
        config={**bert, "hidden_size": 16, "num_attention_heads": 1, "intermediate_size": 32},
    )
    with pytest.raises(TransferError, match="llama family"):
        transfer_parameters(teacher_clf, narrow)


@pytest.mark.parametrize("selection", ["first", "l1"])
def test_narrower_gpt2_student_takes_fused_heads_and_transposed_slices(selection: str) -> None:
    teacher = lm({**GPT2, "num_attention_heads": 4})
    student = lm(
        derive_student_config(teacher.config, num_hidden_layers=2, hidden_size=16, intermediate_size=48),
        seed=1,
    )
    assert (student.config.n_embd, student.config.n_head, student.config.n_inner) == (16, 2, 48)
    report = transfer_parameters(teacher, student, selection=selection)
    assert not [r for r in report.parameters if r.method == "random-init"]
    s, t = student.state_dict(), teacher.state_dict()
    assert s["hf.lm_head.weight"].data_ptr() == s["hf.transformer.wte.weight"].data_ptr()  # still tied
    if selection == "first":  # hidden units 0..15, heads 0 and 1 (8 columns each) of q, k and v
        torch.testing.assert_close(s["hf.transformer.wpe.weight"], t["hf.transformer.wpe.weight"][:, :16])
        cols = torch.cat([torch.arange(16), 32 + torch.arange(16), 64 + torch.arange(16)])
        c_attn = t["hf.transformer.h.2.attn.c_attn.weight"][:16][:, cols]
        torch.testing.assert_close(s["hf.transformer.h.1.attn.c_attn.weight"], c_attn)
        torch.testing.assert_close(
            s["hf.transformer.h.1.mlp.c_proj.weight"], t["hf.transformer.h.2.mlp.c_proj.weight"][:48, :16]
        )
        torch.testing.assert_close(s["hf.transformer.ln_f.bias"], t["hf.transformer.ln_f.bias"][:16])
    for name in ("hf.transformer.wte.weight", "hf.transformer.h.0.attn.c_proj.weight"):
        assert _is_slice(s[name], t[name]), name
    assert torch.isfinite(student(torch.randint(0, V, (2, 8)))).all()


def _corpus(n: int, t: int, seed: int) -> torch.Tensor:
    """Sequences of a fixed 'grammar': each next byte is a function of the previous one (learnable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, t, dtype=torch.long)
    x[:, 0] = torch.randint(0, 32, (n,), generator=g)
    for i in range(1, t):
        x[:, i] = (x[:, i - 1] * 7 + 3) % 32
    return x


def _loss(model: CausalLM, ids: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(ids[:, :-1])
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1)))


def test_transferred_student_starts_below_a_random_one_on_the_teachers_data() -> None:
    teacher = lm(LLAMA)
    data = _corpus(64, 24, seed=0)
    opt = torch.optim.AdamW(teacher.parameters(), lr=1e-2)
    for step in range(60):
        batch = data[(step * 16) % 64 :][:16]
        loss = torch.nn.functional.cross_entropy(
            teacher(batch[:, :-1]).reshape(-1, V), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    held_out = _corpus(32, 24, seed=1)
    for changes in (
        {"num_hidden_layers": 2},
        {"num_hidden_layers": 2, "hidden_size": 24, "intermediate_size": 48},
    ):
        config = derive_student_config(teacher.config, **changes)
        random_init, transferred = lm(config, seed=1).eval(), lm(config, seed=1).eval()
        transfer_parameters(teacher, transferred, selection="l1")
        teacher_loss, random_loss, transferred_loss = (
            _loss(m, held_out) for m in (teacher, random_init, transferred)
        )
        assert teacher_loss < 1.0 < random_loss  # the teacher learnt the grammar; ln(259) ~ 5.6 at random
        assert transferred_loss < random_loss - 1.0, (changes, teacher_loss, transferred_loss, random_loss)
