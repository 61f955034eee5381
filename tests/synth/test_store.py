"""The written transfer set: read back by the npz reader as the same tensors, with ids, grids and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distil.data import load_dataset
from distil.errors import DataError
from distil.models.seed import TinyCNN
from distil.synth import AdversarialConfig, SynthesisConfig, SyntheticSet, synthesize, write_synthetic
from distil.synth.synthesize import teacher_argmax
from tests.synth.bn_factory import make


def _synthetic(n: int = 12) -> SyntheticSet:
    gen = torch.Generator().manual_seed(0)
    # Values far from the data's statistics: a reader that re-normalized by them would not give these back.
    inputs = 3.0 * torch.randn(n, 1, 8, 8, generator=gen) + 1.0
    targets = torch.arange(n) % 10
    return SyntheticSet(inputs, targets, targets.flip(0), "deepinversion", 7, 1.5, {"iterations": 2})


def test_the_written_set_reads_back_as_the_same_tensors_and_ids(tmp_path: Path) -> None:
    data = load_dataset("digits", val_fraction=0.0, limit=100)
    synthetic = _synthetic()
    path = write_synthetic(tmp_path / "synth", synthetic, data, teacher="t")
    back = load_dataset("npz", path, val_fraction=0.0)
    assert back.mean == pytest.approx(data.mean) and back.std == pytest.approx(data.std)
    torch.testing.assert_close(back.train.x, synthetic.inputs, rtol=0, atol=1e-5)  # type: ignore[attr-defined]
    assert torch.equal(back.train.labels, synthetic.teacher_labels)
    # The real test split comes back too, for measurement.
    torch.testing.assert_close(back.test.x, data.test.x, rtol=0, atol=1e-5)  # type: ignore[attr-defined]
    assert torch.equal(back.test.labels, data.test.labels)
    assert back.class_names == data.class_names
    with np.load(path, allow_pickle=False) as archive:
        assert archive["ids"].tolist() == synthetic.ids
        assert synthetic.targets is not None
        assert archive["target"].tolist() == synthetic.targets.tolist()
    # The teacher gives the read-back inputs the classes it gave the synthetic ones.
    torch.manual_seed(0)
    teacher = make(num_classes=10, in_channels=1, image_size=8).eval()
    assert torch.equal(teacher_argmax(teacher, back.train.x), teacher_argmax(teacher, synthetic.inputs))  # type: ignore[attr-defined]


def test_grids_report_and_record_are_written_next_to_the_set(tmp_path: Path) -> None:
    data = load_dataset("digits", val_fraction=0.0, limit=100)
    path = write_synthetic(tmp_path / "synth", _synthetic(), data)
    folder = path.parent
    grids = sorted(p.name for p in (folder / "grids").iterdir())
    assert len(grids) == 10 and grids[0].startswith("00-") and grids[0].endswith(".png")
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 10
    record = json.loads((folder / "synthetic.json").read_text())
    assert record["method"] == "deepinversion" and record["count"] == 12 and record["seed"] == 7
    assert not list(tmp_path.glob(".synth.*"))  # no temporary folder left


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    data = load_dataset("digits", val_fraction=0.0, limit=100)
    (tmp_path / "synth").mkdir()
    with pytest.raises(DataError, match="exists"):
        write_synthetic(tmp_path / "synth", _synthetic(), data)


def test_an_adversarial_set_records_no_targets_and_reports_agreement_as_na(tmp_path: Path) -> None:
    # rev27: its targets were the teacher's own labels, so the report claimed 100% agreement.
    data = load_dataset("digits", val_fraction=0.0, limit=60)
    cfg = SynthesisConfig(
        method="adversarial",
        count=4,
        adversarial=AdversarialConfig(steps=1, student_steps=1, batch_size=4, z_dim=4),
    )
    torch.manual_seed(0)
    teacher = make(num_classes=10, in_channels=1, image_size=8)
    synthetic = synthesize(teacher, data.input_shape, 10, cfg, student=TinyCNN(10, 1))
    path = write_synthetic(tmp_path / "synth", synthetic, data)
    with np.load(path, allow_pickle=False) as archive:
        assert "target" not in archive.files
    record = json.loads((path.parent / "synthetic.json").read_text())
    assert record["teacher_agreement"] is None
    html = (path.parent / "report.html").read_text()
    assert "n/a" in html and "made for to" not in html


def test_a_written_set_read_with_normalize_none_is_refused_naming_the_fix(tmp_path: Path) -> None:
    # rev27: `normalize: none` used to drop the recorded mean/std, handing the teacher other tensors.
    data = load_dataset("digits", val_fraction=0.0, limit=60)
    path = write_synthetic(tmp_path / "synth", _synthetic(), data)
    with pytest.raises(DataError, match=r"records its teacher's input normalization.*set it to auto"):
        load_dataset("npz", path, val_fraction=0.0, options={"normalize": "none"})
