"""The training recipe's optimizer, schedule, augmentation, loader and FSDP settings as groups; the old flat
keys as aliases."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from distil.config import (
    MOVED_KEYS,
    AugmentConfig,
    FSDPConfig,
    LoaderConfig,
    OptimizerConfig,
    ScheduleConfig,
    StudentTrainConfig,
    TrainConfig,
    load_recipe,
)
from distil.errors import ConfigError

# The old spellings on purpose: these tests are about the aliases. old key -> (value, group, field).
OLD_KEYS = {
    "momentum": (0.5, "optimizer", "momentum"),
    "weight_decay": (0.01, "optimizer", "weight_decay"),
    "warmup_epochs": (0.5, "schedule", "warmup_epochs"),
    "augment_scale": ([0.5, 1.0], "augment", "scale"),
    "augment_ratio": ([0.5, 2.0], "augment", "ratio"),
    "jitter_brightness": (0.2, "augment", "jitter_brightness"),
    "jitter_contrast": (0.3, "augment", "jitter_contrast"),
    "jitter_saturation": (0.1, "augment", "jitter_saturation"),
    "jitter_hue": (0.2, "augment", "jitter_hue"),
    "randaugment_ops": (3, "augment", "randaugment_ops"),
    "randaugment_magnitude": (12, "augment", "randaugment_magnitude"),
    "mixing": ("cutmix", "augment", "mixing"),
    "mixing_alpha": (0.4, "augment", "mixing_alpha"),
    "num_workers": (2, "loader", "num_workers"),
    "pin_memory": (False, "loader", "pin_memory"),
    "persistent_workers": (True, "loader", "persistent_workers"),
    "prefetch_factor": (4, "loader", "prefetch_factor"),
    "fsdp_units": (["Block"], "fsdp", "units"),
}


def _future_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("section", ["teacher_train", "student_train"])
@pytest.mark.parametrize("old", sorted(OLD_KEYS))
def test_each_old_flat_key_maps_to_its_group_with_one_deprecation_line(old: str, section: str) -> None:
    value, group, field = OLD_KEYS[old]
    overrides = [f"{section}.{old}={value}"]
    if group == "fsdp":
        overrides.append(f"{section}.fsdp=true")  # units need sharding on
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):  # validated again and again (recipe, overrides, copies): said once
            cfg = getattr(load_recipe(None, overrides), section)
    got = getattr(getattr(cfg, group), field)
    assert (list(got) if isinstance(got, tuple) else got) == value
    lines = _future_lines(caught)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert old in lines[0] and f"write {group}.{field}" in lines[0]


def test_every_moved_key_of_these_groups_is_covered_here() -> None:
    assert {k for k in MOVED_KEYS if not MOVED_KEYS[k].path.startswith("teacher_cache.")} == set(OLD_KEYS)


OLD_SHAPE = """\
student_train:
  optimizer: adamw
  lr: 0.01
  weight_decay: 0.01
  schedule: step
  warmup_epochs: 1
  epochs: 2
  augment: resized_crop+flip
  augment_scale: [0.35, 1.0]
  jitter_brightness: 0.2
  mixing: cutmix
  mixing_alpha: 0.5
  num_workers: 2
  prefetch_factor: 3
  fsdp: true
  fsdp_units: [Block]
"""

NEW_SHAPE = """\
student_train:
  optimizer: {name: adamw, weight_decay: 0.01}
  lr: 0.01
  schedule: {name: step, warmup_epochs: 1}
  epochs: 2
  augment:
    ops: resized_crop+flip
    scale: [0.35, 1.0]
    jitter_brightness: 0.2
    mixing: cutmix
    mixing_alpha: 0.5
  loader: {num_workers: 2, prefetch_factor: 3}
  fsdp: {enabled: true, units: [Block]}
