"""The generation metric of tasks with checkable answers: exact match, answer agreement, bits per byte.

A language model is scored on held-out problems (:class:`distil.data.verifiable.Problem`) three ways:

* **exact match**: the share of prompts whose greedy answer the task's ``check(prompt, answer)`` accepts.
  Answers are decoded greedily with the KV cache (:func:`distil.measure.lm.greedy_ids`, the one decoder),
  prompts of the same token length together in batches, up to the end-of-sequence id, a newline, or two
  tokens more than the longest gold completion; the answer is the text up to its first newline;
* **answer agreement**: the share of prompts whose greedy answer equals the reference's (the teacher's)
  answer, right or wrong: how closely a student imitates what its teacher *generates*;
* **bits per byte**: the gold completions' negative log-likelihood given their prompts (teacher forcing,
  summed over the completion's tokens in nats, its end-of-sequence token not counted) divided by the
  completions' UTF-8 bytes and by ln 2. Unlike per-token perplexity it does not depend on the tokenizer;
  the per-byte perplexity is ``2 ** bits_per_byte``.

Batches are scored and dropped one at a time: no logits of the whole set are held.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distil.data.batch import IGNORE_INDEX
from distil.data.verifiable import Problem
from distil.errors import DataError
from distil.measure._util import _eval_mode, _model_device
from distil.measure.lm import _hf, greedy_ids

GENERATION_BATCH = 64
EXTRA_NEW_TOKENS = 2  # beyond the longest gold completion: a longer wrong answer still shows as longer


@dataclass(frozen=True)
class CheckedGeneration:
    """One model's generation metrics on a set of problems.

    Attributes:
        answers: the greedy answer to each problem (text up to its first newline).
        exact_match: share of answers the task's check accepts, in [0, 1].
        answer_agreement: share of answers equal to the reference's; None without a reference.
        bits_per_byte: the gold completions' NLL in bits per UTF-8 byte (teacher forcing).
    """

    answers: list[str]
    exact_match: float
    answer_agreement: float | None
    bits_per_byte: float

    def metrics(self) -> dict[str, float | None]:
        """The scalar metrics by name (the keys of a report row's ``extra``)."""
        return {
            "exact_match": self.exact_match,
            "answer_agreement": self.answer_agreement,
            "bits_per_byte": self.bits_per_byte,
        }


def same_length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Positions of `lengths` in batches of at most `batch_size` whose lengths are all equal (sorted by
    length, then position), so each batch stacks into one (B, T) tensor with no padding."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    for n in sorted(by_length):
        group = by_length[n]
        for b in range(0, len(group), batch_size):
            yield group[b : b + batch_size]


def stop_ids(tokenizer: Any) -> list[int]:
    """The ids that end an answer: end-of-sequence, and a newline where it is a single token."""
    newline = tokenizer.encode("\n")
    return [int(tokenizer.eos_id)] + ([int(newline[0])] if len(newline) == 1 else [])


def cut_answer(tokenizer: Any, ids: Sequence[int]) -> str:
    """The answer in generated `ids`: decoded up to the end-of-sequence id, then up to the first newline."""
    ids = list(ids)
    if tokenizer.eos_id in ids:
        ids = ids[: ids.index(tokenizer.eos_id)]
    return str(tokenizer.decode(ids)).split("\n", 1)[0]


def greedy_answers(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    batch_size: int = GENERATION_BATCH,
) -> list[str]:
    """The greedy answer to each prompt (:func:`cut_answer`), prompts of equal token length decoded together.

    Raises:
        DataError: an empty prompt (there is nothing to answer).
    """
    encoded = [tokenizer.encode(p) for p in prompts]
    if any(not ids for ids in encoded):
        raise DataError("generation metric: a prompt encodes to no tokens; every problem needs a prompt.")
    answers = [""] * len(prompts)
    stops = stop_ids(tokenizer)
    for batch in same_length_batches([len(ids) for ids in encoded], batch_size):
        ids = torch.tensor([encoded[i] for i in batch], dtype=torch.long)
        new = greedy_ids(model, ids, max_new_tokens, stop_ids=stops)
        for i, row in zip(batch, new.tolist(), strict=True):
            answers[i] = cut_answer(tokenizer, row)
    return answers


def completion_nll(
    model: nn.Module, tokenizer: Any, problems: Sequence[Problem], *, batch_size: int = GENERATION_BATCH
) -> tuple[float, int]:
    """(summed NLL in nats of every gold completion given its prompt, their UTF-8 bytes).

    Prompt and completion are encoded apart, as the training data encodes them
    (:func:`distil.data.text.encode_documents`); sequences of equal token length are scored together.
    """
    hf, device = _hf(model), _model_device(model)
    pieces = [(tokenizer.encode(p.prompt), tokenizer.encode(p.completion)) for p in problems]
    total = torch.zeros((), dtype=torch.float64, device=device)
    with _eval_mode(model), torch.inference_mode():
        for batch in same_length_batches([len(a) + len(b) for a, b in pieces], batch_size):
            ids = torch.tensor([pieces[i][0] + pieces[i][1] for i in batch], dtype=torch.long, device=device)
            labels = torch.full_like(ids, IGNORE_INDEX)
            for row, i in enumerate(batch):
                start = len(pieces[i][0])
                labels[row, start - 1 : -1] = ids[row, start:]  # position t predicts token t + 1
            out = hf(input_ids=ids)
            logits = getattr(out, "logits", out)  # a recurrent LM returns the logits themselves
            nll = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            total += nll.double()
    return float(total), sum(len(p.completion.encode("utf-8")) for p in problems)


def bits_per_byte(nll_nats: float, num_bytes: int) -> float:
    """Summed NLL in nats as bits per byte: ``nll / num_bytes / ln 2``.

    Raises:
        DataError: no bytes to divide by.
    """
    if num_bytes <= 0:
        raise DataError("bits per byte: the completions hold no bytes; give problems with answers.")
    return nll_nats / num_bytes / math.log(2)


def check_generation(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    check: Callable[[str, str], bool],
    *,
    reference: Sequence[str] | None = None,
    batch_size: int = GENERATION_BATCH,
) -> CheckedGeneration:
    """The generation metrics of `model` on `problems`; its training flags are restored afterwards.

    Args:
        model: a causal LM (:class:`~distil.models.hf.CausalLM` or a ``transformers`` one).
        tokenizer: the data's tokenizer (``encode``/``decode``/``eos_id``).
        problems: the held-out problems.
        check: the task's ``check(prompt, answer) -> bool``.
        reference: the reference model's answers to the same problems (for agreement); None: no agreement.
        batch_size: prompts decoded (and sequences scored) together.

    Returns:
        CheckedGeneration.

    Raises:
        DataError: no problems, an empty prompt, or a reference of another length.
    """
    if not problems:
        raise DataError("generation metric: no problems to answer; the test split is empty.")
    if reference is not None and len(reference) != len(problems):
        raise DataError(
            f"generation metric: {len(reference)} reference answers for {len(problems)} problems; the "
            "reference must answer the same problems."
        )
    max_new = max(len(tokenizer.encode(p.completion)) for p in problems) + EXTRA_NEW_TOKENS
    with _eval_mode(model):
        answers = greedy_answers(
            model, tokenizer, [p.prompt for p in problems], max_new, batch_size=batch_size
        )
    nll, num_bytes = completion_nll(model, tokenizer, problems, batch_size=batch_size)
    n = len(problems)
    right = sum(check(p.prompt, a) for p, a in zip(problems, answers, strict=True))
    agree = None if reference is None else sum(a == r for a, r in zip(answers, reference, strict=True)) / n
    return CheckedGeneration(answers, right / n, agree, bits_per_byte(nll, num_bytes))


__all__ = [
    "CheckedGeneration",
    "bits_per_byte",
    "check_generation",
    "completion_nll",
    "cut_answer",
    "greedy_answers",
    "same_length_batches",
    "stop_ids",
]
