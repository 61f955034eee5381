"""`distil shrink`: budgets parsed, latency probed in a fresh process, candidates from the teacher's knobs,
the whole search end to end on tiny models (seed net, CIFAR ResNet, a user's factory), refusal and resume."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import ShrinkConfig, TrainConfig
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.models import build_from_spec, model_spec
from distil.shrink import architecture_candidates, build_candidate, parse_latency, parse_size, shrink_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("torch_pruning")

runner = CliRunner()
FAST = {"min_run_time": 0.1, "proxy_limit": 300, "prune_steps": 2}
ONE_EPOCH = TrainConfig(epochs=1, augment="none", batch_size=64)


def test_budgets_parse_with_units() -> None:
    assert parse_latency("0.3ms") == pytest.approx(0.3)
    assert parse_latency("300us") == pytest.approx(0.3)
    assert parse_latency("0.0003s") == pytest.approx(0.3)
    assert parse_latency(0.3) == pytest.approx(0.3)
    assert parse_size("200kB") == 200_000
    assert parse_size("1.5MB") == 1_500_000
    assert parse_size("64KiB") == 65_536
    with pytest.raises(ConfigError, match=r"0\.3ms"):
        parse_latency("fast")
    with pytest.raises(ConfigError, match="positive"):
        parse_size("0kB")


def test_probe_runs_in_another_process_and_reports_spread(tmp_path: Path) -> None:
    from distil.compress import export_onnx
    from distil.compress.latency_probe import probe_latency

    net = build_from_spec(model_spec("smallnet", 10, 1, 8))
    path = export_onnx(net, tmp_path / "s.onnx", (1, 8, 8))
    (rec,) = probe_latency([path], threads=1, batch=2, min_run_time=0.05)
    assert rec["q1_ms"] <= rec["median_ms"] <= rec["q3_ms"]
    assert rec["iqr_ms"] == pytest.approx(rec["q3_ms"] - rec["q1_ms"])
    assert rec["batch"] == 2 and rec["threads"] == 1 and rec["runs"] >= 3
    assert rec["bytes"] == path.stat().st_size
    # The probe script imports no torch and no distil: the timed process holds only onnxruntime.
    probe_src = Path(sys.modules["distil.compress.latency_probe"].__file__ or "").read_text()
    assert "import torch" not in probe_src and "from distil" not in probe_src.split("def probe_latency")[0]


def test_seed_and_resnet_candidates_come_from_the_teachers_knobs() -> None:
    t_spec = model_spec("largenet", 10, 1, 8, width=0.5)
    teacher = build_from_spec(t_spec)
    cands, family = architecture_candidates(t_spec, teacher, [0.5, 0.25])
    assert family == "seed net width"
    assert [c.spec["kwargs"]["width"] for c in cands if c.name.startswith("width-")] == [0.25, 0.125]
    # SmallNet's layout at the widths no wider than the teacher: a narrower head, per layer.
    assert [c.spec["kwargs"]["width"] for c in cands if c.spec["name"] == "smallnet"] == [
        2.0,
        1.5,
        1.0,
        0.75,
        0.5,
    ]
    r_spec = model_spec("resnet20", 10, 3, 16)
    resnet = build_from_spec(r_spec)
    cands, family = architecture_candidates(r_spec, resnet, [0.5])
    kinds = {c.kind for c in cands}
    assert family and kinds == {"depth", "width", "depth+width"}
    shallow = next(c for c in cands if c.name == "d8-w1")
    assert shallow.spec["kwargs"] == {"depth": 8, "num_filters": [16, 16, 32, 64]}
    # Initialised from the teacher by transfer: the stem is the teacher's, selected blocks copied.
    model, counts = build_candidate(shallow, resnet, torch.randn(1, 3, 16, 16))
    assert counts.get("random-init", 0) == 0
    assert torch.equal(model.conv1.weight, resnet.conv1.weight)
    per_stage = next(c for c in cands if c.name == "d20-w0.5/1")
    assert per_stage.spec["kwargs"]["num_filters"] == [8, 8, 16, 64]
    build_candidate(per_stage, resnet, torch.randn(1, 3, 16, 16))
    # A model without known knobs: no architecture candidates (pruning supplies them).
    assert architecture_candidates({"name": "x:y"}, torch.nn.Linear(2, 2)) == ([], None)


@pytest.fixture(scope="module")
def digits_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shrink")
    torch.manual_seed(0)
    data = load_dataset("digits", val_fraction=0.1)
    spec = model_spec("largenet", 10, 1, 8, width=0.25)
    teacher = build_from_spec(spec).requires_grad_(False)  # frozen, as every distilled teacher is
    cfg = ShrinkConfig(target_latency_ms=5.0, widths=[0.5, 0.25], **FAST)
    result = shrink_model(teacher, spec, data, cfg, out / "s", train_cfg=ONE_EPOCH)
    return out / "s", result.state


def test_search_delivers_a_remeasured_model_and_a_report(digits_search: tuple[Path, dict]) -> None:
    out, state = digits_search
    fin = state["final"]
    assert fin["meets_latency"] and fin["remeasured"]["median_ms"] <= 5.0
    assert Path(fin["path"]).is_file() and fin["bytes"] == Path(fin["path"]).stat().st_size
    # The winner's fp32 file and all four int8 variants were timed together; the fastest fitting one kept.
    int8 = {"int8 qoperator", "int8 qoperator per-channel", "int8 qdq", "int8 qdq per-channel"}
    assert set(fin["formats"]) == {"fp32"} | int8 and fin["format"] in fin["formats"]
    fitting = [f for f, r in fin["formats"].items() if r["median_ms"] <= 5.0]
    assert fin["format"] == min(fitting, key=lambda f: fin["formats"][f]["median_ms"])
    names = set(state["candidates"])
    assert {"width-0.5", "width-0.25"} <= names and any(n.startswith("pruned-") for n in names)
    teacher_params = state["teacher"]["params"]
    assert all(
        r["params"] < teacher_params for n, r in state["candidates"].items() if n.startswith("pruned-")
    )
    assert state["candidates"][state["winner"]]["status"] == "winner"
    assert all(r.get("status") for r in state["candidates"].values())  # every candidate says why
    assert state["rungs"] and state["rungs"][0]["accuracy"]
    report = (out / "report.md").read_text()
    assert "Winner" in report and "fresh process" in report and "IQR" in report
    assert (out / "plots" / "accuracy_vs_latency.png").stat().st_size > 0
    assert (out / "plots" / "accuracy_vs_size.png").stat().st_size > 0
    _model, meta = load_checkpoint(out / "model")
    assert meta["shrink"]["winner"] == state["winner"]


def test_search_resumes_without_redoing_work(
    digits_search: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, state = digits_search
    import distil.api
    import distil.compress.latency_probe as probe

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("work redone on resume")

    monkeypatch.setattr(distil.api, "distill", boom)
    monkeypatch.setattr(probe, "probe_latency", boom)
    torch.manual_seed(0)
    data = load_dataset("digits", val_fraction=0.1)
    spec = model_spec("largenet", 10, 1, 8, width=0.25)
    cfg = ShrinkConfig(target_latency_ms=5.0, widths=[0.5, 0.25], **FAST)
    again = shrink_model(build_from_spec(spec), spec, data, cfg, out, train_cfg=ONE_EPOCH)
    assert again.state["winner"] == state["winner"]
    assert again.final["remeasured"] == state["final"]["remeasured"]


def test_infeasible_budget_is_refused_before_training(tmp_path: Path) -> None:
    data = load_dataset("digits", val_fraction=0.1)
    spec = model_spec("smallnet", 10, 1, 8)
    cfg = ShrinkConfig(target_latency_ms=1e-5, widths=[0.5], prune=False, min_run_time=0.05)
    with pytest.raises(ConfigError, match=r"fastest reachable: [0-9.]+ ms \(width-0.5"):
        shrink_model(build_from_spec(spec), spec, data, cfg, tmp_path / "s", train_cfg=ONE_EPOCH)
    assert not list((tmp_path / "s" / "candidates").iterdir())  # nothing was trained
    with pytest.raises(ConfigError, match="give a budget"):
        shrink_model(build_from_spec(spec), spec, data, ShrinkConfig(), tmp_path / "t")


def test_cli_on_a_cifar_resnet_teacher(tmp_path: Path) -> None:
    import numpy as np

    g = np.random.default_rng(0)
    x = g.random((200, 3, 16, 16), dtype=np.float32)
    y = g.integers(0, 4, 200)
    np.savez(tmp_path / "synthetic.npz", x=x[:160], y=y[:160], x_test=x[160:], y_test=y[160:])
    torch.manual_seed(0)
    spec = model_spec("resnet14", 4, 3, 16)
    save_checkpoint(tmp_path / "teacher", build_from_spec(spec), spec, {"data": {"name": "npz"}})
    args = [
        "shrink",
        str(tmp_path / "teacher.json"),
        "--data",
        "npz",
        "--data-root",
        str(tmp_path / "synthetic.npz"),
    ]
    args += ["--target-latency", "50ms", "--out", str(tmp_path / "s"), "--log-format", "plain"]
    args += ["--set", "student_train.epochs=1", "--set", "student_train.augment=none"]
    settings = {**FAST, "widths": "[0.5]", "prune": "false", "max_candidates": 2}
    args += [f"--set=shrink.{k}={v}" for k, v in settings.items()]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "s" / "state.json").read_text())
    assert {r["kind"] for r in state["candidates"].values()} == {"depth", "width", "depth+width"}
    assert state["final"]["meets_latency"] and state["family"].startswith("CIFAR ResNet")
    _model, meta = load_checkpoint(tmp_path / "s" / "model")
    assert meta["spec"]["name"] == "cifar-resnet"


USER_MODULE = """
import torch
from torch import nn

