"""The views cache: the teacher's outputs on V replayed augmented views per sample."""

import dataclasses
from pathlib import Path

import pytest
import torch

from distil.api import distill
from distil.config import StudentTrainConfig, TrainConfig
from distil.data import TensorLoader, load_dataset
from distil.data.augment import view_of
from distil.errors import ConfigError
from distil.models import create_model
from distil.teachers.cache import TeacherViews, choose_teacher_source, open_or_build
from distil.train.engine import augmenter_for


@pytest.fixture(scope="module")
def digits():
    # Digits are 8x8: a padding of 1 makes the crop a real random shift.
    return dataclasses.replace(load_dataset("digits", limit=200), crop_padding=1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "default-cache"))


def _teacher(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("largenet", num_classes=10, in_channels=1, image_size=8).eval()


def _recording(teacher):
    """The teacher with a hook that keeps a copy of every input it is given."""
    seen: list[torch.Tensor] = []
    teacher.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize(
    ("augment", "mixing"),
    [("crop_flip", "none"), ("resized_crop+flip+jitter", "cutmix"), ("crop+trivial", "mixup")],
)
def test_replayed_student_input_is_the_teachers_input_bit_for_bit(
    digits, tmp_path: Path, augment, mixing
) -> None:
    cfg = StudentTrainConfig(
        augment={"ops": augment, "mixing": mixing}, seed=3, batch_size=32, teacher_cache={"views": 3}
    )
    teacher = _teacher()
    seen = _recording(teacher)
    views = TeacherViews(augmenter_for(digits, cfg), 3)
    cached, info = open_or_build(
        teacher, digits, augment=augment, cache_dir=tmp_path, batch_size=64, views=views
    )
    assert info.views == 3 and info.rows == 3 * len(digits.train)
    teacher_inputs = torch.cat(seen[1:])  # seen[0]: the one-sample probe for the output shape
    assert teacher_inputs.shape[0] == 3 * len(digits.train)  # row view * N + id
    loader = TensorLoader(digits.train, 32, shuffle=True, augmenter=augmenter_for(digits, cfg), views=3)
    used = set()
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            rows = batch["view"] * len(digits.train) + batch["index"]
            assert torch.equal(batch["inputs"], teacher_inputs[rows])  # the very same pixels
            assert torch.equal(cached.rows(batch), rows)
            used |= set(rows.tolist())
    # Three consecutive epochs use every view of every sample.
    assert len(used) == 3 * len(digits.train)
    assert not torch.equal(
        teacher_inputs[: len(digits.train)], teacher_inputs[len(digits.train) :][: len(digits.train)]
    )


def test_epoch_to_view_mapping_cycles_through_all_views() -> None:
    ids = torch.arange(1000)
    seen = torch.stack([view_of(0, ids, e, 4) for e in range(4)])  # (epochs, ids)
    assert ((seen >= 0) & (seen < 4)).all()
    assert (seen.sort(dim=0).values == torch.arange(4).view(4, 1)).all()  # each id: every view once
    assert len(set(seen[0].tolist())) == 4  # one epoch mixes all views
    assert torch.equal(view_of(0, ids, 7, 4), view_of(0, ids, 3, 4))


def test_views_cache_key_changes_with_v_and_augmentation(digits, tmp_path: Path) -> None:
    teacher = _teacher()

    def key(views: int = 2, seed: int = 0, **augment):
        cfg = TrainConfig(augment={"ops": "crop_flip", **augment}, seed=seed)
        replay = TeacherViews(augmenter_for(digits, cfg), views)
        return open_or_build(teacher, digits, augment=cfg.augment.ops, cache_dir=tmp_path, views=replay)[1]

    first = key()
    assert not first.hit and key().hit
    others = [
        key(views=3),
        key(seed=1),
        key(ops="crop"),
        key(mixing="mixup"),
        key(scale=(0.5, 1.0), ops="resized_crop"),
    ]
    assert all(not o.hit for o in others)
    assert len({first.fingerprint, *(o.fingerprint for o in others)}) == 1 + len(others)


def test_a_views_cache_needs_the_batches_view(digits, tmp_path: Path) -> None:
    views = TeacherViews(augmenter_for(digits, TrainConfig(augment="crop_flip")), 2)
    cached, _ = open_or_build(_teacher(), digits, augment="crop_flip", cache_dir=tmp_path, views=views)
    with pytest.raises(ConfigError, match="batch\\['view'\\]"):
        cached({"inputs": digits.train.x[:4], "index": torch.arange(4)})


def test_choose_source_uses_views_under_random_augmentation() -> None:
    from distil.losses import TeacherNeeds

    needs = TeacherNeeds(live=False)
    assert choose_teacher_source("auto", "crop_flip", needs=needs)[0] == "live"
    source, reason = choose_teacher_source("auto", "crop_flip", needs=needs, views=4)
    assert source == "cache" and "4 cached view" in reason
    with pytest.raises(ConfigError, match=r"teacher_cache\.views"):
        choose_teacher_source("on", "crop_flip", needs=needs)
    assert choose_teacher_source("off", "crop_flip", needs=needs, views=4)[0] == "live"


def test_distill_with_views_trains_on_the_cached_views(digits, tmp_path: Path) -> None:
    cfg = StudentTrainConfig(
        epochs=2, batch_size=64, augment="crop_flip", teacher_cache={"views": 2, "dir": str(tmp_path)}
    )
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    result = distill(_teacher(), student, digits, cfg)
    record = result.history[-1]
    assert record["teacher_source"] == "cache" and record["teacher_cache"]["views"] == 2
    assert record["teacher_cache"]["rows"] == 2 * len(digits.train)
    # The same run with the live teacher on the same replayed views trains the same student (the
    # cache's float16 rounding aside).
    live_cfg = cfg.model_copy(update={"teacher_cache": cfg.teacher_cache.model_copy(update={"mode": "off"})})
    live_student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    live = distill(_teacher(), live_student, digits, live_cfg)
    assert live.history[-1]["teacher_source"] == "live"
    assert abs(live.history[-1]["train_loss"] - record["train_loss"]) < 1e-2
