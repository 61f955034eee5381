"""`synthesize_for_recipe`'s guard: the data must be normalized as the teacher checkpoint records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distil.data import load_dataset
from distil.errors import DataError
from distil.synth.recipe import check_teacher_normalization


def _sidecar(tmp_path: Path, mean: list[float], std: list[float]) -> str:
    (tmp_path / "teacher.json").write_text(json.dumps({"data": {"mean": mean, "std": std}}))
    return str(tmp_path / "teacher")


def test_a_teacher_trained_on_other_statistics_is_refused_naming_the_data_settings(tmp_path: Path) -> None:
    data = load_dataset("digits", val_fraction=0.0, limit=100)
    check_teacher_normalization(_sidecar(tmp_path, list(data.mean), list(data.std)), data)  # same: fine
    with pytest.raises(DataError, match=r"data\.limit"):
        check_teacher_normalization(_sidecar(tmp_path, [data.mean[0] + 0.01], list(data.std)), data)


def test_a_plain_state_dict_has_no_sidecar_to_check(tmp_path: Path) -> None:
    data = load_dataset("digits", val_fraction=0.0, limit=100)
    check_teacher_normalization(str(tmp_path / "weights.safetensors"), data)
