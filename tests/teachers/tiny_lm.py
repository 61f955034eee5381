"""The tiny llama and text the language-model tests share (test_crosstok, test_xtokcache, test_eval_bits_per_byte)."""

from __future__ import annotations

import torch

from distil.models import create_model

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat.\n"


def tiny_llama(vocab: int, seed: int) -> torch.nn.Module:
    """A 1-layer, 16-wide llama over `vocab` ids, initialised from `seed`."""
    torch.manual_seed(seed)
    config = {
        "model_type": "llama",
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    return create_model("hf-causal-lm", num_classes=vocab, config=config)
