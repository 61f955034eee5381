"""What a language model's report adds: generation latency per token (KV cache) and greedy samples.

Both decode with the model's own KV cache, one token per forward pass, the way a deployed model
generates: the prompt is scored once (prefill), then each new token is one step that attends to the
cached keys and values. Latency is the median of those steps, teacher and student timed by the same
code in the same process (so their ratio compares like with like); samples are greedy (argmax), so
they are the same on every run.

The decoding itself is :mod:`distil.measure.lm`'s; this module picks the prompts and assembles the
summary section. A model qualifies when it is a :class:`distil.models.hf.CausalLM`; others are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.measure.lm import generation_latency, greedy_ids

PROMPT_TOKENS = 32
NEW_TOKENS = 48
SAMPLES = 2


def _is_causal_lm(model: nn.Module) -> bool:
    """Whether `model` wraps a ``transformers`` causal LM (one with a KV cache to decode with)."""
    return isinstance(getattr(model, "hf", None), nn.Module)


def _continuations(model: nn.Module, prompts: Sequence[torch.Tensor], tokenizer: Tokenizer) -> list[str]:
    """Greedy continuations of token-id prompts as text, cut at the tokenizer's end of sequence."""
    texts = []
    for prompt in prompts:
        new = greedy_ids(model, prompt, NEW_TOKENS)[0].tolist()
        if tokenizer.eos_id in new:
            new = new[: new.index(tokenizer.eos_id)]
        texts.append(tokenizer.decode(new))
    return texts


def fixed_prompts(split: Any, count: int = SAMPLES, tokens: int = PROMPT_TOKENS) -> list[torch.Tensor]:
    """`count` prompts from the test split: the first `tokens` ids of evenly spaced blocks (the same on
    every run of the same data, and in-domain text the models never trained on)."""
    n = len(split)
    if n == 0:
        return []
    picks = sorted({i * n // count for i in range(count)})
    return [split[i]["inputs"][:tokens] for i in picks]


def tokenizer_of(data_extra: dict[str, str], *, trust_code: bool = False) -> Tokenizer | None:
    """The tokenizer a bundle's ``extra`` names (``tokenizer_name``), or None when it cannot be rebuilt
    (`trust_code`: the user's ``--trust-code``, for a tokenizer with its own code)."""
    name = data_extra.get("tokenizer_name")
    if not name:
        return None
    try:
        return get_tokenizer(name, trust_remote_code=trust_code)
    except Exception:  # a tokenizer that needs files no longer there: the report goes without samples
        return None


def lm_section(
    models: Sequence[tuple[str, nn.Module]],
    split: Any,
    data_extra: dict[str, str],
    *,
    latency: bool = True,
    trust_code: bool = False,
) -> dict[str, Any]:
    """The ``generation`` section of a language-model run's summary.json.

    Args:
        models: (name, model) in report order, the teacher first.
        split: the test split (prompts come from it).
        data_extra: the bundle's ``extra`` (which tokenizer decodes the samples).
        latency: also time generation per token.
        trust_code: the user's ``--trust-code`` (a tokenizer with its own code decodes the samples).

    Returns:
        ``{"prompts": [text...], "samples": {name: [text...]}, "latency": {name: {...}}, ...}``.
    """
    prompts = fixed_prompts(split)
    tokenizer = tokenizer_of(data_extra, trust_code=trust_code)
    out: dict[str, Any] = {
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "prompts": [tokenizer.decode(p.tolist()) for p in prompts] if tokenizer is not None else [],
        "samples": {},
        "latency": {},
    }
    if not prompts:
        return out
    for name, model in models:
        if not _is_causal_lm(model):
            continue
        flags = [(m, m.training) for m in model.modules()]
        try:
            if tokenizer is not None:
                out["samples"][name] = _continuations(model, prompts, tokenizer)
            if latency:
                timed = generation_latency(model, prompts[0], NEW_TOKENS).to_dict()
                out["latency"][name] = {**timed, "threads": torch.get_num_threads()}
        finally:
            for module, flag in flags:
                module.training = flag
    return out


__all__ = ["fixed_prompts", "lm_section", "tokenizer_of"]