def build(num_classes, in_channels, image_size):
    return nn.Sequential(
        nn.Conv2d(in_channels, 24, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(24 * image_size * image_size, 32), nn.ReLU(), nn.Linear(32, num_classes),
    )
"""


def test_cli_on_a_users_factory_prunes_to_the_measured_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shrink_user_net.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    spec = model_spec("shrink_user_net:build", 10, 1, 8)
    torch.manual_seed(0)
    teacher = build_from_spec(spec, trusted=["shrink_user_net:build"])
    save_checkpoint(tmp_path / "teacher", teacher, spec, {"data": {"name": "digits"}})
    args = [
        "shrink",
        str(tmp_path / "teacher.json"),
        "--model",
        "shrink_user_net:build",
        "--target-latency",
        "1ms",
        "--out",
        str(tmp_path / "s"),
        "--log-format",
        "plain",
        "--set",
        "student_train.epochs=1",
        "--set",
        "student_train.augment=none",
    ]
    args += [f"--set=shrink.{k}={v}" for k, v in FAST.items()]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "s" / "state.json").read_text())
    assert state["family"].startswith("none") and state["winner"].startswith("pruned-")
    assert state["prune_trace"] and state["final"]["meets_latency"]
    # The saved winner names the user's factory: it loads when the user names it, as everywhere else.
    load_checkpoint(tmp_path / "s" / "model", trusted_models=["shrink_user_net:build"])


def test_cli_refuses_an_infeasible_budget_with_exit_2(tmp_path: Path) -> None:
    spec = model_spec("smallnet", 10, 1, 8)
    save_checkpoint(tmp_path / "teacher", build_from_spec(spec), spec, {"data": {"name": "digits"}})
    args = [
        "shrink",
        str(tmp_path / "teacher.json"),
        "--target-latency",
        "10ns",
        "--out",
        str(tmp_path / "s"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "cannot read latency" in " ".join(result.output.split())
    args[3] = "0.00001ms"
    args += [
        "--set",
        "shrink.widths=[0.5]",
        "--set",
        "shrink.prune=false",
        "--set",
        "shrink.min_run_time=0.05",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "fastest reachable" in " ".join(result.output.split())


def test_a_new_budget_in_the_same_directory_reuses_only_the_measurements(
    digits_search: tuple[Path, dict], tmp_path: Path
) -> None:
    import shutil

    src, state = digits_search
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    data = load_dataset("digits", val_fraction=0.1)
    spec = model_spec("largenet", 10, 1, 8, width=0.25)
    cfg = ShrinkConfig(target_latency_ms=4.0, widths=[0.5, 0.25], prune=False, max_candidates=1, **FAST)
    again = shrink_model(build_from_spec(spec), spec, data, cfg, out, train_cfg=ONE_EPOCH)
    assert again.state["measured"]["width-0.5"] == state["measured"]["width-0.5"]  # not re-measured
    assert again.state["resumed_from_other_config"]["target_latency_ms"] == 5.0
    assert "rungs" not in again.state  # one candidate ranked: no halving, nothing reused from the old run


def test_a_winner_that_no_longer_fits_when_retimed_gives_way_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distil.compress.latency_probe as probe

    real = probe.probe_latency
    calls = {"n": 0}

    def slow_once_screened(paths: list, **kw: object) -> list:
        records = real(paths, **kw)  # type: ignore[arg-type]
        # Screening probes two files (fp32 + int8); the re-time before full training probes one.
        if (
            len(paths) == 1
            and calls["n"] == 0
            and "final" not in str(paths[0])
            and "model.onnx" not in str(paths[0])
        ):
            calls["n"] += 1
            records[0]["median_ms"] = 1e3  # a burst of load from another process
        return records

    monkeypatch.setattr(probe, "probe_latency", slow_once_screened)
    torch.manual_seed(0)
    data = load_dataset("digits", val_fraction=0.1)
    spec = model_spec("largenet", 10, 1, 8, width=0.25)
    cfg = ShrinkConfig(target_latency_ms=5.0, widths=[0.5, 0.25], prune=False, max_candidates=2, **FAST)
    result = shrink_model(build_from_spec(spec), spec, data, cfg, tmp_path / "s", train_cfg=ONE_EPOCH)
    first, second = result.state["confirm_checks"]
    assert not first["fits"] and second["fits"] and result.state["winner"] == second["name"]
    assert "re-timed over budget" in result.state["candidates"][first["name"]]["status"]


def test_budgets_that_are_not_finite_are_refused() -> None:
    from distil.errors import ConfigError
    from distil.shrink.search import parse_latency, parse_size

    for text in ("inf", "1e400"):
        with pytest.raises(ConfigError):
            parse_size(text)
    with pytest.raises(ConfigError):
        parse_latency("inf")


def test_a_bad_option_is_a_clear_error(tmp_path) -> None:
    from typer.testing import CliRunner

    from distil.cli.app import app

    r = CliRunner().invoke(
        app, ["shrink", "x.pt", "--target-latency", "1ms", "--batch", "0", "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "batch" in r.output and "Traceback" not in r.output


def test_latency_measurements_are_keyed_by_the_backend_setting() -> None:
    from distil.config import ShrinkConfig
    from distil.data import load_dataset
    from distil.models import model_spec
    from distil.shrink.search import _measurement_key

    data = load_dataset("digits", limit=50)
    spec = model_spec("tiny-cnn", num_classes=10, in_channels=1, image_size=8)
    one = _measurement_key(ShrinkConfig(target_latency_ms=1.0), spec, data)
    assert one == _measurement_key(ShrinkConfig(target_latency_ms=2.0), spec, data)  # the budget only
    assert one != _measurement_key(ShrinkConfig(target_latency_ms=1.0, threads=4), spec, data)
    assert one != _measurement_key(ShrinkConfig(target_latency_ms=1.0, batch=16), spec, data)
