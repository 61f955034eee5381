"""What a language model's report adds: generation latency per token (KV cache) and greedy samples.

Both decode with the model's own KV cache, one token per forward pass, the way a deployed model
generates: the prompt is scored once (prefill), then each new token is one step that attends to the
cached keys and values. Latency is the median of those steps, teacher and student timed by the same
code in the same process (so their ratio compares like with like); samples are greedy (argmax), so
they are the same on every run.

A model qualifies when it is a :class:`distil.models.hf.CausalLM` (its ``.hf`` is a ``transformers``
causal LM that returns ``past_key_values``); for any other model both functions return ``None``.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distil.data.tokenize import Tokenizer, get_tokenizer

PROMPT_TOKENS = 32
NEW_TOKENS = 48
SAMPLES = 2


@dataclass(frozen=True)
class GenerationLatency:
    """Decode latency of one model.

    Attributes:
        ms_per_token: median milliseconds of one decode step (one new token, KV cache on), batch 1.
        prefill_ms: median milliseconds to score the prompt (filling the cache).
        prompt_tokens: tokens in the prompt.
        new_tokens: decode steps timed per round.
        threads: torch's CPU threads during the measurement.
    """

    ms_per_token: float
    prefill_ms: float
    prompt_tokens: int
    new_tokens: int
    threads: int


def _hf(model: nn.Module) -> Any | None:
    """The ``transformers`` model inside a CausalLM, or None for a model that has no KV cache to use."""
    hf = getattr(model, "hf", None)
    return hf if isinstance(hf, nn.Module) else None


def _cache_of(out: Any) -> Any:
    # transformers 5 returns the KV cache as `cache` (older releases: `past_key_values`).
    return out["cache"] if "cache" in out else out["past_key_values"]


def _step(hf: Any, ids: torch.Tensor, cache: Any) -> Any:
    """One forward pass continuing `cache` (the keyword transformers 5 or 4 takes)."""
    if "cache" in inspect.signature(hf.forward).parameters:
        return hf(input_ids=ids, cache=cache, use_cache=True)
    return hf(input_ids=ids, past_key_values=cache, use_cache=True)


def _decode(
    hf: Any, prompt: torch.Tensor, new_tokens: int, eos_id: int | None, clock: list[float] | None
) -> list[int]:
    """Greedy decoding with the KV cache; appends each step's seconds to `clock` (prefill first)."""
    tokens: list[int] = []
    start = time.perf_counter()
    out = hf(input_ids=prompt, use_cache=True)
    past = _cache_of(out)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    if clock is not None:
        clock.append(time.perf_counter() - start)
    for _ in range(new_tokens):
        token = int(nxt[0, 0])
        tokens.append(token)
        if eos_id is not None and token == eos_id:
            break
        start = time.perf_counter()
        out = _step(hf, nxt, past)
        past = _cache_of(out)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        if clock is not None:
            clock.append(time.perf_counter() - start)
    return tokens


def generation_latency(
    model: nn.Module, prompt: torch.Tensor, *, new_tokens: int = NEW_TOKENS, rounds: int = 3
) -> GenerationLatency | None:
    """Median decode latency per token of `model` (batch 1, KV cache), after one warm-up round.

    Args:
        model: a CausalLM (else None is returned).
        prompt: (T,) or (1, T) token ids.
        new_tokens: decode steps per round (EOS does not stop a timed round).
        rounds: timed rounds; the median is over every step of every round.

    Returns:
        The latency, or None for a model without a KV cache (not a ``transformers`` causal LM).
    """
    hf = _hf(model)
    if hf is None:
        return None
    ids = prompt.reshape(1, -1).to(next(hf.parameters()).device)
    flags = [(m, m.training) for m in hf.modules()]
    hf.eval()
    prefill: list[float] = []
    steps: list[float] = []
    try:
        with torch.inference_mode():
            _decode(hf, ids, min(new_tokens, 4), None, None)  # warm-up: first calls allocate
            for _ in range(rounds):
                clock: list[float] = []
                _decode(hf, ids, new_tokens, None, clock)
                prefill.append(clock[0])
                steps += clock[1:]
    finally:
        for module, flag in flags:
            module.training = flag
    return GenerationLatency(
        ms_per_token=statistics.median(steps) * 1e3 if steps else float("nan"),
        prefill_ms=statistics.median(prefill) * 1e3,
        prompt_tokens=int(ids.shape[1]),
        new_tokens=new_tokens,
        threads=torch.get_num_threads(),
    )


def greedy_samples(
    model: nn.Module,
    prompts: Sequence[torch.Tensor],
    tokenizer: Tokenizer,
    *,
    new_tokens: int = NEW_TOKENS,
) -> list[str] | None:
    """The greedy continuation of each prompt, decoded to text (stopping at EOS).

    Returns:
        One string per prompt, or None for a model without a KV cache.
    """
    hf = _hf(model)
    if hf is None:
        return None
    device = next(hf.parameters()).device
    flags = [(m, m.training) for m in hf.modules()]
    hf.eval()
    try:
        with torch.inference_mode():
            return [
                tokenizer.decode(_decode(hf, p.reshape(1, -1).to(device), new_tokens, tokenizer.eos_id, None))
                for p in prompts
            ]
    finally:
        for module, flag in flags:
            module.training = flag


def fixed_prompts(split: Any, count: int = SAMPLES, tokens: int = PROMPT_TOKENS) -> list[torch.Tensor]:
    """`count` prompts from the test split: the first `tokens` ids of evenly spaced blocks (the same on
    every run of the same data, and in-domain text the models never trained on)."""
    n = len(split)
    if n == 0:
        return []
    picks = sorted({i * n // count for i in range(count)})
    return [split[i]["inputs"][:tokens] for i in picks]


def tokenizer_of(data_extra: dict[str, str]) -> Tokenizer | None:
    """The tokenizer a bundle's ``extra`` names (``tokenizer_name``), or None when it cannot be rebuilt."""
    name = data_extra.get("tokenizer_name")
    if not name:
        return None
    try:
        return get_tokenizer(name)
    except Exception:  # a tokenizer that needs files no longer there: the report goes without samples
        return None


def lm_section(
    models: Sequence[tuple[str, nn.Module]],
    split: Any,
    data_extra: dict[str, str],
    *,
    latency: bool = True,
) -> dict[str, Any]:
    """The ``generation`` section of a language-model run's summary.json.

    Args:
        models: (name, model) in report order, the teacher first.
        split: the test split (prompts come from it).
        data_extra: the bundle's ``extra`` (which tokenizer decodes the samples).
        latency: also time generation per token.

    Returns:
        ``{"prompts": [text...], "samples": {name: [text...]}, "latency": {name: {...}}, ...}``.
    """
    prompts = fixed_prompts(split)
    tokenizer = tokenizer_of(data_extra)
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
        if tokenizer is not None:
            samples = greedy_samples(model, prompts, tokenizer)
            if samples is not None:
                out["samples"][name] = samples
        if latency:
            result = generation_latency(model, prompts[0])
            if result is not None:
                out["latency"][name] = result.__dict__
    return out


__all__ = [
    "GenerationLatency",
    "fixed_prompts",
    "generation_latency",
    "greedy_samples",
    "lm_section",
    "tokenizer_of",
]
