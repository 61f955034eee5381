"""A dense top-k teacher cache (`teacher_cache.form: topk`) serves the kd term only; other teacher terms are
refused through `distill`, before any cache is built (issue 23, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.models import create_model


@pytest.mark.parametrize("teacher_cache", ["auto", "on"])
def test_terms_other_than_kd_are_refused_with_the_fix(tmp_path: Path, teacher_cache: str) -> None:
    data = load_dataset("digits", limit=64, val_fraction=0.1, seed=0)
    torch.manual_seed(0)
    teacher, student = (
        create_model("smallnet", num_classes=10, in_channels=1, image_size=8) for _ in range(2)
    )
    cfg = StudentTrainConfig(
        epochs=1,
        batch_size=32,
        augment="none",
        teacher_cache={"mode": teacher_cache, "form": "topk", "k": 3, "dir": str(tmp_path / "cache")},
    )
    kd = KDConfig(terms={"kd": 1.0, "ce": 1.0, "rkl": 1.0, "logit_mse": 1.0})
    with pytest.raises(
        ConfigError, match=r"serves only the kd term.*terms rkl, logit_mse.*teacher_cache\.mode=off"
    ):
        distill(teacher, student, data, cfg, kd)
    assert not (tmp_path / "cache").exists()  # refused before anything was written
