"""Hugging Face `transformers` language models behind distil's model contract (``pip install 'distil[lm]'``).

A :class:`CausalLM` wraps a ``transformers`` causal LM so that the rest of distil sees what it sees for
any model: token ids (B, T) in, logits (B, T, V) out. The registered model ``hf-causal-lm`` builds one
from a config (random init, e.g. a teacher trained from scratch); its spec is plain JSON, and the
config's ``model_type`` picks one of transformers' own classes, so a sidecar never runs remote code.

Example:
    >>> from distil.models import create_model
    >>> lm = create_model("hf-causal-lm", num_classes=259, config={"model_type": "llama", "hidden_size": 64})
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from distil.errors import ModelError
from distil.models.registry import register_model

LM_HINT = "pip install 'distil[lm]'"

# Small defaults so that a config naming only model_type builds a model that trains on a CPU.
_SMALL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 1024,
}


def is_transformers_available() -> bool:
    """Whether `transformers` can be imported (the ``lm`` extra)."""
    try:
        return importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):
        return False


def require_transformers() -> Any:
    """Import and return `transformers`, or raise a ModelError that says how to install it."""
    if not is_transformers_available():
        raise ModelError(f"Hugging Face models need the transformers package: {LM_HINT}.")
    import transformers

    return transformers


class CausalLM(nn.Module):
    """A Hugging Face causal LM called as distil calls every model: ``model(input_ids) -> logits``.

    Args:
        hf_model: a ``transformers`` ``PreTrainedModel`` with a language-modelling head.

    The wrapped model stays reachable as ``.hf`` (for ``save_pretrained``, ``generate`` and its config).
    """

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    @property
    def config(self) -> Any:
        """The wrapped model's ``transformers`` config."""
        return self.hf.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T); the KV cache is off (training and scoring whole blocks)."""
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits


def hf_config(config: Mapping[str, Any], vocab_size: int) -> Any:
    """A ``transformers`` config from a plain dict that names its ``model_type``.

    Raises:
        ModelError: no model_type, an unknown one, or a vocabulary that disagrees with the data's.
    """
    transformers = require_transformers()
    options = dict(config)
    model_type = options.pop("model_type", None)
    if not model_type:
        raise ModelError(
            "an hf-causal-lm config needs a model_type, e.g. {'model_type': 'llama', 'hidden_size': 128}."
        )
    if options.get("vocab_size", vocab_size) != vocab_size:
        raise ModelError(
            f"the model config's vocab_size {options['vocab_size']} differs from the tokenizer's {vocab_size}; "
            "leave vocab_size out of the config (it comes from the data's tokenizer)."
        )
    options["vocab_size"] = vocab_size
    for key, value in _SMALL_DEFAULTS.items():
        options.setdefault(key, value)
    try:
        return transformers.AutoConfig.for_model(model_type, **options)
    except (ValueError, KeyError) as exc:
        raise ModelError(f"transformers cannot build a config of model_type {model_type!r}: {exc}") from None


@register_model("hf-causal-lm")
def hf_causal_lm(
    *, num_classes: int, in_channels: int = 1, image_size: int = 1, config: Mapping[str, Any] | None = None
) -> CausalLM:
    """A randomly initialised ``transformers`` causal LM of `config`, with `num_classes` = vocabulary size.

    Args:
        num_classes: the vocabulary size (the data's tokenizer decides it).
        in_channels: unused (token models); kept for the registry's signature.
        image_size: unused (token models); kept for the registry's signature.
        config: ``transformers`` config options including ``model_type`` (default: a 4-layer llama).
    """
    del in_channels, image_size
    transformers = require_transformers()
    cfg = hf_config(config or {"model_type": "llama"}, num_classes)
    return CausalLM(transformers.AutoModelForCausalLM.from_config(cfg))
