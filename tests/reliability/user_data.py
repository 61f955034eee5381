"""A user dataset callable (`tests.reliability.user_data:load`) whose return value a test sets."""

from __future__ import annotations

from typing import Any

PAYLOAD: Any = None


def load() -> Any:
    """Return whatever the test put in PAYLOAD, as a user's `pkg.module:function` reader would."""
    return PAYLOAD
