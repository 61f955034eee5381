"""Commands on an existing checkpoint read its image folder with the preprocessing it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from distil.cli.app import app
from distil.errors import ConfigError
from distil.run import trained_data_options

pytestmark = pytest.mark.filterwarnings("ignore:.*test split:UserWarning")


def _folder(root: Path, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        for i in range(8):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(
                root / name / f"{i}.png"
            )
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny-cnn teacher trained on 12x12 grayscale PNGs read as 10x10 RGB."""
    tmp = tmp_path_factory.mktemp("imgopts")
    data = _folder(tmp / "data")
    args = ["train", "--quiet", "--no-latency", "--out", str(tmp / "runs"), "--name", "img"]
    for kv in ("data.name=imagefolder", f"data.root={data}", "data.image_size=10", "data.channels=RGB"):
        args += ["--set", kv]
    args += ["--set", "teacher_train.epochs=1", "--set", "teacher.model=tiny-cnn"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return data, tmp / "runs" / "img" / "teacher.json"


def test_the_sidecar_records_the_resolved_image_options(trained: tuple[Path, Path]) -> None:
    _, ckpt = trained
    meta = json.loads(ckpt.read_text())
    assert meta["data"]["options"] == {"image_size": 10, "channels": "RGB", "on_bad_sample": "error"}
    assert meta["data"]["input_shape"] == [3, 10, 10]


def test_eval_and_export_reuse_them_and_a_contradiction_exits_2(trained: tuple[Path, Path]) -> None:
    data, ckpt = trained
    # Without the recorded options the folder would read as 1x12x12, which the 3-channel model refuses.
    result = CliRunner().invoke(app, ["eval", str(ckpt), "--data-root", str(data), "--no-latency"])
    assert result.exit_code == 0, result.output
    assert "test set" in result.output
    onnx = ckpt.with_suffix(".onnx")
    result = CliRunner().invoke(app, ["export", str(ckpt), "--data-root", str(data), "--out", str(onnx)])
    assert result.exit_code == 0, result.output
    assert onnx.is_file()
    for flag in (["--image-size", "12"], ["--channels", "L"]):
        result = CliRunner().invoke(app, ["eval", str(ckpt), "--data-root", str(data), "--no-latency", *flag])
        assert result.exit_code == 2, result.output
        assert "sidecar" in result.output and flag[0].removeprefix("--").replace("-", "_") in result.output


def test_given_options_win_auto_contradicts_nothing_and_other_datasets_get_none(
    trained: tuple[Path, Path],
) -> None:
    _, ckpt = trained
    assert trained_data_options(str(ckpt), "imagefolder") == {
        "image_size": 10,
        "channels": "RGB",
        "on_bad_sample": "error",
    }
    given = {"channels": "auto", "on_bad_sample": "skip", "image_size": None}
    assert trained_data_options(str(ckpt), "manifest", given) == {
        "image_size": 10,
        "channels": "RGB",
        "on_bad_sample": "skip",
    }
    assert trained_data_options(str(ckpt), "digits") == {}
    with pytest.raises(ConfigError, match="image_size=10"):
        trained_data_options(str(ckpt), "imagefolder", {"image_size": 8})
