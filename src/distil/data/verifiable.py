"""Datasets whose answers can be checked: held-out prompts with a gold completion and a `check`.

A language model's perplexity says how well it predicts the gold answer token by token; a task with a
checkable answer also asks whether the answer it *generates* is right. A reader whose data has such
answers returns an object that is both its `LazyDataset` and a :class:`VerifiableTask`, and marks the
bundle with ``extra[VERIFIABLE] = "true"``; :func:`verifiable_task` rebuilds that object from the bundle's
name and recorded options (the data is generated or read deterministically), so the generation metric
(:mod:`distil.measure.generation`) can score exactly the held-out problems the models were tested on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from distil.data.bundle import DataBundle
from distil.data.registry import DATASETS
from distil.errors import DataError

VERIFIABLE = "verifiable"
"""The key of ``DataBundle.extra`` that marks data with checkable answers."""


@dataclass(frozen=True)
class Problem:
    """One prompt and its gold completion (the text a model should generate after the prompt)."""

    prompt: str
    completion: str


@runtime_checkable
class VerifiableTask(Protocol):
    """The held-out problems and the rule that says whether a generated answer is right."""

    def test_problems(self) -> list[Problem]:
        """The test problems, in the order of the bundle's test samples (a bundle cut by ``limit`` holds
        the first ``len(bundle.test)`` of them)."""
        ...

    def check(self, prompt: str, generated: str) -> bool:
        """Whether `generated` (the text after `prompt`, cut at the end of the answer) is a right answer."""
        ...


def verifiable_task(data: DataBundle) -> VerifiableTask | None:
    """The checkable task behind `data`, or None when its answers cannot be checked.

    Raises:
        DataError: the bundle is marked verifiable but its reader does not give a :class:`VerifiableTask`.
    """
    if data.extra.get(VERIFIABLE) != "true" or data.name not in DATASETS:
        return None
    task = DATASETS.get(data.name)(None, **data.options)
    if not isinstance(task, VerifiableTask):
        raise DataError(
            f"dataset {data.name!r} is marked {VERIFIABLE} but its reader returns {type(task).__name__}, "
            "which has no problems(split) and check(prompt, generated)."
        )
    return task


__all__ = ["VERIFIABLE", "Problem", "VerifiableTask", "verifiable_task"]
