"""Generation latency with the KV cache and greedy samples, on tiny causal LMs."""

from __future__ import annotations

import math

import pytest
import torch

from distil.data.tokenize import ByteTokenizer
from distil.errors import ModelError
from distil.measure.lm import generation_latency, greedy_ids, greedy_samples
from distil.models import create_model

pytest.importorskip("transformers")

TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


def _lm(config: dict = TINY) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("hf-causal-lm", num_classes=259, config=config).eval()


@pytest.mark.parametrize("config", [TINY, {"model_type": "gpt2", "hidden_size": 32, "num_hidden_layers": 2}])
def test_cached_greedy_decoding_equals_recomputing_every_position(config: dict) -> None:
    lm = _lm(config)
    prompt = torch.randint(0, 259, (2, 5))
    fast = greedy_ids(lm, prompt, 8)
    ids = prompt
    with torch.no_grad():
        for _ in range(8):
            ids = torch.cat([ids, lm(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(fast, ids[:, 5:])


def test_latency_is_a_median_per_new_token() -> None:
    lm = _lm()
    lat = generation_latency(lm, list(range(10)), new_tokens=6, warmup=1, repeats=2)
    assert lat.new_tokens == 6 and lat.prompt_tokens == 10 and lat.batch == 1 and lat.device == "cpu"
    assert 0 < lat.ms_per_token < 1e4 and math.isfinite(lat.prefill_ms)
    assert set(lat.to_dict()) >= {"ms_per_token", "prefill_ms"}
    with pytest.raises(ModelError, match="new_tokens >= 2"):
        generation_latency(lm, [1, 2], new_tokens=1)
    with pytest.raises(ModelError, match="T >= 1"):
        generation_latency(lm, [], new_tokens=4)
    with pytest.raises(ModelError, match="not a Hugging Face causal LM"):
        generation_latency(torch.nn.Linear(2, 2), [1], new_tokens=2)


def test_greedy_samples_are_text_of_n_tokens() -> None:
    lm, tok = _lm(), ByteTokenizer()
    samples = greedy_samples(lm, tok, ["hello", ""], n=5)
    assert len(samples) == 2 and all(isinstance(s, str) for s in samples)
    new = greedy_ids(lm, tok.encode("hello"), 5)[0].tolist()
    cut = new[: new.index(tok.eos_id)] if tok.eos_id in new else new
    assert samples[0] == tok.decode(cut)
