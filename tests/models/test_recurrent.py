"""Recurrent students: the (bi)LSTM classifier ignores padding, the GRU/LSTM LMs are causal and decode
step by step with their state as the cache, checkpoints rebuild from their sidecar, ONNX matches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distil.errors import ModelError
from distil.measure.lm import decode_problem, generation_latency, greedy_ids
from distil.models import build_from_spec, create_model, model_spec
from distil.models.recurrent import LSTMClassifier, RecurrentLM, reverse_valid
from distil.train.checkpoint import load_checkpoint, save_checkpoint

PAD = 258
SMALL = {"embed_dim": 8, "hidden_size": 12}


def _ids(rows: int = 4, length: int = 9, seed: int = 0) -> torch.Tensor:
    """Right-padded byte ids: row b holds its own number of tokens (one row all padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (rows, length), generator=g)
    for b, keep in enumerate((length, 5, 1, 0)[:rows]):
        ids[b, keep:] = PAD
    return ids


def _classifier(**kwargs: object) -> LSTMClassifier:
    torch.manual_seed(0)
    model = create_model("lstm-classifier", num_classes=3, **{**SMALL, **kwargs})
    assert isinstance(model, LSTMClassifier)
    return model.eval()


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_does_not_change_a_classifiers_output(pooling: str, bidirectional: bool) -> None:
    model = _classifier(pooling=pooling, bidirectional=bidirectional, num_layers=2)
    ids = _ids()
    more = torch.cat([ids, torch.full((4, 6), PAD)], dim=1)
    with torch.no_grad():
        logits = model(ids)
        torch.testing.assert_close(model(more), logits, rtol=0, atol=1e-6)
        # Each row scores as it does alone without any padding (the backward direction starts at its end).
        for b in range(3):
            alone = ids[b : b + 1, : int((ids[b] != PAD).sum())]
            torch.testing.assert_close(model(alone), logits[b : b + 1], rtol=0, atol=1e-6)
        # An explicit mask means the same as the pad id.
        torch.testing.assert_close(model(ids, attention_mask=(ids != PAD).long()), logits)
    assert torch.isfinite(logits).all()  # the all-padding row too


def test_a_left_padded_mask_is_refused() -> None:
    model = _classifier()
    mask = torch.tensor([[0, 1, 1]])
    with pytest.raises(ModelError, match="right-padded"):
        model(torch.tensor([[PAD, 5, 6]]), attention_mask=mask)
    lm = create_model("gru-lm", num_classes=259, **SMALL)
    with pytest.raises(ModelError, match="right-padded"):
        lm(torch.tensor([[PAD, 5, 6]]), attention_mask=mask)


def test_reverse_valid_reverses_the_tokens_and_leaves_the_padding() -> None:
    x = torch.arange(5.0).view(1, 5, 1).repeat(2, 1, 1)
    out = reverse_valid(x, torch.tensor([3, 5]))
    assert out[0, :, 0].tolist() == [2, 1, 0, 3, 4] and out[1, :, 0].tolist() == [4, 3, 2, 1, 0]
    torch.testing.assert_close(reverse_valid(out, torch.tensor([3, 5])), x)


def test_sizes_and_vocabulary_come_from_kwargs_and_bad_ones_are_named() -> None:
    model = create_model("lstm-classifier", num_classes=5, vocab_size=30, pad_id=0, **SMALL)
    assert isinstance(model, LSTMClassifier) and model.embedding.num_embeddings == 30 and model.pad_id == 0
    assert model(torch.tensor([[3, 4, 0]])).shape == (1, 5)
    assert create_model("lstm-classifier", num_classes=2).pad_id == PAD  # the byte tokenizer's
    with pytest.raises(ModelError, match="pooling must be one of last, mean, max"):
        create_model("lstm-classifier", num_classes=2, pooling="sum")
    with pytest.raises(ModelError, match="pad_id 40 is outside the vocabulary of 30"):
        create_model("lstm-classifier", num_classes=2, vocab_size=30, pad_id=40)
    with pytest.raises(ModelError, match="hidden_size must be a positive integer"):
        create_model("gru-lm", num_classes=259, hidden_size=0)
    with pytest.raises(ModelError, match="Did you mean 'hidden_size'"):
        create_model("lstm-lm", num_classes=259, hiden_size=8)


