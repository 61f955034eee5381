"""Issue 15 end to end: unlabelled transfer sets in the pipeline, function matching, transferred lr."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distil.api import distill, train_model
from distil.config import KDConfig, TrainConfig, TransferConfig, load_recipe
from distil.data import DataBundle, load_dataset
from distil.errors import ConfigError
from distil.models import create_model
from distil.run import run_pipeline
from distil.transfer import TRANSFERRED_KD_TEMPERATURE, TRANSFERRED_LR_SCALE, prepare_student, transferred_kd


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=200, val_fraction=0.1, seed=0)


def _nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    return teacher, student


def test_pipeline_teacher_keeps_every_label_and_students_the_kept_ones(tmp_path: Path, monkeypatch) -> None:
    import distil.run.stages as pipeline

    seen: list[tuple[str, int, int]] = []  # (stage, samples, labelled samples)

    def spy(real):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            data = next(a for a in args if isinstance(a, DataBundle))
            labels = data.train.labels
            seen.append((kwargs["description"], len(labels), int((labels >= 0).sum())))
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(pipeline, "train_model", spy(pipeline.train_model))
    monkeypatch.setattr(pipeline, "distill", spy(pipeline.distill))
    recipe = load_recipe(
        None,
        [
            "name=few",
            "data.limit=200",
            "data.unlabeled.keep_per_class=2",
            "teacher_train.epochs=1",
            "student_train.epochs=1",
            "teacher_train.batch_size=32",
            "student_train.batch_size=32",
        ],
    )
    result = run_pipeline(recipe, tmp_path, show_progress=False, measure_latency=False)
    n = seen[0][1]
    assert seen == [
        ("teacher", n, n),  # every label
        ("student_scratch", n, n),  # the 20 kept labels, repeated to n samples: as many steps
        ("student_kd", n, 20),  # 20 labels, the rest through the teacher only
    ]
    assert [m.name for m in result.metrics] == ["teacher", "student_scratch", "student_kd"]


def test_function_matching_trains_on_kd_only_and_refuses_label_terms(digits) -> None:
    teacher, student = _nets()
    cfg = TrainConfig(epochs=1, batch_size=32, augment={"ops": "none", "mixing": "mixup"})
    with pytest.raises(ConfigError, match=r"kd.terms=\{kd: 1\}"):
        distill(teacher, student, digits, cfg, KDConfig())  # ce 0.1 would read mixed labels
    with pytest.raises(ConfigError, match="mixing"):
        train_model(student, digits, cfg)
    result = distill(teacher, student, digits, cfg, KDConfig(terms={"kd": 1.0}))
    assert result.history[-1]["teacher_source"] == "live"  # the teacher sees the same mixed views
    assert torch.isfinite(torch.tensor(result.history[-1]["train_kd"]))


def test_a_student_initialised_from_the_teacher_trains_at_a_scaled_lr(digits) -> None:
    teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    example = digits.train.head(2)
    cfg = TrainConfig(lr=0.05)
    student = create_model("largenet", num_classes=10, in_channels=1, image_size=8, width=0.5)
    prepared = prepare_student(TransferConfig(init="teacher"), teacher, student, cfg, example_inputs=example)
    assert prepared.train_cfg.lr == pytest.approx(0.05 * TRANSFERRED_LR_SCALE)
    assert prepared.report.settings["lr_scale"] == TRANSFERRED_LR_SCALE
    student = create_model("largenet", num_classes=10, in_channels=1, image_size=8, width=0.5)
    same = prepare_student(
        TransferConfig(init="teacher", lr_scale=1.0), teacher, student, cfg, example_inputs=example
    )
    assert same.train_cfg.lr == 0.05
    random = prepare_student(TransferConfig(), teacher, _nets()[1], cfg, example_inputs=example)
    assert random.train_cfg.lr == 0.05


def test_the_teacher_cache_serves_a_transfer_set(digits) -> None:
    from distil.config import UnlabeledConfig
    from distil.data.unlabeled import transfer_set

    teacher, student = _nets()
    kd_data = transfer_set(digits, UnlabeledConfig(keep_per_class=1))
    cfg = TrainConfig(epochs=1, batch_size=32, augment="none")
    result = distill(teacher, student, kd_data, cfg, KDConfig())
    assert result.history[-1]["teacher_source"] == "cache"
    assert torch.isfinite(torch.tensor(result.history[-1]["train_ce"]))


def test_a_transferred_student_distills_at_the_transferred_temperature() -> None:
    kd = KDConfig(temperature=4.0, temperature_final=2.0)
    assert transferred_kd(TransferConfig(init="teacher"), kd).temperature == TRANSFERRED_KD_TEMPERATURE
    assert transferred_kd(TransferConfig(init="teacher"), kd).temperature_final is None
    assert transferred_kd(TransferConfig(init="teacher", kd_temperature=3.0), kd).temperature == 3.0
    assert transferred_kd(TransferConfig(), kd) is kd
