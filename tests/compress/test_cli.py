"""End-to-end runs of `distil export / prune / quantize / compress / run` on tiny digits models."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.models import build_from_spec, model_spec
from distil.train.checkpoint import load_checkpoint, save_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("torch_pruning")

runner = CliRunner()
DATA = {"data": {"name": "digits"}}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    t_spec = model_spec("largenet", num_classes=10, in_channels=1, image_size=8, width=0.25)
    s_spec = model_spec("smallnet", num_classes=10, in_channels=1, image_size=8)
    save_checkpoint(root / "teacher", build_from_spec(t_spec), t_spec, DATA)
    save_checkpoint(root / "student", build_from_spec(s_spec), s_spec, DATA)
    return str(root / "teacher.json"), str(root / "student.json")


def test_export_writes_a_verified_onnx(ckpts: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "s.onnx"
    result = runner.invoke(app, ["export", ckpts[1], "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "top-1 agreement 100.00%" in " ".join(result.output.split())
    # Created like open() would (0644 under umask 022), not with mkstemp's owner-only 0600.
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_prune_writes_a_smaller_checkpoint_that_loads(ckpts: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    args = [
        "prune",
        ckpts[1],
        "--macs-reduction",
        "2",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--no-latency",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model, meta = load_checkpoint(out)
    assert meta["spec"]["name"] == "pruned"
    assert model.conv1.out_channels < 16
    assert "fewer" in result.output


def test_unstructured_prune_says_it_buys_no_speed(ckpts: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "sparse"
    args = [
        "prune",
        ckpts[1],
        "--method",
        "unstructured",
        "--ratio",
        "0.5",
        "--epochs",
        "0",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "neither smaller" in " ".join(result.output.split())


def test_prune_with_an_unknown_layer_fails_cleanly(ckpts: tuple[str, str], tmp_path: Path) -> None:
    args = ["prune", ckpts[1], "--ratio", "0.3", "--ignore", "fc_2", "--out", str(tmp_path / "x")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Did you mean 'fc2'" in " ".join(result.output.split())


def test_quantize_writes_int8(ckpts: tuple[str, str], tmp_path: Path) -> None:
    args = [
        "quantize",
        ckpts[1],
        "--format",
        "qdq",
        "--per-tensor",
        "--calibration-size",
        "64",
        "--out",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "int8.onnx").is_file()
    assert (tmp_path / "int8.onnx").stat().st_size < 0.5 * (tmp_path / "student.onnx").stat().st_size


def test_compress_chain_reports_every_stage(ckpts: tuple[str, str], tmp_path: Path) -> None:
    args = [
        "compress",
        *ckpts,
        "--out",
        str(tmp_path),
        "--no-latency",
        "--limit",
        "200",
        "--set",
        "compress.finetune.epochs=1",
        "--set",
        "compress.quantize.format=qdq",
        "--set",
        "compress.quantize.per_channel=false",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "compress.json").read_text())
    names = [m["name"] for m in summary["metrics"]]
    assert names == ["teacher.onnx", "student.onnx", "pruned.onnx", "pruned+kd.onnx", "int8.onnx"]
    rows = {m["name"]: m for m in summary["metrics"]}
    assert rows["pruned.onnx"]["macs"] < rows["student.onnx"]["macs"]
    assert rows["int8.onnx"]["bytes"] < rows["pruned+kd.onnx"]["bytes"] < rows["student.onnx"]["bytes"]
    assert all(v["top1_agreement"] == 1.0 for k, v in summary["verification"].items() if k != "int8.onnx")
    assert (tmp_path / "pruned_kd.safetensors").is_file()


@pytest.mark.slow
def test_run_recipe_with_a_compress_section(tmp_path: Path) -> None:
    args = [
        "run",
        "digits",
        "--out",
        str(tmp_path),
        "--quiet",
        "--no-latency",
        "--name",
        "c",
        "--set",
        "data.limit=300",
        "--set",
        "teacher_train.epochs=1",
        "--set",
        "student_train.epochs=1",
        "--set",
        "compress={finetune: {epochs: 1}, quantize: {mode: qat, format: qdq}}",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    names = [m["name"] for m in summary["metrics"]]
    assert names[-3:] == ["pruned+kd.onnx", "qat+kd.onnx", "int8.onnx"]
    assert (tmp_path / "c" / "compress" / "int8.onnx").is_file()


@pytest.mark.parametrize(
    ("command", "out"),
    [
        (["export", "S"], "o/s.onnx"),
        (["quantize", "S"], "o"),
        (["prune", "S", "--ratio", "0.3", "--epochs", "1", "--limit", "100"], "o/pruned"),
        (["compress", "T", "S"], "o"),
    ],
)
def test_an_unwritable_out_fails_at_once_with_a_message(
    ckpts: tuple[str, str], tmp_path: Path, command: list[str], out: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a directory cannot be made below a file, even by root
    args = [{"T": ckpts[0], "S": ckpts[1]}.get(a, a) for a in command]
    result = runner.invoke(app, [*args, "--out", str(blocker / out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "is not writable" in text and "a-file" in text and "choose another --out" in text
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "epoch" not in text.lower()  # failed before any fine-tuning


@pytest.fixture
def plain(ckpts: tuple[str, str], tmp_path: Path) -> str:
    """The student as a plain state_dict saved elsewhere (no distil sidecar)."""
    path = tmp_path / "plain.pt"
    torch.save(load_checkpoint(ckpts[1])[0].state_dict(), path)
    return str(path)


def test_export_and_prune_load_a_plain_state_dict_with_model(plain: str, tmp_path: Path) -> None:
    given = ["--model", "smallnet", "--data", "digits"]
    r = runner.invoke(app, ["export", plain, *given, "--out", str(tmp_path / "s.onnx")])
    assert r.exit_code == 0, r.output
    assert "top-1 agreement 100.00%" in " ".join(r.output.split())
    args = ["prune", plain, *given, "--ratio", "0.3", "--epochs", "0", "--limit", "100", "--no-latency"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "pruned")])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "pruned")[1]["spec"]["name"] == "pruned"


@pytest.mark.parametrize(
    ("given", "message"),
    [([], "--model NAME"), (["--model", "smallnet"], "add --data NAME")],
)
def test_a_plain_state_dict_without_model_or_data_says_what_to_add(
    plain: str, tmp_path: Path, given: list[str], message: str
) -> None:
    for command in (["quantize", plain], ["compress", plain, plain]):
        r = runner.invoke(app, [*command, *given, "--out", str(tmp_path / "o")])
        assert r.exit_code == 2, r.output
        assert message in " ".join(r.output.split())
        assert r.exception is None or isinstance(r.exception, SystemExit)


def test_prune_logs_jsonl_epochs_and_a_result_on_stdout(ckpts: tuple[str, str], tmp_path: Path) -> None:
    args = ["prune", ckpts[1], "--ratio", "0.3", "--epochs", "2", "--limit", "100", "--no-latency"]
    r = runner.invoke(app, [*args, "--log-format", "jsonl", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["epoch", "epoch", "result"]
    assert [m["name"] for m in events[-1]["metrics"]] == ["before", "pruned"]
    assert events[-1]["ratios"]["pruned"]["compression"] > 1
    assert Path(events[-1]["checkpoint"]).is_file()
