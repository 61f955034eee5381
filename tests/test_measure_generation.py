"""The generation metric of checkable answers: exact match, answer agreement, bits per byte, batching."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from distil.data.arithmetic import check_answer, generate_problems
from distil.data.tokenize import ByteTokenizer
from distil.data.verifiable import Problem
from distil.errors import DataError
from distil.measure.generation import bits_per_byte, check_generation, completion_nll, greedy_answers

TOK = ByteTokenizer()
V = TOK.vocab_size


def _right(prompt: str) -> str:
    """The sum a prompt "a+b=" asks for."""
    a, _, b = prompt[:-1].partition("+")
    return str(int(a) + int(b))


class Oracle(nn.Module):
    """A causal LM with a KV cache (the ids so far) that answers `prompt=` with `answer(prompt)` + newline,
    then EOS, putting probability `p` on its next token and the rest evenly on the others."""

    def __init__(self, answer: Callable[[str], str], p: float = 0.9) -> None:
        super().__init__()
        self.answer, self.p = answer, p
        self.config = SimpleNamespace()
        self.weight = nn.Parameter(torch.zeros(1))  # a device to put inputs on

    def _next(self, ids: list[int]) -> int:
        data = bytes(i for i in ids if i < 256)  # byte-level, as the byte tokenizer's model is
        if b"=" not in data:
            return TOK.eos_id
        prompt, said = data.split(b"=", 1)
        target = (self.answer(prompt.decode() + "=") + "\n").encode()
        return target[len(said)] if len(said) < len(target) else TOK.eos_id

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False, past_key_values: Any = None) -> Any:
        full = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        start = full.shape[1] - input_ids.shape[1]
        logits = torch.full((*input_ids.shape, V), math.log((1 - self.p) / (V - 1)))
        for b in range(input_ids.shape[0]):
            for t in range(input_ids.shape[1]):
                logits[b, t, self._next(full[b, : start + t + 1].tolist())] = math.log(self.p)
        return SimpleNamespace(logits=logits, past_key_values=full)


PROBLEMS = generate_problems(3, "+", 12, seed=0)  # prompts of several lengths


def test_a_model_that_answers_right_scores_1_and_a_wrong_one_0() -> None:
    right = check_generation(Oracle(_right), TOK, PROBLEMS, check_answer, batch_size=5)
    assert right.exact_match == 1.0
    assert right.answers == [p.completion.strip() for p in PROBLEMS]
    wrong = check_generation(
        Oracle(lambda q: str(int(_right(q)) + 1)), TOK, PROBLEMS, check_answer, reference=right.answers
    )
    assert wrong.exact_match == 0.0 and wrong.answer_agreement == 0.0


def test_a_model_agrees_with_itself() -> None:
    once = check_generation(Oracle(_right), TOK, PROBLEMS, check_answer)
    assert once.answer_agreement is None  # no reference
    again = check_generation(Oracle(_right), TOK, PROBLEMS, check_answer, reference=once.answers)
    assert again.answer_agreement == 1.0


def test_bits_per_byte_is_the_completions_nll_over_their_bytes() -> None:
    problems = [Problem("12+345=", "357\n"), Problem("1+1=", "2\n")]
    nll, num_bytes = completion_nll(Oracle(_right, p=0.5), TOK, problems)
    # Every completion byte is one token the oracle gives probability 1/2: 6 tokens, 6 bytes.
    assert num_bytes == 6 and nll == pytest.approx(6 * math.log(2))
    assert bits_per_byte(nll, num_bytes) == pytest.approx(1.0)
    result = check_generation(Oracle(_right, p=0.25), TOK, problems, check_answer)
    assert result.bits_per_byte == pytest.approx(2.0)
    # A multi-byte character: its bytes, not its characters, divide.
    nll, num_bytes = completion_nll(Oracle(lambda q: "é"), TOK, [Problem("1+1=", "é\n")])
    assert num_bytes == 3 and nll == pytest.approx(3 * -math.log(0.9), rel=1e-5)  # float32 logits
    with pytest.raises(DataError, match="no bytes"):
        bits_per_byte(1.0, 0)


def test_batched_decoding_equals_one_prompt_at_a_time_on_a_real_lm() -> None:
    pytest.importorskip("transformers")
    from distil.models import create_model

    torch.manual_seed(0)
    config = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    lm = create_model("hf-causal-lm", num_classes=V, config=config).train()
    prompts = [p.prompt for p in PROBLEMS[:6]]
    batched = greedy_answers(lm, TOK, prompts, 4, batch_size=2)
    assert batched == [greedy_answers(lm, TOK, [p], 4)[0] for p in prompts]
    lm.train()
    check_generation(lm, TOK, PROBLEMS[:2], check_answer)
    assert lm.training  # flags restored


def test_bad_input_stops() -> None:
    with pytest.raises(DataError, match="no problems"):
        check_generation(Oracle(_right), TOK, [], check_answer)
    with pytest.raises(DataError, match="reference"):
        check_generation(Oracle(_right), TOK, PROBLEMS, check_answer, reference=["1"])
