"""The optional ``transformers`` dependency (the ``lm`` extra), shared by the Hugging Face tokenizer
(:mod:`distil.data.hf_tokenizer`) and models (:mod:`distil.models.hf`).

It sits below both so that data/ and models/ need not import each other for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

from distil.errors import ModelError

LM_HINT = "pip install 'distil[lm]'"


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


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards") for the block.

    distil reports its own progress; a bar per checkpoint file written or read, on stderr, is noise in a
    run's output. The setting transformers had is restored afterwards.
    """
    logging = require_transformers().utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()
