"""`distil synthesize --no-data`: a teacher whose data the user does not have (issue 27).

The facts the data would give come from a distil checkpoint's sidecar or from options; without a real
test split, `distil distill` on the set names its test metric as agreement with the teacher.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from distil.cli.app import app
from distil.data.npz import SYNTHETIC_TEST_METRIC, read_npz
from distil.errors import ConfigError, DataError
from distil.models.registry import model_spec
from distil.report.writer import write_report
from distil.synth.facts import GivenFacts, TeacherFacts, read_test_npz, resolve_facts
from distil.train.checkpoint import save_checkpoint
from tests.synth.bn_factory import make, make_fixed

runner = CliRunner()
FACTORY = "tests.synth.bn_factory:make"
FIXED = "tests.synth.bn_factory:make_fixed"
FAST = ["--count", "20", "--iterations", "2", "--batch-size", "10", "--quiet"]
FACTS = ["--input-shape", "1,8,8", "--classes", "10", "--mean", "0.5", "--std", "0.25"]


def _weights(tmp_path: Path, factory=make) -> Path:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    teacher = factory(num_classes=10, in_channels=1, image_size=8)
    path = tmp_path / "vendor.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    return path


def _missing_data(tmp_path: Path) -> list[str]:
    # The recipe's data points at a file that does not exist: --no-data must never read it.
    return ["--set", "data.name=npz", "--set", f"data.root={tmp_path / 'no-such-data.npz'}"]


def _synthesize(tmp_path: Path, *args: str, out: str = "synth"):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app, ["synthesize", *_missing_data(tmp_path), *args, "--out", str(tmp_path / out), *FAST]
    )


def _sidecar_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    teacher = make(num_classes=3, in_channels=1, image_size=8)
    spec = model_spec(FACTORY, num_classes=3, in_channels=1, image_size=8)
    data = {
        "name": "vendor-set",
        "num_classes": 3,
        "class_names": ["cat", "dog", "owl"],
        "input_shape": [1, 8, 8],
        "mean": [0.4],
        "std": [0.2],
    }
    save_checkpoint(tmp_path / "teacher", teacher, spec, {"data": data})
    return tmp_path / "teacher"


def test_no_data_on_a_user_factory_state_dict_then_distill_names_the_metric_agreement(tmp_path: Path) -> None:
    weights = _weights(tmp_path)
    teacher = ["--teacher", str(weights), "--set", f"teacher.model={FACTORY}"]
    result = _synthesize(tmp_path, *teacher, "--no-data", *FACTS)
    assert result.exit_code == 0, result.output
    npz = tmp_path / "synth" / "transfer.npz"
    with np.load(npz) as archive:
        assert "x_test" not in archive.files and bool(archive["synthetic"])
        assert archive["mean"].tolist() == [0.5] and archive["std"].tolist() == [0.25]
        assert archive["x"].shape == (20, 1, 8, 8)
    record = json.loads((tmp_path / "synth" / "synthetic.json").read_text())
    assert record["real_test"] is False and SYNTHETIC_TEST_METRIC in record["test_note"]
    assert record["data"]["class_names"] == [str(k) for k in range(10)]
    assert "No real test data" in (tmp_path / "synth" / "report.html").read_text()
    result = runner.invoke(
        app,
        [
            "distill",
            *teacher,
            "--set",
            "data.name=npz",
            "--set",
            f"data.root={npz}",
            "--set",
            "data.val_fraction=0",
            "--set",
            "student.model=tiny-cnn",
            "--set",
            "student_train.epochs=1",
            "--set",
            "kd.ce_weight=0",
            "--no-latency",
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "kd",
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert SYNTHETIC_TEST_METRIC in result.output  # the printed table's title
    summary = json.loads((tmp_path / "runs" / "kd" / "summary.json").read_text())
    assert summary["data"]["extra"]["test_metric"] == SYNTHETIC_TEST_METRIC
    # The report names it too (its title), not "npz test set".
    files = write_report(tmp_path / "runs" / "kd")
    assert SYNTHETIC_TEST_METRIC in files.markdown.read_text().splitlines()[0]
    assert SYNTHETIC_TEST_METRIC in files.html.read_text()


def test_no_data_takes_every_fact_from_a_distil_checkpoint_sidecar_and_a_real_test_file(
    tmp_path: Path,
) -> None:
    checkpoint = _sidecar_checkpoint(tmp_path)
    x_test = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)  # (N, H, W): one channel
    np.savez(tmp_path / "mine.npz", x_test=x_test, y_test=np.array([0, 1, 2, 0, 1]))
    args = ["--teacher", str(checkpoint), "--set", f"teacher.model={FACTORY}", "--no-data"]
    result = _synthesize(tmp_path, *args, "--test", str(tmp_path / "mine.npz"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "synth" / "synthetic.json").read_text())
    assert record["data"]["class_names"] == ["cat", "dog", "owl"] and record["data"]["name"] == "vendor-set"
    assert record["data"]["mean"] == [0.4] and record["data"]["std"] == [0.2]
    assert record["real_test"] is True and record["facts_from"] == "the checkpoint's sidecar"
    with np.load(tmp_path / "synth" / "transfer.npz") as archive:
        np.testing.assert_allclose(archive["x_test"][:, 0], x_test, atol=1e-6)
        assert archive["y_test"].tolist() == [0, 1, 2, 0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real test split: nothing carved, nothing to warn about
        raw = read_npz(tmp_path / "synth" / "transfer.npz")
    assert "test_metric" not in raw.extra


def test_missing_facts_are_refused_naming_exactly_the_options_to_pass(tmp_path: Path) -> None:
    weights = _weights(tmp_path)
    args = [
        "--teacher",
        str(weights),
        "--set",
        f"teacher.model={FACTORY}",
        "--no-data",
        "--input-shape",
        "1,8,8",
    ]
    result = _synthesize(tmp_path, *args)
    assert result.exit_code == 2
    assert "--classes K" in result.output and "--mean M" in result.output and "--std S" in result.output
    assert "--input-shape C,H,W" not in result.output and not (tmp_path / "synth").exists()


def test_facts_without_no_data_are_refused_and_a_wrong_data_path_still_names_the_file(tmp_path: Path) -> None:
    weights = _weights(tmp_path)
    teacher = ["--teacher", str(weights), "--set", f"teacher.model={FACTORY}"]
    result = _synthesize(tmp_path, *teacher, *FACTS)
    assert result.exit_code == 2 and "--no-data" in result.output
    result = _synthesize(tmp_path, *teacher)  # the data is read, and it is not there
    assert result.exit_code == 2 and "no-such-data.npz does not exist" in result.output
    result = _synthesize(tmp_path, *teacher, "--test", str(tmp_path / "mine.npz"))
    assert result.exit_code == 2 and "add --no-data" in result.output


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (["--input-shape", "1,9,9", "--classes", "10"], "cannot run on inputs of shape (1, 9, 9)"),
        (["--input-shape", "1,8,8", "--classes", "5"], "gives outputs (1, 10) for one input, but 5 classes"),
    ],
)
def test_facts_that_do_not_fit_the_teacher_are_refused_before_synthesis(
    tmp_path: Path, facts: list[str], expected: str
) -> None:
    weights = _weights(tmp_path, make_fixed)
    args = ["--teacher", str(weights), "--set", f"teacher.model={FIXED}", "--no-data", *facts]
    result = _synthesize(tmp_path, *args, "--mean", "0.5", "--std", "0.25")
    assert result.exit_code == 2
    assert expected in result.output.replace("\n", " ") and not (tmp_path / "synth").exists()


def test_an_option_that_contradicts_the_sidecar_is_refused_and_one_mean_covers_every_channel(
    tmp_path: Path,
) -> None:
    checkpoint = str(_sidecar_checkpoint(tmp_path))
    recorded = {
        "input_shape": [3, 8, 8],
        "class_names": ["a", "b"],
        "mean": [0.4, 0.4, 0.4],
        "std": [0.2] * 3,
    }
    facts = resolve_facts(GivenFacts(mean=(0.4,), classes=2), recorded, checkpoint)
    assert facts.mean == (0.4, 0.4, 0.4) and facts.class_names == ["a", "b"]
    with pytest.raises(ConfigError, match=r"--mean 0\.1 contradicts the teacher's sidecar"):
        resolve_facts(GivenFacts(mean=(0.1,)), recorded, checkpoint)
    with pytest.raises(ConfigError, match="--classes 3 contradicts"):
        resolve_facts(GivenFacts(classes=3), recorded, checkpoint)
    given = GivenFacts(input_shape=(3, 8, 8), classes=2, mean=(0.1, 0.2), std=(1.0,))
    with pytest.raises(ConfigError, match="--mean has 2 values but the inputs have 3 channel"):
        resolve_facts(given, {}, checkpoint)
    with pytest.raises(ConfigError, match="makes images; give C,H,W"):
        resolve_facts(GivenFacts(input_shape=(64,), classes=2, mean=(0.0,), std=(1.0,)), {}, checkpoint)


def test_the_npz_reader_names_a_carved_split_of_a_synthetic_set_agreement(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10) % 2
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez(tmp_path / "synthetic.npz", x=x, y=y, synthetic=np.array(True))
    with pytest.warns(UserWarning, match=SYNTHETIC_TEST_METRIC):
        raw = read_npz(tmp_path / "synthetic.npz")
    assert (
        raw.extra["test_metric"] == SYNTHETIC_TEST_METRIC and SYNTHETIC_TEST_METRIC in raw.extra["test_split"]
    )
    with pytest.warns(UserWarning, match="carved"):
        assert "test_metric" not in read_npz(tmp_path / "plain.npz").extra


def test_a_test_file_that_does_not_fit_the_teacher_is_refused_naming_each_problem(tmp_path: Path) -> None:
    facts = TeacherFacts(input_shape=(1, 8, 8), class_names=["a", "b"], mean=(0.5,), std=(0.25,))
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 6, 6), np.float32), y=np.array([0, 1, 2]))
    with pytest.raises(
        DataError, match=r"shape \(1, 6, 6\).*labels from 0 to 2, but the teacher has classes 0\.\.1"
    ):
        read_test_npz(tmp_path / "bad.npz", facts)
    with pytest.raises(DataError, match="does not exist"):
        read_test_npz(tmp_path / "missing.npz", facts)
