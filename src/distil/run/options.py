"""Documented settings for the run/ entry points: each field's text is written once and is also its --help.

As in LitGPT's args, a command's options are a small frozen dataclass whose fields carry their own
documentation; the CLI reads it back with :func:`help_of`, so the Python API and ``distil ... --help``
describe a setting in the same words.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, doc: str) -> Any:
    """A dataclass field with a default and the one-line documentation the CLI shows as its help.

    Args:
        default: the field's default value (immutable: the dataclasses are frozen).
        doc: what the setting means, in the words ``--help`` shows.

    Returns:
        A ``dataclasses.field`` carrying `doc` in its metadata.
    """
    return dataclasses.field(default=default, metadata={"doc": doc})


def help_of(options: type, name: str) -> str:
    """The documentation of field `name` of the options dataclass `options` (its CLI help).

    Raises:
        KeyError: `options` has no documented field `name` (a programming error, caught by the tests).
    """
    for field in dataclasses.fields(options):
        if field.name == name and "doc" in field.metadata:
            return str(field.metadata["doc"])
    raise KeyError(f"{options.__name__} has no documented field {name!r}")
