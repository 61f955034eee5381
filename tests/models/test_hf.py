"""The Hugging Face causal LM wrapper: built from a config, called like any distil model, round-trips a spec."""

from __future__ import annotations

import pytest
import torch

from distil.errors import ModelError
from distil.models import build_from_spec, create_model, model_spec

pytest.importorskip("transformers")

TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


def test_builds_from_config_and_returns_logits_per_position() -> None:
    lm = create_model("hf-causal-lm", num_classes=259, config=TINY)
    ids = torch.randint(0, 259, (2, 7))
    logits = lm(ids)
    assert logits.shape == (2, 7, 259)
    assert lm.config.num_hidden_layers == 2


def test_spec_round_trip_builds_the_same_architecture() -> None:
    spec = model_spec("hf-causal-lm", num_classes=259, in_channels=1, image_size=1, config=TINY)
    a = create_model("hf-causal-lm", num_classes=259, config=TINY)
    b = build_from_spec(spec)
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 259, (1, 5))
    torch.testing.assert_close(a(ids), b(ids))


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ModelError, match="model_type"):
        create_model("hf-causal-lm", num_classes=259, config={"hidden_size": 32})
    with pytest.raises(ModelError, match="vocab_size"):
        create_model("hf-causal-lm", num_classes=259, config={**TINY, "vocab_size": 100})
    with pytest.raises(ModelError, match="no-such-type"):
        create_model("hf-causal-lm", num_classes=259, config={"model_type": "no-such-type"})
