"""One generic name -> object registry, with "did you mean" on unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from distil.errors import ConfigError, DistilError

T = TypeVar("T")


def closest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The closest valid choice to a misspelt `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """A message for an unknown `name` that lists the valid ones and the closest match."""
    hint = closest(name, choices)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return f"unknown {kind} {name!r}.{did_you_mean} Valid {kind}s: {', '.join(sorted(choices))}."


class Registry(Generic[T]):
    """Maps names to objects (usually factories), registered with a decorator.

    Example:
        >>> MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
        >>> @MODELS.register("tiny")
        ... def tiny(num_classes: int) -> nn.Module: ...
    """

    def __init__(self, kind: str, error: type[DistilError] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register {obj!r} without a name")
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self._error(unknown_name_message(self.kind, name, list(self._items))) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