"""


def test_a_recipe_in_the_old_shape_and_one_in_the_new_shape_give_equal_configs(tmp_path: Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD_SHAPE)
    new.write_text(NEW_SHAPE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_old = load_recipe(old)
    assert len(_future_lines(caught)) == 9  # one per old key; `optimizer: adamw`, `fsdp: true`... are words
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        from_new = load_recipe(new)
    assert from_old == from_new
    train = from_new.student_train
    assert train.augment == AugmentConfig(
        ops="resized_crop+flip", scale=(0.35, 1.0), jitter_brightness=0.2, mixing="cutmix", mixing_alpha=0.5
    )
    assert train.loader == LoaderConfig(num_workers=2, prefetch_factor=3)
    assert train.optimizer == OptimizerConfig(name="adamw", weight_decay=0.01)
    assert train.schedule == ScheduleConfig(name="step", warmup_epochs=1)
    assert train.fsdp == FSDPConfig(enabled=True, units=["Block"])


def test_a_groups_plain_word_keeps_working_in_yaml_python_and_overrides() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the groups' words are not deprecated
        assert TrainConfig(augment="crop").augment == AugmentConfig(ops="crop")
        assert TrainConfig(fsdp=True).fsdp == FSDPConfig(enabled=True)
        assert TrainConfig(optimizer="adam", schedule="constant").optimizer == OptimizerConfig(name="adam")
        # A word set by --set keeps the group's other settings; a field set under a word keeps the word.
        cfg = load_recipe(
            None,
            [
                "student_train.augment={ops: resized_crop, scale: [0.5, 1.0]}",
                "student_train.augment=resized_crop+flip",
                "teacher_train.augment=crop",
                "teacher_train.augment.mixing=mixup",
            ],
        )
    assert cfg.student_train.augment == AugmentConfig(ops="resized_crop+flip", scale=(0.5, 1.0))
    assert cfg.teacher_train.augment == AugmentConfig(ops="crop", mixing="mixup")


def test_old_flat_keys_next_to_a_groups_word_combine_and_disagreements_are_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        cfg = StudentTrainConfig.model_validate({"augment": "crop", "mixing": "mixup"})
        assert cfg.augment == AugmentConfig(ops="crop", mixing="mixup")
        with pytest.raises(
            ConfigError, match=r"mixing sets augment\.mixing='mixup'.*keep only the augment group"
        ):
            load_recipe(None, ["student_train.augment.mixing=cutmix", "student_train.mixing=mixup"])


def test_group_checks_name_the_group() -> None:
    with pytest.raises(ConfigError, match=r"augment\.scale must satisfy"):
        load_recipe(None, ["student_train.augment.scale=[0.9, 0.5]"])
    with pytest.raises(ConfigError, match=r"fsdp\.units=\['Block'\] needs fsdp\.enabled=true"):
        load_recipe(None, ["student_train.fsdp.units=[Block]"])
    with pytest.raises(ConfigError, match="rotate"):
        load_recipe(None, ["student_train.augment=rotate"])


def test_recipe_new_writes_the_groups_and_an_old_dotted_override_still_works(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from distil.cli.app import app

    path = tmp_path / "x.yaml"
    old = ["--set", "student_train.num_workers=2", "--set", "student_train.mixing=mixup"]
    old += ["--set", "student_train.momentum=0.5", "--set", "student_train.lr=0.1"]
    args = ["recipe", "new", str(path), "--from", "fashion-mnist-patient", *old]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old dotted paths: their deprecation lines
        r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    written = yaml.safe_load(path.read_text())
    for section in ("teacher_train", "student_train"):
        assert not set(written[section]) & set(OLD_KEYS), section
        assert {"optimizer", "schedule", "augment", "loader", "fsdp"} <= set(written[section])
    assert written["student_train"]["loader"]["num_workers"] == 2
    assert written["student_train"]["augment"]["mixing"] == "mixup"
    assert written["student_train"]["optimizer"]["momentum"] == 0.5 and written["student_train"]["lr"] == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the new shape: no deprecated key
        recipe = load_recipe(path)
    assert recipe.student_train.loader.num_workers == 2 and recipe.student_train.augment.ops == "auto"


# A student's fingerprint recipe as distil saved it before the regroup (printed by that version for
# StudentTrainConfig(augment="resized_crop+flip", augment_scale=(0.5, 1), mixing="cutmix", num_workers=2,
# jitter_hue=0.1)).
FLAT_FINGERPRINT = {
    "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine",
    "warmup_epochs": 0.0, "epochs": 10, "batch_size": 128, "label_smoothing": 0.0,
    "augment": "resized_crop+flip", "augment_scale": [0.5, 1.0], "augment_ratio": [0.75, 1.3333333333333333],
    "jitter_brightness": 0.4, "jitter_contrast": 0.4, "jitter_saturation": 0.4, "jitter_hue": 0.1,
    "randaugment_ops": 2, "randaugment_magnitude": 9, "mixing": "cutmix", "mixing_alpha": 1.0,
    "grad_clip": 5.0, "channels_last": False, "compile": False, "num_workers": 2, "pin_memory": None,
    "persistent_workers": False, "prefetch_factor": None, "seed": 0,
    "teacher_cache": {"mode": "auto", "form": "auto", "k": 16, "views": None},
}  # fmt: skip


def _store_with_flat_state(tmp_path: Path) -> tuple[Any, Any]:
    import torch

    from distil.train.state import TrainStateStore, capture_state, fingerprint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    now = fingerprint("student_kd", StudentTrainConfig(augment="resized_crop+flip"), {}, model)
    saved = {**now, "recipe": FLAT_FINGERPRINT}
    state = capture_state(
        model=model, optimizer=opt, scheduler=sched, epoch=1, batch=0, step=4, fingerprint=saved
    )
    store = TrainStateStore(tmp_path / "states")
    store.save(state)
    return store, model


def test_a_training_state_saved_with_the_flat_keys_still_resumes(tmp_path: Path) -> None:
    from distil.errors import CheckpointError
    from distil.train.state import fingerprint

    store, model = _store_with_flat_state(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        same = StudentTrainConfig(
            augment="resized_crop+flip",
            augment_scale=(0.5, 1.0),
            mixing="cutmix",
            num_workers=2,
            jitter_hue=0.1,
        )
    state = store.latest(fingerprint("student_kd", same, {}, model))
    assert state is not None and state.epoch == 1 and state.step == 4
    # A changed setting is still a different run.
    other = same.model_copy(update={"augment": same.augment.model_copy(update={"mixing": "mixup"})})
    with pytest.raises(CheckpointError, match=r"augment\.mixing"):
        store.latest(fingerprint("student_kd", other, {}, model))


def test_a_copy_with_updates_puts_words_and_old_keys_in_their_groups() -> None:
    # Regression: pydantic's model_copy stores updates unchecked, so `optimizer="adam"` became a bare
    # string (the optimizer builder then failed) and an old key such as `mixing` was stored where nothing
    # reads it: the copy would have trained without mixing, silently.
    cfg = StudentTrainConfig(augment="crop", teacher_cache="off", epochs=3)
    copy = cfg.model_copy(update={"optimizer": "adam", "epochs": 2})
    assert type(copy) is StudentTrainConfig and copy.optimizer == OptimizerConfig(name="adam")
    assert (copy.epochs, copy.augment.ops, copy.teacher_cache.mode) == (2, "crop", "off")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixed = cfg.model_copy(update={"mixing": "mixup"})
    assert mixed.augment == AugmentConfig(ops="crop", mixing="mixup")
    assert len(_future_lines(caught)) == 1
    with pytest.raises(ValueError, match="epochs"):
        cfg.model_copy(update={"epochs": 0})  # checked like the constructor
