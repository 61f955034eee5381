"""Training-strategy transfer: inherited teacher recipe, user overrides, linear lr scaling."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.config import TrainConfig
from distil.errors import TransferError
from distil.models import create_model, model_spec
from distil.train.checkpoint import save_checkpoint
from distil.transfer import inherit_recipe, teacher_recipe

TEACHER = TrainConfig(
    optimizer={"name": "adamw", "weight_decay": 1e-4},
    lr=0.1,
    schedule="step",
    epochs=30,
    batch_size=128,
    augment="crop",
    seed=7,
)


def _sources(records: list) -> dict[str, str]:
    return {r.field: r.source for r in records}


def test_everything_but_the_seed_is_inherited_without_overrides() -> None:
    cfg, records = inherit_recipe(TEACHER, TrainConfig(seed=3))
    assert cfg.model_dump(exclude={"seed"}) == TEACHER.model_dump(exclude={"seed"})
    assert cfg.seed == 3
    src = _sources(records)
    assert src["optimizer"] == src["epochs"] == src["augment"] == "teacher"
    assert src["seed"] == "student"


def test_user_overrides_win_and_lr_follows_the_batch_size_linearly() -> None:
    student = TrainConfig(batch_size=32, epochs=2, lr=0.5)
    cfg, records = inherit_recipe(TEACHER, student, ["batch_size", "epochs"])
    assert (cfg.batch_size, cfg.epochs, cfg.optimizer.name, cfg.optimizer.weight_decay) == (
        32,
        2,
        "adamw",
        1e-4,
    )
    assert cfg.lr == pytest.approx(0.1 * 32 / 128)
    lr = next(r for r in records if r.field == "lr")
    assert (lr.source, lr.teacher_value) == ("scaled", 0.1)
    assert "linear scaling rule: lr = 0.1 * 32 / 128" in lr.reason
    assert _sources(records)["batch_size"] == "user"


def test_an_explicit_lr_is_not_scaled() -> None:
    cfg, records = inherit_recipe(TEACHER, TrainConfig(batch_size=32, lr=0.5), ["batch_size", "lr"])
    assert cfg.lr == 0.5 and _sources(records)["lr"] == "user"


def test_unknown_override_suggests_the_field() -> None:
    with pytest.raises(TransferError, match="'batchsize' \\(did you mean 'batch_size'"):
        inherit_recipe(TEACHER, TrainConfig(), ["batchsize"])


def test_teacher_recipe_reads_the_checkpoint_sidecar(tmp_path: Path) -> None:
    model = create_model("tiny-cnn", num_classes=3, in_channels=1, image_size=4)
    spec = model_spec("tiny-cnn", num_classes=3, in_channels=1, image_size=4)
    save_checkpoint(tmp_path / "t", model, spec, {"recipe": TEACHER.model_dump(mode="json")})
    assert teacher_recipe(tmp_path / "t.safetensors") == TEACHER
    save_checkpoint(tmp_path / "u", model, spec, {})
    with pytest.raises(TransferError, match="has no training recipe"):
        teacher_recipe(tmp_path / "u")
    with pytest.raises(TransferError, match="needs a distil checkpoint"):
        teacher_recipe(tmp_path / "missing")


def test_a_group_field_set_by_the_user_keeps_the_rest_of_the_teachers_group() -> None:
    import warnings

    teacher = TrainConfig(augment={"ops": "resized_crop", "scale": (0.5, 1.0)}, loader={"num_workers": 2})
    student = TrainConfig(augment={"mixing": "mixup"}, loader={"num_workers": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        cfg, records = inherit_recipe(teacher, student, ["augment.mixing"])
    assert cfg.augment.model_dump() == {**teacher.augment.model_dump(), "mixing": "mixup"}
    assert cfg.loader.num_workers == 2  # not set: inherited
    record = next(r for r in records if r.field == "augment")
    assert record.source == "user" and "augment.mixing set by the user" in record.reason
    assert record.value["ops"] == "resized_crop"  # the report holds plain JSON values
    # The old flat key and the group's word name the same fields.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert inherit_recipe(teacher, student, ["mixing"])[0] == cfg
    word, _ = inherit_recipe(teacher, TrainConfig(augment="crop"), ["augment"])
    assert word.augment.model_dump() == {**teacher.augment.model_dump(), "ops": "crop"}


def test_a_sidecar_recipe_in_the_flat_shape_is_inherited_without_deprecation_lines() -> None:
    import warnings

    flat = {"augment": "crop", "mixing": "cutmix", "num_workers": 2, "teacher_cache_k": 4, "epochs": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        cfg, _ = inherit_recipe(flat, TrainConfig())
    assert (cfg.augment.ops, cfg.augment.mixing, cfg.loader.num_workers, cfg.epochs) == (
        "crop",
        "cutmix",
        2,
        3,
    )