@pytest.mark.parametrize("name", ["gru-lm", "lstm-lm"])
@pytest.mark.parametrize("tie", [True, False])
def test_a_recurrent_lm_is_causal_with_logits_over_the_vocabulary(name: str, tie: bool) -> None:
    torch.manual_seed(0)
    lm = create_model(name, num_classes=259, num_layers=2, tie_weights=tie, **SMALL).eval()
    assert isinstance(lm, RecurrentLM)
    assert (lm.head.weight is lm.embedding.weight) == tie
    ids = _ids(2, 7).clamp(max=255)
    with torch.no_grad():
        logits = lm(ids)
        changed = ids.clone()
        changed[:, 4] = (changed[:, 4] + 1) % 256
        later = lm(changed)
    assert logits.shape == (2, 7, 259)
    torch.testing.assert_close(later[:, :4], logits[:, :4])  # the future does not reach the past
    assert not torch.allclose(later[:, 4:], logits[:, 4:])
    # Right padding with its mask changes nothing before it; the state continues a sequence exactly.
    with torch.no_grad():
        torch.testing.assert_close(lm(ids, attention_mask=torch.ones_like(ids)), logits)
        first = lm(ids[:, :3], use_cache=True)
        rest = lm(ids[:, 3:], past_key_values=first.past_key_values, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=1), logits, rtol=1e-5, atol=1e-5)


def test_the_one_decoder_runs_a_recurrent_lm_step_by_step() -> None:
    torch.manual_seed(0)
    lm = create_model("lstm-lm", num_classes=259, **SMALL).eval()
    prompt = torch.tensor([[10, 20, 30, 40]])
    new = greedy_ids(lm, prompt, 6)
    # The same tokens as re-reading the whole sequence at each step (no state carried).
    ids = prompt
    with torch.no_grad():
        for _ in range(6):
            ids = torch.cat([ids, lm(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert new.tolist() == ids[:, 4:].tolist()
    timed = generation_latency(lm, prompt, 4, repeats=1)
    assert timed.ms_per_token > 0 and timed.prompt_tokens == 4
    # Batched left-padded prompts (on-policy generation) are named as what it cannot decode.
    assert decode_problem(lm) == "its forward takes no position_ids"


def test_on_policy_generation_refuses_a_recurrent_lm() -> None:
    from distil.train.completions import check_can_generate

    with pytest.raises(ModelError, match="RecurrentLM cannot generate"):
        check_can_generate(create_model("gru-lm", num_classes=259, **SMALL))


@pytest.mark.parametrize(
    ("name", "kwargs", "num_classes"),
    [
        ("lstm-classifier", {"num_layers": 2, "pooling": "max", "head_hidden": 6}, 4),
        ("gru-lm", {"tie_weights": False}, 259),
        ("lstm-lm", {"hidden_size": 16}, 259),
    ],
)
def test_a_checkpoint_rebuilds_from_its_sidecar_with_the_same_outputs(
    tmp_path: Path, name: str, kwargs: dict, num_classes: int
) -> None:
    kwargs = {**SMALL, **kwargs}
    spec = model_spec(name, num_classes=num_classes, in_channels=1, image_size=1, **kwargs)
    torch.manual_seed(0)
    model = build_from_spec(spec).eval()
    save_checkpoint(tmp_path / "m", model, spec, {"data": {"num_classes": num_classes}})
    loaded, meta = load_checkpoint(tmp_path / "m")
    assert meta["spec"] == spec
    ids = _ids().clamp(max=257) if name != "lstm-classifier" else _ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids), model(ids), rtol=0, atol=0)


BERT = {"model_type": "bert", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
BERT_KWARGS = {"config": {**BERT, "num_attention_heads": 2, "max_position_embeddings": 16}}


@pytest.mark.parametrize(
    ("name", "num_classes", "kwargs"),
    [
        ("lstm-classifier", 3, SMALL),
        ("gru-lm", 259, SMALL),
        ("lstm-lm", 259, SMALL),
        ("hf-seq-classifier", 3, BERT_KWARGS),  # the transformer students they are timed beside
    ],
)
def test_onnx_export_has_dynamic_batch_and_length_and_matches_pytorch(
    tmp_path: Path, name: str, num_classes: int, kwargs: dict
) -> None:
    pytest.importorskip("onnxruntime")
    from distil.compress.export import export_onnx, onnx_predict, verify_onnx
    from distil.measure import measure_onnx_latency

    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, **kwargs).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", (8,), input_dtype=torch.long, dynamic_sequence=True)
    for length in (5, 13):
        ids = _ids(4, length, seed=length)
        with torch.no_grad():
            torch.testing.assert_close(
                onnx_predict(path, ids, batch_size=3), model(ids), rtol=1e-4, atol=1e-5
            )
    check = verify_onnx(path, model, _ids(4, 11))
    assert check.max_abs_diff < 1e-4 and check.top1_agreement == 1.0
    for batch in (1, 32):
        timed = measure_onnx_latency(path, (16,), batch_size=batch, min_run_time=0.05, threads=1)
        assert timed.median_ms > 0 and timed.batch_size == batch
