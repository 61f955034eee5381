"""The generated arithmetic dataset: deterministic, held out by operand pair, prompts masked, answers checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distil.data import load_dataset
from distil.data.arithmetic import ArithmeticData, check_answer, generate_problems
from distil.data.batch import IGNORE_INDEX
from distil.data.tokenize import ByteTokenizer
from distil.data.verifiable import verifiable_task
from distil.errors import ConfigError, DataError

SMALL = {"digits": 3, "train_size": 300, "test_size": 40}


def _pair(prompt: str) -> tuple[int, int]:
    a, b = (int(x) for x in prompt.rstrip("=").replace("+", " ").replace("-", " ").replace("*", " ").split())
    return min(a, b), max(a, b)


def test_the_same_options_give_the_same_problems_and_another_seed_others() -> None:
    one = generate_problems(3, "+-*", 200, seed=0)
    assert one == generate_problems(3, "+-*", 200, seed=0)
    assert one != generate_problems(3, "+-*", 200, seed=1)
    a = load_dataset("arithmetic", options=SMALL)
    b = load_dataset("arithmetic", options=SMALL)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).head(50), getattr(b, split).head(50))


def test_test_problems_share_no_operand_pair_with_train_or_val() -> None:
    data = ArithmeticData(**SMALL)
    problems = data.all_problems()
    positions = data.split_positions(0.1)
    pairs = {k: {_pair(problems[int(i)].prompt) for i in v} for k, v in positions.items()}
    assert len(pairs["test"]) == 40 and len(pairs["train"]) + len(pairs["val"]) == 300
    assert not pairs["test"] & (pairs["train"] | pairs["val"])
    assert not pairs["train"] & pairs["val"]


def test_prompts_carry_no_label_and_the_answer_and_eos_do() -> None:
    data = load_dataset("arithmetic", options=SMALL)
    task = verifiable_task(data)
    assert task is not None
    tok = ByteTokenizer()
    for i, problem in enumerate(task.test_problems()[:10]):
        sample = data.test[i]
        prompt = tok.encode(problem.prompt)
        answer = [*tok.encode(problem.completion), tok.eos_id]
        t = len(prompt)
        # Each sample starts at its prompt; the next tokens of prompt positions are labelled from the last one.
        assert sample["inputs"][:t].tolist() == prompt
        assert (sample["labels"][: t - 1] == IGNORE_INDEX).all()
        assert sample["labels"][t - 1 : t - 1 + len(answer)].tolist() == answer
        assert (sample["labels"][t - 1 + len(answer) :] == IGNORE_INDEX).all()  # padding counts nowhere


def test_check_accepts_the_right_answer_only() -> None:
    assert check_answer("12+345=", "357")
    assert check_answer("12+345=", " 357\nmore text")  # the answer ends at its newline
    assert check_answer("345-12=", "333") and check_answer("25*8=", "200")
    for wrong in ("358", "0357", "", "357 apples", "-357"):
        assert not check_answer("12+345=", wrong), wrong
    with pytest.raises(DataError, match="not a problem"):
        check_answer("hello", "1")


def test_subtraction_answers_are_never_negative() -> None:
    for p in generate_problems(2, "-", 100, seed=0):
        assert not p.completion.startswith("-")


def test_bad_options_stop_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="operations"):
        load_dataset("arithmetic", options={"operations": "+/"})
    with pytest.raises(ConfigError, match="digits"):
        load_dataset("arithmetic", options={"digits": 0})
    with pytest.raises(DataError, match="distinct operand pairs"):
        load_dataset("arithmetic", options={"digits": 1, "operations": "*", "train_size": 500})
    with pytest.raises(DataError, match="reads no files"):
        load_dataset("arithmetic", tmp_path)
    with pytest.raises(ConfigError, match="arithmetic reader"):
        load_dataset("digits", options={"digits": 2})


def test_limit_keeps_the_first_problems_and_the_task_the_same_test_problems() -> None:
    data = load_dataset("arithmetic", limit=50, options=SMALL)
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 10)
    full = load_dataset("arithmetic", options=SMALL)
    assert torch.equal(data.test.head(10), full.test.head(10))


def test_test_problems_are_drawn_like_the_train_problems() -> None:
    # Distinct pairs make early draws take the few small-number pairs: test must not get all of them.
    problems = ArithmeticData(digits=2, operations="+", train_size=2000, test_size=400).all_problems()

    def mean_length(ps: list) -> float:
        return sum(len(p.prompt) for p in ps) / len(ps)

    assert abs(mean_length(problems[:400]) - mean_length(problems[400:])) < 0.2


def test_reversed_answers_are_written_least_significant_digit_first_and_checked_so() -> None:
    natural = generate_problems(3, "+-*", 100, seed=0)
    reverse = generate_problems(3, "+-*", 100, seed=0, answer_order="reversed")
    # The same problems, only the answers' digits in the other order.
    assert [p.prompt for p in natural] == [p.prompt for p in reverse]
    assert all(r.completion == n.completion[:-1][::-1] + "\n" for n, r in zip(natural, reverse, strict=True))
    assert generate_problems(1, "+", 1, seed=0, answer_order="reversed")[0].completion.endswith("\n")
    assert check_answer("12+345=", "753", "reversed") and check_answer("95+5=", "001", "reversed")
    for wrong in ("357", "7530", "75", "1", "100"):
        assert not check_answer("12+345=", wrong, "reversed"), wrong
    assert not check_answer("95+5=", "100", "reversed") and not check_answer("95+5=", "1", "reversed")
    task = verifiable_task(load_dataset("arithmetic", options={**SMALL, "answer_order": "reversed"}))
    assert isinstance(task, ArithmeticData) and task.answer_order == "reversed"
    first = task.test_problems()[0]
    assert task.check(first.prompt, first.completion) and task.readable("753") == "357"
    assert ArithmeticData(**SMALL).readable("753") == "753"


def test_the_answer_order_is_recorded_and_checked() -> None:
    data = load_dataset("arithmetic", options={**SMALL, "answer_order": "reversed"})
    assert data.options["answer_order"] == "reversed" and "reversed" in data.source
    assert load_dataset("arithmetic", options=SMALL).options["answer_order"] == "natural"  # the default
    with pytest.raises(ConfigError, match="answer_order"):
        load_dataset("arithmetic", options={"answer_order": "backwards"})


def test_padded_operands_have_digits_digits_and_the_same_numbers() -> None:
    plain = generate_problems(3, "+-*", 100, seed=0)
    padded = generate_problems(3, "+-*", 100, seed=0, pad_operands=True)
    assert [p.completion for p in plain] == [p.completion for p in padded]
    for p, q in zip(plain, padded, strict=True):
        a, op, b = _split(q.prompt)
        assert len(a) == 3 and len(b) == (1 if op == "*" else 3)  # the multiplier is one digit
        assert _pair(p.prompt) == _pair(q.prompt) and check_answer(q.prompt, q.completion)
    assert check_answer("005+033=", "83", "reversed")
    data = load_dataset("arithmetic", options={**SMALL, "pad_operands": True})
    assert data.options["pad_operands"] is True and "zero-padded" in data.source


def _split(prompt: str) -> tuple[str, str, str]:
    op = next(c for c in prompt if c in "+-*")
    a, b = prompt.rstrip("=").split(op)
    return a, op, b
