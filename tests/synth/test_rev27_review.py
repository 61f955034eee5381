"""Review of issue 27 (rev27): defects found, as failing tests.

1. A synthetic transfer set read with `data.normalize: none` silently ignores its recorded mean/std, so
   the teacher (and student) get other tensors than the ones the synthesis made, with no error or warning.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distil.data import load_dataset
from distil.errors import DataError
from distil.synth import SyntheticSet, write_synthetic


def test_a_synthetic_set_read_with_normalize_none_is_refused_or_gives_the_synthesised_tensors(
    tmp_path: Path,
) -> None:
    data = load_dataset("digits", val_fraction=0.0, limit=60)
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(12, *data.input_shape, generator=gen)  # in the teacher's (normalized) input space
    targets = torch.arange(12) % 10
    synthetic = SyntheticSet(inputs, targets, targets, "deepinversion", 0, 0.0, {})
    path = write_synthetic(tmp_path / "synth", synthetic, data)
    try:
        bundle = load_dataset("npz", path, val_fraction=0.0, options={"normalize": "none"})
    except DataError:
        return  # a clear refusal is a fix too
    # Otherwise the loop must hand the teacher the tensors the synthesis made.
    torch.testing.assert_close(bundle.train.x, inputs, atol=1e-5, rtol=0)  # type: ignore[attr-defined]
