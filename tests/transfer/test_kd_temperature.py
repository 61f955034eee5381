"""The temperature of a transferred student: resolved once when the recipe is read, recorded as trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import TRANSFERRED_KD_TEMPERATURE, KDConfig, TransferConfig, parse_recipe, recipe_to_yaml
from distil.losses import ComposedLoss

KD = {"temperature": 4.0, "temperature_final": 2.0}


def test_init_teacher_resolves_the_temperature_when_the_recipe_is_read() -> None:
    recipe = parse_recipe({"transfer": {"init": "teacher"}, "kd": KD})
    assert recipe.transfer.kd_temperature == TRANSFERRED_KD_TEMPERATURE
    assert (recipe.student_kd.temperature, recipe.student_kd.temperature_final) == (1.0, None)
    assert recipe.kd.temperature == 4.0  # the recipe's own KD settings stay as written
    # The saved recipe reads back to the same resolved settings.
    assert parse_recipe(yaml.safe_load(recipe_to_yaml(recipe))) == recipe


@pytest.mark.parametrize(
    ("transfer", "expected"),
    [
        ({}, (4.0, 2.0)),  # a random student keeps kd and its schedule
        ({"init": "teacher", "kd_temperature": 3.0}, (3.0, None)),
        ({"kd_temperature": 2.5}, (2.5, None)),
    ],
)
def test_student_kd_applies_the_one_resolved_override(transfer: dict, expected: tuple) -> None:
    kd = parse_recipe({"transfer": transfer, "kd": KD}).student_kd
    assert (kd.temperature, kd.temperature_final) == expected


def test_setting_init_teacher_later_resolves_it_too() -> None:
    cfg = TransferConfig()
    cfg.init = "teacher"  # validated assignment (the recipe models validate assignments)
    assert cfg.kd_temperature == TRANSFERRED_KD_TEMPERATURE
    assert cfg.kd_for(KDConfig(temperature=4.0)).temperature == TRANSFERRED_KD_TEMPERATURE


def test_recipe_and_sidecar_record_the_temperature_the_student_trained_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the override was computed twice (run/stages.py for training, runner._meta for the
    # sidecar) and recipe.yaml said kd_temperature: null while the student distilled at T = 1.
    from distil.run import stages

    trained_at: list[tuple[float, ...]] = []
    real = stages.distill_loss

    def spy(kd: KDConfig, **kwargs: Any) -> ComposedLoss:
        loss = real(kd, **kwargs)
        trained_at.append(loss.temperatures())
        return loss

    monkeypatch.setattr(stages, "distill_loss", spy)
    sets = ["data.limit=200", "teacher_train.epochs=1", "student_train.epochs=1", "transfer.init=teacher"]
    sets += [
        "kd.temperature=4",
        "kd.temperature_final=2",
        "student.model=largenet",
        "student.kwargs={width: 0.5}",
    ]
    args = ["run", "digits", "--out", str(tmp_path), "--name", "r", "--quiet", "--no-latency"]
    result = CliRunner().invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    run = tmp_path / "r"
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    meta = json.loads((run / "student_kd.json").read_text())["kd"]
    assert trained_at == [(TRANSFERRED_KD_TEMPERATURE,)]
    assert saved["transfer"]["kd_temperature"] == meta["temperature"] == TRANSFERRED_KD_TEMPERATURE
    assert meta["temperature_final"] is None and saved["kd"]["temperature"] == 4.0
