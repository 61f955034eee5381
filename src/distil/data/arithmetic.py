"""A generated task whose answers can be checked: integer arithmetic, ``"12+345="`` -> ``"357\\n"``.

Problems are generated from a seed (``problem_seed``, not the training seed, so every run and every
``distil eval`` of a checkpoint sees the same problems): each operand has 1 to ``digits`` digits (the
count uniform, then the value), ``+`` adds two such numbers, ``-`` subtracts the smaller from the larger
(answers are never negative), ``*`` multiplies one by a single digit 0-9. The difficulty knob is
``digits``; ``operations`` chooses among ``+``, ``-``, ``*``.

Answer order: ``natural`` writes the answer as it is read (``"12+345="`` -> ``"357\\n"``); ``reversed``
writes its digits least-significant first (``"753\\n"``). Reversed answers are what small models learn:
a left-to-right decoder then emits each digit after the lower digits that decide its carry, so every
step is a local function of two operand digits and one carry, instead of needing the whole sum before
its first digit. :func:`check_answer` reads the answer in the task's order; :func:`natural_reading`
turns it back into the number (reports show both).

Operand width: ``pad_operands`` writes every operand with ``digits`` digits, zeros in front
(``"05+33="``; the ``*`` digit stays one digit). The digits of equal place then sit at the same
distance from each answer digit in every problem, which a model with relative positions (RoPE) finds
at once; free-width operands make it first learn where each number ends.

Held out by operand pair: no two problems share their unordered pair of operands, across all
operations, so ``12+345`` in test means neither ``345+12`` nor ``345-12`` is in train or val.

Samples: one problem per sample, as the text readers' prompt/completion records are
(:func:`distil.data.text.encode_documents`): the prompt's tokens carry no label, the completion's and the
end-of-sequence token after it do; each problem is padded on the right to the longest problem's length
with end-of-sequence tokens that carry no label either. Every sample therefore starts at its prompt's
first token, as a prompt given to the model for generation does, and the blocks of
:class:`distil.data.text.TokenBlockSplit` (T = that length) cut no problem in two.

Cache: the token stream (test problems first, then train and val) is written once under
``$DISTIL_CACHE_DIR/arithmetic`` (default ``~/.cache/distil/arithmetic``), in a folder named by a hash
of the options and the tokenizer, built in a temporary folder and renamed into place, like the text
readers' streams.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from distil.data.bundle import DataBundle
from distil.data.registry import ARITHMETIC_OPTIONS, DATASETS
from distil.data.text import (
    Document,
    TokenBlockSplit,
    TokenStream,
    default_text_cache_dir,
    encode_documents,
    token_bundle,
)
from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.data.verifiable import VERIFIABLE, Problem
from distil.errors import ConfigError, DataError
from distil.fileio import atomic_dir, atomic_write_json

OPERATIONS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}
DEFAULT_DIGITS = 3
DEFAULT_OPERATIONS = "+-*"
DEFAULT_TRAIN_SIZE = 20_000
DEFAULT_TEST_SIZE = 500
MAX_DIGITS = 18  # far beyond what small models learn; a typo such as 300 stops here
ANSWER_ORDERS = ("natural", "reversed")
# Natural by default: the plain reading, and the meaning of every checkpoint recorded before the option
# existed (its sidecar names no order); recipes for small models set reversed.
DEFAULT_ANSWER_ORDER = "natural"
CACHE_FORMAT = 2  # bumped whenever the same options give other problems (2: shuffled before the split)
_PROMPT = re.compile(r"^(\d+)([+\-*])(\d+)=$")


def _operand(rng: random.Random, digits: int) -> int:
    """A number of 1..`digits` digits: the count uniform, then the value uniform among that many digits."""
    n = rng.randint(1, digits)
    return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)


def written_answer(value: int, answer_order: str) -> str:
    """`value` as the task writes it: its decimal digits, least-significant first when reversed."""
    text = str(value)
    return text[::-1] if answer_order == "reversed" else text


def natural_reading(answer: str, answer_order: str) -> str:
    """An answer written in `answer_order` as the number reads (reversed back; natural unchanged)."""
    return answer[::-1] if answer_order == "reversed" else answer


def _problem(a: int, op: str, b: int, answer_order: str, width: int) -> Problem:
    # The one-digit multiplier keeps its width: it is one digit by construction.
    prompt = f"{a:0{width}d}{op}{b:0{1 if op == '*' else width}d}="
    return Problem(prompt, written_answer(OPERATIONS[op](a, b), answer_order) + "\n")


def generate_problems(
    digits: int,
    operations: str,
    count: int,
    seed: int,
    answer_order: str = DEFAULT_ANSWER_ORDER,
    pad_operands: bool = False,
) -> list[Problem]:
    """`count` problems, no two with the same unordered operand pair, the same for the same arguments.

    `answer_order` and `pad_operands` only decide how problems are written: the numbers are the same.

    Raises:
        DataError: fewer than `count` distinct operand pairs exist for these digits and operations.
    """
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    out: list[Problem] = []
    # Draws give up well after the space of distinct pairs is exhausted (a count it cannot hold).
    for _ in range(50 * count + 10_000):
        if len(out) == count:
            # Early draws take the few pairs of small numbers, later ones find them taken: shuffled, the
            # test problems (the first ones) come from the same distribution as the train problems.
            rng.shuffle(out)
            return out
        op = rng.choice(operations)
        a = _operand(rng, digits)
        b = rng.randint(0, 9) if op == "*" else _operand(rng, digits)
        if op == "-" and a < b:
            a, b = b, a
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        out.append(_problem(a, op, b, answer_order, digits if pad_operands else 1))
    if len(out) == count:
        rng.shuffle(out)
        return out
    raise DataError(
        f"arithmetic: only about {len(out)} problems with distinct operand pairs exist for digits={digits} "
        f"and operations={operations!r}, fewer than the {count} asked (train_size + test_size). Lower "
        "train_size/test_size, or raise digits."
    )


def check_answer(prompt: str, generated: str, answer_order: str = DEFAULT_ANSWER_ORDER) -> bool:
    """Whether `generated` (what follows `prompt`, up to its first newline) is the right number, written
    in `answer_order` (reversed: ``"12+345="`` is answered ``"753"``).

    Operands may have leading zeros (``"05+33="``); in the answer, surrounding spaces are forgiven, leading
    zeros (trailing ones when reversed), signs or other text are not.

    Raises:
        DataError: `prompt` is not an arithmetic problem (``"12+345="``).
    """
    match = _PROMPT.match(prompt)
    if match is None:
        raise DataError(f"arithmetic: {prompt!r} is not a problem of the form '12+345='.")
    a, op, b = int(match[1]), match[2], int(match[3])
    return generated.split("\n", 1)[0].strip() == written_answer(OPERATIONS[op](a, b), answer_order)


def _check_options(digits: int, operations: str, train_size: int, test_size: int, answer_order: str) -> None:
    if not 1 <= digits <= MAX_DIGITS:
        raise ConfigError(f"data.digits must be in [1, {MAX_DIGITS}], got {digits}.")
    unknown = sorted(set(operations) - set(OPERATIONS))
    if not operations or unknown or len(set(operations)) != len(operations):
        raise ConfigError(
            f"data.operations must be distinct characters of {''.join(OPERATIONS)!r} (e.g. '+-'), got "
            f"{operations!r}."
        )
    if train_size < 1 or test_size < 1:
        raise ConfigError(
            f"data.train_size and data.test_size must be >= 1, got {train_size} and {test_size}."
        )
    if answer_order not in ANSWER_ORDERS:
        raise ConfigError(
            f"data.answer_order must be one of {', '.join(ANSWER_ORDERS)}, got {answer_order!r}."
        )


def default_cache_dir() -> Path:
    """`$DISTIL_CACHE_DIR/arithmetic` (default ``~/.cache/distil/arithmetic``), beside the text caches."""
    return default_text_cache_dir().parent / "arithmetic"


def encode_problems(problems: Sequence[Problem], tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray, int]:
    """(tokens, loss mask, T): each problem as one prompt/completion document padded to T tokens.

    The stream is ``len(problems) * T + 1`` tokens (one more end-of-sequence, so the last block has its
    next token); padding is end-of-sequence ids with a False mask.
    """
    encoded = [encode_documents([Document(p.completion, prompt=p.prompt)], tokenizer) for p in problems]
    t = max(len(tokens) for tokens, _ in encoded)
    dtype = encoded[0][0].dtype
    tokens = np.full(len(problems) * t + 1, tokenizer.eos_id, dtype=dtype)
    mask = np.zeros(len(tokens), dtype=bool)
    for i, (ids, m) in enumerate(encoded):
        assert m is not None  # every problem has a prompt
        tokens[i * t : i * t + len(ids)] = ids
        mask[i * t : i * t + len(ids)] = m
    return tokens, mask, t


class ArithmeticData:
    """The `arithmetic` reader's data: a `LazyDataset` (the bundle) and a `VerifiableTask` (its check).

    Args:
        digits: the most digits of an operand.
        operations: the operations drawn from, e.g. ``"+-*"``.
        train_size: problems for train and val together (val is the last `val_fraction` of them).
        test_size: held-out test problems.
        problem_seed: the generator's seed.
        answer_order: ``natural`` or ``reversed`` (answers written least-significant digit first).
        pad_operands: write operands with `digits` digits, zeros in front.
        tokenizer: a registered tokenizer name (byte by default).
        trust_code: let an ``hf:DIR`` tokenizer that names its own code run it.
        cache_dir: where the token stream is cached; None: :func:`default_cache_dir`.

    Raises:
        ConfigError: an option out of range.
    """

    def __init__(
        self,
        digits: int = DEFAULT_DIGITS,
        operations: str = DEFAULT_OPERATIONS,
        train_size: int = DEFAULT_TRAIN_SIZE,
        test_size: int = DEFAULT_TEST_SIZE,
        problem_seed: int = 0,
        answer_order: str = DEFAULT_ANSWER_ORDER,
        pad_operands: bool = False,
        tokenizer: str = "byte",
        trust_code: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        _check_options(digits, operations, train_size, test_size, answer_order)
        self.digits, self.operations = digits, operations
        self.answer_order, self.pad_operands = answer_order, pad_operands
        self.train_size, self.test_size, self.problem_seed = train_size, test_size, problem_seed
        self.tokenizer, self.trust_code = tokenizer, trust_code
        self.cache_dir = cache_dir
        self._problems: list[Problem] | None = None

    @property
    def options(self) -> dict[str, object]:
        """The options that decide the samples, as a bundle records them."""
        return {
            "digits": self.digits,
            "operations": self.operations,
            "train_size": self.train_size,
            "test_size": self.test_size,
            "problem_seed": self.problem_seed,
            "answer_order": self.answer_order,
            "pad_operands": self.pad_operands,
            "tokenizer": self.tokenizer,
        }

    def all_problems(self) -> list[Problem]:
        """Every problem: the test problems first, then train and val (see :meth:`splits`)."""
        if self._problems is None:
            count = self.test_size + self.train_size
            self._problems = generate_problems(
                self.digits, self.operations, count, self.problem_seed, self.answer_order, self.pad_operands
            )
        return self._problems

    def test_problems(self) -> list[Problem]:
        """The held-out test problems, in the order of the bundle's test samples."""
        return self.all_problems()[: self.test_size]

    def check(self, prompt: str, generated: str) -> bool:
        """Whether `generated` answers `prompt` (:func:`check_answer`)."""
        return check_answer(prompt, generated, self.answer_order)

    def readable(self, answer: str) -> str:
        """`answer` as the number reads, for reports (:func:`natural_reading` in this task's order)."""
        return natural_reading(answer, self.answer_order)

    def split_positions(self, val_fraction: float, limit: int | None = None) -> dict[str, torch.Tensor]:
        """The positions of each split's problems in :meth:`all_problems` (and of its stream's blocks).

        Test is the first `test_size`; of the rest, val is the last ``round(train_size * val_fraction)``.
        `limit` keeps the first `limit` train and ``max(1, limit // 5)`` val and test problems.
        """
        n_val = round(self.train_size * val_fraction)
        if self.train_size - n_val < 1:
            raise ConfigError(
                f"arithmetic: val_fraction={val_fraction} leaves no train problem of train_size="
                f"{self.train_size}; raise train_size or lower val_fraction."
            )
        start, cut = self.test_size, self.test_size + self.train_size - n_val
        out = {
            "train": torch.arange(start, cut),
            "val": torch.arange(cut, start + self.train_size),
            "test": torch.arange(0, start),
        }
        if limit is not None:
            small = max(1, limit // 5)
            out = {k: v[: limit if k == "train" else small] for k, v in out.items()}
        return out

    def _stream(self, tok: Tokenizer) -> tuple[TokenStream, int]:
        """The cached token stream of :meth:`all_problems` and its block size T, built on first use."""
        spec = {"format": CACHE_FORMAT, **self.options, "tokenizer": tok.fingerprint, "eos": tok.eos_id}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
        root = Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()
        final = root / key
        meta_path = final / "meta.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                return TokenStream(final, int(meta["length"]), True, 0, False), int(meta["block_size"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable: rebuilt below, replacing it
        tokens, mask, t = encode_problems(self.all_problems(), tok)
        with atomic_dir(final, complete=lambda path: (path / "meta.json").is_file()) as tmp:
            stream = TokenStream(tmp, len(tokens), True, 0, True)
            np.save(stream.tokens_path, tokens)
            assert stream.mask_path is not None
            np.save(stream.mask_path, mask)
            atomic_write_json(tmp / "meta.json", {**spec, "length": len(tokens), "block_size": t})
        return TokenStream(final, len(tokens), True, 0, True), t

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle:
        """The bundle: one sample per problem (see the module's docstring).

        `seed` (the training seed) is not used: the problems are fixed by ``problem_seed``.

        Raises:
            ConfigError: val_fraction leaves no train problem, or a tokenizer without end-of-sequence.
            DataError: the options allow fewer distinct problems than asked.
        """
        del seed
        tok = get_tokenizer(self.tokenizer, trust_remote_code=self.trust_code)
        stream, t = self._stream(tok)
        positions = self.split_positions(val_fraction, limit)
        splits = {
            k: TokenBlockSplit(stream.tokens_path, stream.mask_path, t, v, tok.vocab_size)
            for k, v in positions.items()
        }
        source = (
            f"generated: digits={self.digits}, operations={self.operations}, seed={self.problem_seed}, "
            f"answers {self.answer_order}{', operands zero-padded' if self.pad_operands else ''}"
        )
        extra = {
            "tokenizer": tok.fingerprint,
            "tokenizer_name": self.tokenizer,
            "vocab_size": str(tok.vocab_size),
            "block_size": str(t),
            VERIFIABLE: "true",
        }
        return token_bundle(name, splits, source, extra, self.options, eos_id=tok.eos_id)


@DATASETS.register("arithmetic")
def arithmetic_reader(
    root: Path | None,
    digits: int | None = None,
    operations: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    problem_seed: int | None = None,
    answer_order: str | None = None,
    pad_operands: bool | None = None,
    tokenizer: str | None = None,
    trust_code: bool = False,
) -> ArithmeticData:
    """Generated arithmetic problems, prompt ``"12+345="`` and completion ``"357\\n"`` (``"753\\n"`` with
    ``answer_order="reversed"``, ``"02+345="`` with ``pad_operands``; no files; `root` is not used): 3 digits, ``+-*``, natural answers, 20000
    train+val and 500 test problems by default, byte tokenizer."""
    if root is not None:
        raise DataError(
            f"dataset 'arithmetic' is generated and reads no files, but data.root={str(root)!r} was given. "
            "Remove data.root."
        )
    return ArithmeticData(
        digits=DEFAULT_DIGITS if digits is None else digits,
        operations=DEFAULT_OPERATIONS if operations is None else operations,
        train_size=DEFAULT_TRAIN_SIZE if train_size is None else train_size,
        test_size=DEFAULT_TEST_SIZE if test_size is None else test_size,
        problem_seed=0 if problem_seed is None else problem_seed,
        answer_order=DEFAULT_ANSWER_ORDER if answer_order is None else answer_order,
        pad_operands=bool(pad_operands),
        tokenizer=tokenizer or "byte",
        trust_code=trust_code,
    )


__all__ = [
    "ANSWER_ORDERS",
    "ARITHMETIC_OPTIONS",
    "ArithmeticData",
    "check_answer",
    "encode_problems",
    "generate_problems",
    "natural_reading",
    "written_answer",
]
