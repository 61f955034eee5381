"""The teacher-cache settings as one group of the student's recipe; the old flat keys as aliases."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from distil.config import (
    MOVED_KEYS,
    StudentTrainConfig,
    TeacherCacheConfig,
    TrainConfig,
    cache_settings,
    load_recipe,
    recipe_to_yaml,
)
from distil.errors import ConfigError

# The old spellings on purpose: these tests are about the aliases.
OLD_KEYS = {
    "teacher_cache_dir": ("/tmp/c", {"dir": "/tmp/c"}),
    "teacher_cache_views": (4, {"views": 4}),
    "teacher_cache_form": ("sampled", {"form": "sampled"}),
    "teacher_cache_k": (8, {"k": 8}),
    "teacher_cache_topk": (5, {"form": "topk", "k": 5}),
}


@pytest.mark.parametrize("old", sorted(OLD_KEYS))
def test_each_old_flat_key_maps_to_the_group_with_one_deprecation_line(old: str) -> None:
    value, want = OLD_KEYS[old]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):  # validated again and again (recipe, overrides, copies): said once
            cfg = load_recipe(None, [f"student_train.{old}={value}"]).student_train
    assert cfg.teacher_cache == TeacherCacheConfig(**want)
    lines = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    new = "k" if old == "teacher_cache_topk" else next(iter(want))
    assert old in lines[0] and f"write teacher_cache.{new}" in lines[0]


def test_every_moved_cache_key_is_covered_here() -> None:
    # The other groups' keys: tests/test_config_groups.py.
    assert {k for k in MOVED_KEYS if MOVED_KEYS[k].path.startswith("teacher_cache.")} == set(OLD_KEYS)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_old_and_new_spellings_that_disagree_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"teacher_cache_form sets teacher_cache\.form='sampled'"):
        load_recipe(None, ["student_train.teacher_cache_topk=5", "student_train.teacher_cache_form=sampled"])
    with pytest.raises(ConfigError, match=r"keep only the teacher_cache group"):
        load_recipe(None, ["student_train.teacher_cache.k=3", "student_train.teacher_cache_k=4"])
    # Old flat keys next to a plain-word group still combine.
    cfg = load_recipe(
        None, ["student_train.teacher_cache=on", "student_train.teacher_cache_k=4"]
    ).student_train
    assert cfg.teacher_cache == TeacherCacheConfig(mode="on", k=4)


def test_teacher_train_refuses_the_cache_group_and_says_where_it_goes() -> None:
    with pytest.raises(ConfigError, match=r"student_train\.teacher_cache"):
        load_recipe(None, ["teacher_train.teacher_cache.k=4"])
    with pytest.raises(ValueError, match="setting of the student's distillation"):
        TrainConfig.model_validate({"teacher_cache": {"mode": "off"}})


@pytest.mark.parametrize("setting", ["teacher_cache=off", "teacher_cache_dir=/tmp/x"])
def test_old_cache_keys_on_teacher_train_are_ignored_with_a_notice(setting: str) -> None:
    # Old recipes shared one YAML anchor between teacher_train and student_train, cache keys included.
    with pytest.warns(FutureWarning, match=r"ignored in this section.*student_train\.teacher_cache"):
        recipe = load_recipe(None, [f"teacher_train.{setting}"])
    assert "teacher_cache" not in type(recipe.teacher_train).model_fields


def test_an_old_recipe_sharing_one_anchor_with_cache_keys_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(
        "teacher_train: &train\n  epochs: 3\n  teacher_cache: 'off'\n  teacher_cache_topk: 4\n"
        "student_train: *train\n"
    )
    with pytest.warns(FutureWarning):
        recipe = load_recipe(path)
    assert recipe.teacher_train.epochs == 3 and recipe.student_train.epochs == 3
    assert recipe.student_train.teacher_cache == TeacherCacheConfig(mode="off", form="topk", k=4)


def test_a_shared_recipe_anchor_gets_the_cache_by_a_merge_key(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "teacher_train: &train\n  epochs: 3\nstudent_train:\n  <<: *train\n  teacher_cache: {mode: 'off', k: 4}\n"
    )
    recipe = load_recipe(path)
    assert recipe.student_train.epochs == 3 and recipe.student_train.teacher_cache.mode == "off"
    assert "teacher_cache" not in type(recipe.teacher_train).model_fields
    # The saved, resolved recipe loads again (the teacher's section carries no cache settings).
    again = tmp_path / "again.yaml"
    again.write_text(recipe_to_yaml(recipe))
    assert load_recipe(again) == recipe


def test_cache_settings_of_a_plain_train_config_are_the_defaults() -> None:
    assert cache_settings(TrainConfig()) == TeacherCacheConfig()
    assert cache_settings(StudentTrainConfig(teacher_cache="off")).mode == "off"


def test_recipe_new_writes_the_group_and_it_loads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from distil.cli.app import app

    path = tmp_path / "x.yaml"
    r = CliRunner().invoke(
        app, ["recipe", "new", str(path), "--from", "lm-demo", "--set", "student_train.teacher_cache.k=8"]
    )
    assert r.exit_code == 0, r.output
    text = path.read_text()
    assert "teacher_cache_" not in text
    written = yaml.safe_load(text)
    assert "teacher_cache" not in written["teacher_train"]
    assert written["student_train"]["teacher_cache"] == {
        "mode": "off",
        "form": "auto",
        "k": 8,
        "views": None,
        "dir": None,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the new shape: no deprecated key
        assert load_recipe(path).student_train.teacher_cache.k == 8


def test_a_training_state_saved_with_the_flat_keys_still_resumes() -> None:
    import torch

    from distil.train.state import fingerprint, upgrade_fingerprint

    model = torch.nn.Linear(2, 2)
    flat = {"teacher_cache": "auto", "teacher_cache_form": "auto", "teacher_cache_k": 16}
    flat |= {"teacher_cache_topk": 3, "teacher_cache_views": None}  # as saved before the group
    student = fingerprint("student_kd", StudentTrainConfig(teacher_cache={"form": "topk", "k": 3}), {}, model)
    saved = {**student, "recipe": {k: v for k, v in student["recipe"].items() if k != "teacher_cache"} | flat}
    assert saved != student and upgrade_fingerprint(saved, student) == student
    teacher = fingerprint("teacher", TrainConfig(), {}, model)
    assert upgrade_fingerprint({**teacher, "recipe": teacher["recipe"] | flat}, teacher) == teacher
    # A changed cache setting is still a different run.
    other = fingerprint("student_kd", StudentTrainConfig(teacher_cache={"form": "topk", "k": 5}), {}, model)
    assert upgrade_fingerprint(saved, other) != other
