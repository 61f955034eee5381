"""The run/ entry points behind `distil prune/quantize/export/compress/shrink/eval/layers`, called from
Python with no CLI: the API can do what the commands do, and the commands' help is the options' docs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import typer

from distil.cli.app import app
from distil.config import load_recipe
from distil.errors import ConfigError
from distil.models import build_from_spec, model_spec
from distil.run.checkpoint_data import DataOptions
from distil.run.compress import CompressOptions, compress_checkpoints
from distil.run.evaluate import EvalOptions, evaluate_checkpoint_files
from distil.run.export import ExportOptions, export_checkpoint
from distil.run.layers import LayersOptions, model_layers
from distil.run.options import help_of
from distil.run.prune import PruneOptions, prune_checkpoint
from distil.run.quantize import QuantizeOptions, quantize_checkpoint
from distil.run.shrink import ShrinkOptions, shrink_checkpoint
from distil.train.checkpoint import load_checkpoint, save_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("torch_pruning")

DIGITS = DataOptions(limit=100)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    t_spec = model_spec("largenet", num_classes=10, in_channels=1, image_size=8, width=0.25)
    s_spec = model_spec("smallnet", num_classes=10, in_channels=1, image_size=8)
    save_checkpoint(root / "teacher", build_from_spec(t_spec), t_spec, {"data": {"name": "digits"}})
    save_checkpoint(root / "student", build_from_spec(s_spec), s_spec, {"data": {"name": "digits"}})
    return str(root / "teacher.json"), str(root / "student.json")


def test_prune_checkpoint_saves_a_smaller_model_and_measures_it(
    ckpts: tuple[str, str], tmp_path: Path
) -> None:
    lines: list[str] = []
    options = PruneOptions(
        ckpts[1], out=str(tmp_path / "pruned"), ratio=0.3, epochs=1, data=DIGITS, latency=False
    )
    result = prune_checkpoint(options, log=lines.append)
    model, meta = load_checkpoint(result.weights)
    assert meta["spec"]["name"] == "pruned" and model.conv1.out_channels < 16
    assert [m.name for m in result.metrics] == ["before", "pruned"]
    assert result.data_name == "digits" and "fewer" in lines[0]


def test_prune_options_are_checked_before_anything_is_loaded(tmp_path: Path) -> None:
    # The checkpoint does not exist: the option error must come first.
    with pytest.raises(ConfigError, match="--ratio"):
        prune_checkpoint(PruneOptions(str(tmp_path / "missing"), out=str(tmp_path / "p")))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        prune_checkpoint(PruneOptions(str(tmp_path / "missing"), out=str(blocker / "p"), ratio=0.3))


def test_quantize_checkpoint_writes_int8_and_reports_its_choice(
    ckpts: tuple[str, str], tmp_path: Path
) -> None:
    options = QuantizeOptions(
        ckpts[1],
        out=str(tmp_path / "q"),
        format="qoperator",
        per_channel=False,
        calibration_size=64,
        data=DIGITS,
    )
    result = quantize_checkpoint(options)
    assert result.int8_path.is_file()
    assert result.details["format"] == "qoperator" and result.details["per_channel"] is False
    assert result.metrics[-1].name == "int8.onnx"


def test_export_checkpoint_writes_a_verified_onnx(ckpts: tuple[str, str], tmp_path: Path) -> None:
    result = export_checkpoint(ExportOptions(ckpts[1], out=str(tmp_path / "s.onnx")))
    assert result.path.is_file() and result.size_bytes > 0 and result.opset == 17
    assert result.check.top1_agreement == 1.0
    beside = export_checkpoint(ExportOptions(ckpts[1], data=DIGITS))  # default: next to the checkpoint
    assert beside.path == Path(ckpts[1]).with_suffix(".onnx")


def test_compress_checkpoints_runs_the_recipes_chain(ckpts: tuple[str, str], tmp_path: Path) -> None:
    recipe = load_recipe(
        None,
        [
            "compress.prune.ratio=0.3",
            "compress.finetune.epochs=1",
            "compress.quantize.format=qoperator",
            "compress.quantize.per_channel=false",
        ],
    )
    options = CompressOptions(*ckpts, recipe=recipe, out=str(tmp_path / "c"), latency=False, limit=100)
    outcome = compress_checkpoints(options)
    names = [m.name for m in outcome.result.metrics]
    assert names[0] == "teacher.onnx" and "int8.onnx" in names and "pruned+kd.onnx" in names
    assert (tmp_path / "c" / "compress.json").is_file() and outcome.data_name == "digits"


def test_shrink_checkpoint_checks_the_budget_then_refuses_an_infeasible_one(tmp_path: Path) -> None:
    spec = model_spec("smallnet", 10, 1, 8)
    save_checkpoint(tmp_path / "teacher", build_from_spec(spec), spec, {"data": {"name": "digits"}})
    teacher = str(tmp_path / "teacher.json")
    with pytest.raises(ConfigError, match="give a budget"):
        shrink_checkpoint(ShrinkOptions(teacher, out=str(tmp_path / "s")))
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        shrink_checkpoint(ShrinkOptions(teacher, target_size="1MB", backend="tflite"))
    recipe = load_recipe(None, ["shrink.widths=[0.5]", "shrink.prune=false", "shrink.min_run_time=0.05"])
    lines: list[str] = []
    options = ShrinkOptions(teacher, target_latency="0.00001ms", recipe=recipe, out=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="fastest reachable"):
        shrink_checkpoint(options, log=lines.append)
    # Without recipe_data the teacher's own dataset is read, not the (default) recipe's.
    assert "smallnet teacher on digits" in lines[0]


def test_evaluate_checkpoint_files_measures_each_against_the_first(ckpts: tuple[str, str]) -> None:
    result = evaluate_checkpoint_files(EvalOptions(ckpts, latency=False))
    assert [m.name for m in result.metrics] == ["teacher", "student"]
    assert result.data_name == "digits" and result.test_samples > 0
    with pytest.raises(ConfigError, match="3 model names for 2 checkpoints"):
        evaluate_checkpoint_files(EvalOptions(ckpts, model_name=("a", "b", "c")))


def test_model_layers_lists_shapes_and_proposes_pairs() -> None:
    result = model_layers(LayersOptions("smallnet", teacher="largenet", input_shape=(1, 8, 8)))
    assert any(r.path == "conv1" and tuple(r.shape) == (16, 8, 8) for r in result.layers)
    assert ("relu2", "relu2") in result.pairs
    with pytest.raises(ConfigError, match="C,H,W"):
        model_layers(LayersOptions("smallnet", input_shape=(3, 4)))


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("prune", PruneOptions),
        ("quantize", QuantizeOptions),
        ("export", ExportOptions),
        ("compress", CompressOptions),
        ("shrink", ShrinkOptions),
        ("layers", LayersOptions),
        ("eval", EvalOptions),
    ],
)
def test_every_documented_setting_is_the_commands_help(command: str, options: type) -> None:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    shown = {getattr(param, "help", None) for param in click_command.params}
    # The shared ones (--data-root, --model, --trust-code...) are cli/options.py's, or a recipe (--recipe).
    shared = {"data", "model_name", "trust_code", "recipe", "recipe_data"}
    documented = [f.name for f in dataclasses.fields(options) if "doc" in f.metadata and f.name not in shared]
    assert documented
    for name in documented:
        assert help_of(options, name) in shown, name
    for f in dataclasses.fields(options):  # every setting is documented, for the API reference too
        assert help_of(options, f.name)
