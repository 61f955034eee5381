"""What a language model's report adds: generation latency per token (KV cache) and greedy samples; on
data with checkable answers, exact match of greedy answers (:mod:`distil.measure.generation`).

Both decode with the model's own KV cache, one token per forward pass, the way a deployed model
generates: the prompt is scored once (prefill), then each new token is one step that attends to the
cached keys and values. Latency is the median of those steps, teacher and student timed by the same
code in the same process (so their ratio compares like with like); samples are greedy (argmax), so
they are the same on every run.

The decoding itself is :mod:`distil.measure.lm`'s; this module picks the prompts and assembles the
summary section. A model qualifies when it is a :class:`distil.models.hf.CausalLM`; others are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.data.verifiable import Problem, VerifiableTask
from distil.measure.bytes import known_token_bytes
from distil.measure.generation import check_generation
from distil.measure.lm import generation_latency, greedy_ids
from distil.measure.tasks import LM_TASK

PROMPT_TOKENS = 32
NEW_TOKENS = 48
SAMPLES = 2
SAMPLE_PROBLEMS = 6


def _is_causal_lm(model: nn.Module) -> bool:
    """Whether `model` wraps a ``transformers`` causal LM (one with a KV cache to decode with), or is a
    recurrent LM (its state is its cache: the one decoder runs it too)."""
    from distil.models.recurrent import RecurrentLM

    return isinstance(getattr(model, "hf", None), nn.Module) or isinstance(model, RecurrentLM)


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


def lm_token_bytes(task: str, tokenizer: Tokenizer | None) -> torch.Tensor | None:
    """The bytes each token id spells, for a language model's bits per byte (`distil.measure.measure`'s
    `token_bytes`): None for another task, or a tokenizer that is unknown or not byte-level (the report
    then shows per-token perplexity only, and bits per byte as "—")."""
    if task != LM_TASK:
        return None
    return known_token_bytes(tokenizer)[0]


def shown_answer(answer: str, readable: Callable[[str], str] | None) -> str:
    """`answer` for a report: as written, then as it reads where the task writes it otherwise (an
    arithmetic answer written least-significant digit first: ``"753 (reads 357)"``)."""
    reading = readable(answer) if readable is not None and answer else answer
    return answer if reading == answer else f"{answer} (reads {reading})"


def sample_problems(
    problems: Sequence[Problem],
    answers: dict[str, list[str]],
    check: Any,
    count: int = SAMPLE_PROBLEMS,
    *,
    readable: Callable[[str], str] | None = None,
) -> list[dict[str, Any]]:
    """`count` evenly spaced problems with every model's answer and whether the check accepts it.

    `readable` (a task's optional ``readable(answer)``) gives the reading shown beside each answer.
    """
    picks = sorted({i * len(problems) // count for i in range(count)}) if problems else []
    return [
        {
            "prompt": problems[i].prompt,
            "gold": shown_answer(problems[i].completion.split("\n", 1)[0], readable),
            "answers": {name: shown_answer(texts[i], readable) for name, texts in answers.items()},
            "correct": {name: bool(check(problems[i].prompt, texts[i])) for name, texts in answers.items()},
        }
        for i in picks
    ]


def lm_section(
    models: Sequence[tuple[str, nn.Module]],
    split: Any,
    data_extra: dict[str, str],
    *,
    latency: bool = True,
    trust_code: bool = False,
    task: VerifiableTask | None = None,
    first_is_reference: bool = True,
) -> dict[str, Any]:
    """The ``generation`` section of a language-model run's summary.json.

    Args:
        models: (name, model) in report order, the teacher first.
        split: the test split (prompts come from it).
        data_extra: the bundle's ``extra`` (which tokenizer decodes the samples).
        latency: also time generation per token.
        trust_code: the user's ``--trust-code`` (a tokenizer with its own code decodes the samples).
        task: data with checkable answers (:func:`distil.data.verifiable.verifiable_task`): every model
            answers the first ``len(split)`` test problems (:mod:`distil.measure.generation`), and sample
            problems replace the free-text samples.
        first_is_reference: the first model is the teacher, whose answers the others' answer agreement
            is measured against; False (the teacher is not among `models`): no answer agreement.

    Returns:
        ``{"prompts": [text...], "samples": {name: [text...]}, "latency": {name: {...}}, ...}``, with a
        task also ``"checked": {name: {"exact_match", "answer_agreement", "bits_per_byte"}}`` and
        ``"problems": [{"prompt", "gold", "answers": {name: text}, "correct": {name: bool}}...]``.
    """
    prompts = fixed_prompts(split)
    tokenizer = tokenizer_of(data_extra, trust_code=trust_code)
    checked = task is not None and tokenizer is not None
    out: dict[str, Any] = {
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "prompts": [tokenizer.decode(p.tolist()) for p in prompts] if tokenizer and not checked else [],
        "samples": {},
        "latency": {},
    }
    if not prompts:
        return out
    problems = task.test_problems()[: len(split)] if task is not None else []
    answers: dict[str, list[str]] = {}
    if checked:
        out["checked"] = {}
    for name, model in models:
        if not _is_causal_lm(model):
            continue
        flags = [(m, m.training) for m in model.modules()]
        try:
            if checked:
                assert task is not None and tokenizer is not None
                # The first model's: the teacher's (none when the teacher does not answer here).
                reference = next(iter(answers.values()), None) if first_is_reference else None
                result = check_generation(model, tokenizer, problems, task.check, reference=reference)
                answers[name] = result.answers
                out["checked"][name] = result.metrics()
            elif tokenizer is not None:
                out["samples"][name] = _continuations(model, prompts, tokenizer)
            if latency:
                timed = generation_latency(model, prompts[0], NEW_TOKENS).to_dict()
                out["latency"][name] = {**timed, "threads": torch.get_num_threads()}
        finally:
            for module, flag in flags:
                module.training = flag
    if checked:
        assert task is not None
        # Optional beyond the VerifiableTask protocol: tasks that write answers unlike their reading.
        readable = getattr(task, "readable", None)
        out["problems"] = sample_problems(problems, answers, task.check, readable=readable)
    return out


__all__ = ["fixed_prompts", "lm_section", "lm_token_bytes", "sample_problems", "tokenizer_of"]
