"""Stage names are one enum whose values are the strings run directories and reports already hold."""

from __future__ import annotations

import json
from pathlib import Path

from distil.api import train_model
from distil.config import TrainConfig
from distil.data import load_dataset
from distil.models import create_model
from distil.train.stages import Stage, unfrozen
from distil.train.state import checkpointing, stage_dirname


def test_stages_read_and_write_as_their_old_strings() -> None:
    assert [s.value for s in (Stage.TEACHER, Stage.STUDENT_SCRATCH, Stage.STUDENT_KD)] == [
        "teacher",
        "student_scratch",
        "student_kd",
    ]
    assert Stage("student_kd") is Stage.STUDENT_KD and Stage.TEACHER == "teacher"
    assert f"{Stage.QAT_KD}" == str(Stage.QAT_KD) == "qat_kd"
    assert json.dumps({Stage.TEACHER: Stage.MUTUAL}) == '{"teacher": "mutual"}'
    assert {"teacher": 1}[Stage.TEACHER] == 1
    assert stage_dirname(Stage.PRUNE_FINETUNE) == "prune_finetune"
    assert unfrozen(Stage.STUDENT_KD) == "student_kd-unfrozen"


def test_a_stage_names_the_records_and_the_training_state_folder(tmp_path: Path) -> None:
    data = load_dataset("digits", limit=100)
    model = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    with checkpointing(tmp_path):
        result = train_model(model, data, TrainConfig(epochs=1, batch_size=32), description=Stage.TEACHER)
    record = result.history[-1]
    assert type(record["stage"]) is str and record["stage"] == "teacher"  # plain JSON, as before
    assert [p.name for p in tmp_path.iterdir()] == ["teacher"]
