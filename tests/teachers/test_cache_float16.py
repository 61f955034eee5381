"""Issue 26.4: the float16 teacher cache refuses outputs it cannot hold instead of storing inf."""

from __future__ import annotations

import pytest
import torch

from distil.errors import ConfigError
from distil.teachers.store import FullLogits


def test_outputs_beyond_float16_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"teacher_cache.mode=off"):
        FullLogits().encode(torch.tensor([[1.0, 2.5e5]]))


def test_outputs_within_float16_are_stored() -> None:
    stored = FullLogits().encode(torch.tensor([[1.0, -6.0e4]]))["values.f16"]
    assert stored.dtype.name == "float16" and float(stored[0, 1]) == pytest.approx(-6.0e4, rel=1e-3)
