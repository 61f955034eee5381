"""Issue 16.1: no file content (checkpoint sidecar, inherited recipe, run directory) chooses code to run.

A hostile sidecar names `os:system` (called with the sidecar's kwargs on the old code), a "pruned" spec
hides it as the base, or names a user module that records being imported, or a `pkg.module:function`
dataset. Every command that loads checkpoints must refuse them before anything is imported or called,
exit 2 with a message naming the code and the two fixes; the user naming the factory (or --trust-code)
makes the same file load.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import ModelConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.errors import CheckpointError, DistilError, UntrustedCodeError
from distil.models import build_from_spec, model_spec
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint
from distil.transfer.recipe import inherit_recipe

runner = CliRunner()
SIZES = {"num_classes": 10, "in_channels": 1, "image_size": 8}
DATA = {"data": {"name": "digits", "num_classes": 10}}

SENTINEL_SOURCE = """
from pathlib import Path
from torch import nn

Path({marker!r}).write_text("imported")  # importing this module is the side effect the tests watch for


def make(num_classes, in_channels, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))


def load():
    Path({marker!r}).write_text("called")
    raise RuntimeError("a dataset function chosen by a file was called")
"""


def _sentinel_model() -> nn.Module:
    """The sentinel's architecture, built here without importing the sentinel module."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


class Sentinel:
    """A user module on sys.path whose import writes `marker`; `name` is its `module:make` factory."""

    def __init__(self, root: Path) -> None:
        self.module = f"sentinel_{uuid.uuid4().hex[:12]}"
        self.marker = root / "IMPORTED"
        (root / f"{self.module}.py").write_text(SENTINEL_SOURCE.format(marker=str(self.marker)))
        self.factory = f"{self.module}:make"
        self.dataset = f"{self.module}:load"

    @property
    def imported(self) -> bool:
        return self.marker.exists() or self.module in sys.modules


@pytest.fixture
def sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sentinel]:
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.chdir(tmp_path)  # `touch PWNED` would land here
    s = Sentinel(code)
    yield s
    sys.modules.pop(s.module, None)


def _pwned(tmp_path: Path) -> bool:
    return (tmp_path / "PWNED").exists()


def _system_spec() -> dict[str, Any]:
    return {"name": "os:system", **SIZES, "kwargs": {"command": "touch PWNED"}}


def _pruned(base: dict[str, Any]) -> dict[str, Any]:
    return {"name": "pruned", **SIZES, "kwargs": {"base": base, "layers": {}}}


def _save(path: Path, spec: dict[str, Any], model: nn.Module | None = None, meta: Any = None) -> str:
    if model is None:
        model = build_from_spec(model_spec("tiny-cnn", **SIZES))
    save_checkpoint(path, model, spec, DATA if meta is None else meta)
    return str(path.with_suffix(".json"))


@pytest.fixture
def hostile(tmp_path: Path, sentinel: Sentinel) -> dict[str, str]:
    """Checkpoints whose sidecars name code: os:system, a pruned spec hiding it, a user module."""
    root = tmp_path / "ckpts"
    root.mkdir()
    return {
        "system": _save(root / "system", _system_spec()),
        "pruned-system": _save(root / "pruned_system", _pruned(_system_spec())),
        "sentinel": _save(
            root / "sentinel", {"name": sentinel.factory, **SIZES, "kwargs": {}}, _sentinel_model()
        ),
        "pruned-sentinel": _save(
            root / "pruned_sentinel",
            _pruned({"name": sentinel.factory, **SIZES, "kwargs": {}}),
            _sentinel_model(),
        ),
    }


def _refused(result: Any, name: str) -> None:
    out = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "cannot choose code to run" in out and repr(name) in out, out
    assert "--trust-code" in out and "name it yourself" in out, out


# ---------------------------------------------------------------------------------------- the Python API


@pytest.mark.parametrize("kind", ["system", "pruned-system", "sentinel", "pruned-sentinel"])
def test_load_checkpoint_refuses_code_named_by_the_sidecar(
    kind: str, hostile: dict[str, str], sentinel: Sentinel, tmp_path: Path
) -> None:
    with pytest.raises(UntrustedCodeError, match="cannot choose code to run") as info:
        load_checkpoint(hostile[kind])
    assert isinstance(info.value, CheckpointError)  # the CLI's exit-2 path, and what callers catch
    assert not _pwned(tmp_path) and not sentinel.imported


def test_build_from_spec_refuses_untrusted_factories_by_default(sentinel: Sentinel, tmp_path: Path) -> None:
    for spec in (_system_spec(), _pruned(_system_spec()), {"name": sentinel.factory, **SIZES, "kwargs": {}}):
        with pytest.raises(UntrustedCodeError, match="trusted="):
            build_from_spec(spec)
    assert not _pwned(tmp_path) and not sentinel.imported


def test_a_spec_nested_without_end_is_refused_before_building(tmp_path: Path) -> None:
    spec = model_spec("tiny-cnn", **SIZES)
    for _ in range(400):  # deep enough to exhaust the stack if each level were built in turn
        spec = _pruned(spec)
    path = _save(tmp_path / "deep", spec)
    with pytest.raises(CheckpointError, match="nests 'pruned' bases"):
        load_checkpoint(path, trust_code=True)  # trusting the code does not lift the limit


@pytest.mark.parametrize("kind", ["sentinel", "pruned-sentinel"])
def test_the_user_naming_the_factory_lets_the_checkpoint_load(
    kind: str, hostile: dict[str, str], sentinel: Sentinel
) -> None:
    model, meta = load_checkpoint(hostile[kind], trusted_models=[sentinel.factory])
    assert sentinel.imported and isinstance(model, nn.Sequential)
    # The user's recipe naming it (teacher.model: pkg.module:factory) counts as naming it.
    data = load_dataset("digits", val_fraction=0.0)
    teacher, spec = build_model(ModelConfig(model=sentinel.factory, checkpoint=hostile[kind]), data)
    assert spec == meta["spec"]
    torch.testing.assert_close(teacher.state_dict(), model.state_dict())


def test_trust_code_lets_any_factory_load(hostile: dict[str, str], sentinel: Sentinel) -> None:
    model, _ = load_checkpoint(hostile["sentinel"], trust_code=True)
    assert sentinel.imported and isinstance(model, nn.Sequential)


def test_a_recipe_naming_another_model_does_not_trust_the_sidecar(
    hostile: dict[str, str], sentinel: Sentinel, tmp_path: Path
) -> None:
    data = load_dataset("digits", val_fraction=0.0)
    for kind in ("sentinel", "system", "pruned-system"):
        with pytest.raises(UntrustedCodeError):
            build_model(ModelConfig(model="largenet", checkpoint=hostile[kind]), data)
    assert not _pwned(tmp_path) and not sentinel.imported


STRINGS = st.sampled_from(["os:system", "builtins:exec", "subprocess:run", "pruned", "tiny-cnn", "x"])


def _hostile_specs(sentinel: str) -> st.SearchStrategy[Any]:
    names = st.one_of(STRINGS, st.just(sentinel))
    leaf = st.fixed_dictionaries(
        {"name": names, "num_classes": st.just(10), "in_channels": st.just(1), "image_size": st.just(8)},
        optional={"kwargs": st.dictionaries(st.sampled_from(["command", "code", "base"]), names, max_size=2)},
    )
    return st.recursive(
        leaf,
        lambda inner: st.fixed_dictionaries(
            {"name": st.just("pruned"), **{k: st.just(v) for k, v in SIZES.items()}},
            optional={"kwargs": st.fixed_dictionaries({"base": inner}, optional={"layers": st.just({})})},
        ),
        max_leaves=4,
    )


def test_no_sidecar_content_imports_or_calls_code(tmp_path: Path, sentinel: Sentinel) -> None:
    """Property: whatever spec and dataset a sidecar holds, loading it never imports the sentinel, never
    calls os.system/exec/subprocess, and either loads a registered model or raises a DistilError."""
    weights = build_from_spec(model_spec("tiny-cnn", **SIZES))
    calls: list[str] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(spec=_hostile_specs(sentinel.factory), data_name=st.one_of(STRINGS, st.just(sentinel.dataset)))
    def check(spec: Any, data_name: str) -> None:
        path = _save(tmp_path / "h", spec, weights, {"data": {"name": data_name, "num_classes": 10}})
        with contextlib.suppress(DistilError):
            load_checkpoint(path)
        r = runner.invoke(app, ["eval", path, "--no-latency"])
        assert r.exit_code in (0, 2), r.output
        assert not calls and not _pwned(tmp_path) and not sentinel.imported, (spec, data_name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "system", lambda *a, **k: calls.append(f"os.system{a}{k}"))
        mp.setattr("subprocess.run", lambda *a, **k: calls.append(f"subprocess.run{a}{k}"))
        check()


# ----------------------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("kind", ["system", "pruned-system", "sentinel"])
@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{ckpt}", "--no-latency"],
        ["distill", "digits", "--teacher", "{ckpt}", "--no-latency", "--out", "{out}"],
        ["transfer", "digits", "--teacher", "{ckpt}", "--out", "{out}"],
        ["run", "digits", "--set", "teacher.checkpoint={ckpt}", "--no-latency", "--out", "{out}"],
        ["export", "{ckpt}", "--out", "{out}/m.onnx"],
        ["prune", "{ckpt}", "--ratio", "0.3", "--out", "{out}/p", "--no-latency"],
        ["quantize", "{ckpt}", "--out", "{out}"],
        ["compress", "{ckpt}", "{ckpt}", "--out", "{out}"],
        ["prune", "{plain}", "--teacher", "{ckpt}", "--ratio", "0.3", "--out", "{out}/p", "--no-latency"],
    ],
    ids=lambda c: " ".join(c[:2]) if isinstance(c, list) else c,
)
def test_every_command_refuses_code_named_by_a_sidecar(
    command: list[str], kind: str, hostile: dict[str, str], sentinel: Sentinel, tmp_path: Path
) -> None:
    plain = _save(tmp_path / "plain", model_spec("tiny-cnn", **SIZES))
    out = tmp_path / "out"
    args = [a.format(ckpt=hostile[kind], out=out, plain=plain) for a in command]
    result = runner.invoke(app, args)
    _refused(result, sentinel.factory if kind == "sentinel" else "os:system")
    assert not _pwned(tmp_path) and not sentinel.imported
    assert not out.exists() or not any(out.rglob("*"))  # nothing written


def test_eval_loads_the_factory_the_user_names_or_trusts(hostile: dict[str, str], sentinel: Sentinel) -> None:
    r = runner.invoke(app, ["eval", hostile["sentinel"], "--no-latency"])
    _refused(r, sentinel.factory)
    assert not sentinel.imported
    r = runner.invoke(app, ["eval", hostile["sentinel"], "--model", sentinel.factory, "--no-latency"])
    assert r.exit_code == 0, r.output
    assert sentinel.imported and "accuracy" in r.output
    r = runner.invoke(app, ["eval", hostile["pruned-sentinel"], "--trust-code", "--no-latency"])
    assert r.exit_code == 0, r.output


def test_a_sidecar_cannot_choose_a_dataset_function(tmp_path: Path, sentinel: Sentinel) -> None:
    path = _save(tmp_path / "d", model_spec("tiny-cnn", **SIZES), meta={"data": {"name": sentinel.dataset}})
    for args in (["eval", path, "--no-latency"], ["export", path, "--out", str(tmp_path / "m.onnx")]):
        r = runner.invoke(app, args)
        out = " ".join(r.output.split())
        assert r.exit_code == 2 and "dataset function" in out and f"--data {sentinel.dataset}" in out, out
    assert not sentinel.imported
    r = runner.invoke(app, ["eval", path, "--data", "digits", "--no-latency"])  # the user's own choice
    assert r.exit_code == 0, r.output
    assert not sentinel.imported


# ---------------------------------------------------------------------- recipes and run directories


def test_an_inherited_recipe_does_not_choose_where_distil_writes(tmp_path: Path) -> None:
    # A student's checkpoint reused as a teacher carries a cache directory in its saved recipe.
    teacher = StudentTrainConfig(teacher_cache={"dir": str(tmp_path / "elsewhere")}, epochs=3)
    resolved, records = inherit_recipe(teacher, StudentTrainConfig())
    assert resolved.teacher_cache.dir is None and resolved.epochs == 3
    record = next(r for r in records if r.field == "teacher_cache")
    assert record.source == "student" and "does not choose where distil writes" in record.reason
    mine = StudentTrainConfig(teacher_cache={"dir": str(tmp_path / "mine")})
    resolved, _ = inherit_recipe(teacher, mine, ["teacher_cache"])  # the user's own value wins
    assert resolved.teacher_cache.dir == str(tmp_path / "mine")
    # An older sidecar saved the cache keys flat: they are dropped, not refused, when inherited.
    old = {"epochs": 3, "teacher_cache": "auto", "teacher_cache_dir": str(tmp_path / "elsewhere")}
    resolved, _ = inherit_recipe(old, StudentTrainConfig())
    assert resolved.teacher_cache.dir is None and resolved.epochs == 3


def test_a_run_directory_cannot_point_the_report_outside_it(tmp_path: Path) -> None:
    from distil.report.rundata import load_run

    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"per_class_accuracy": [1.0, 0.0]}))
    run = tmp_path / "run"
    run.mkdir()
    metric = {"name": "../outside", "accuracy": 0.5, "agreement": None, "params": 1, "bytes": 1, "macs": 1}
    (run / "summary.json").write_text(json.dumps({"recipe": "r", "data": {}, "metrics": [metric]}))
    assert load_run(run).per_class == {}


def test_a_training_state_sidecar_cannot_name_another_weights_file(tmp_path: Path) -> None:
    from distil.train.state import TrainState, TrainStateStore

    store = TrainStateStore(tmp_path / "state")
    written = store.save(TrainState(epoch=1, batch=0, step=3, tensors={"w": torch.ones(2)}, meta={}))
    sidecar = written.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    (tmp_path / "other.safetensors").write_bytes(written.read_bytes())
    meta["weights"] = "../other.safetensors"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not written by distil"):
        store.load(sidecar)


def test_distill_with_trust_code_loads_the_teacher_the_sidecar_names(
    hostile: dict[str, str], sentinel: Sentinel, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    args = ["distill", "digits", "--teacher", hostile["sentinel"], "--out", str(out), "--name", "kd"]
    args += ["--set", "student_train.epochs=1", "--set", "data.limit=60", "--no-latency", "-q"]
    r = runner.invoke(app, args)
    _refused(r, sentinel.factory)
    assert not sentinel.imported
    r = runner.invoke(app, [*args, "--trust-code"])
    assert r.exit_code == 0, r.output
    assert sentinel.imported and (out / "kd" / "student_kd.safetensors").is_file()


@pytest.mark.parametrize("key", ["checkpoint_path", "cache_dir", "pretrained_cfg_overlay"])
def test_a_timm_spec_cannot_name_files_to_read_or_write(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """timm.create_model(checkpoint_path=...) loads (and may unpickle) a file; cache_dir chooses where it
    writes: a sidecar's timm kwargs must not reach it. A stub stands in for timm (not installed here)."""
    import types

    from distil.errors import ModelError
    from distil.models import registry

    calls: list[dict[str, Any]] = []
    timm = types.ModuleType("timm")
    timm.list_models = lambda pattern: [pattern]  # type: ignore[attr-defined]
    timm.create_model = lambda name, **kw: calls.append(kw) or nn.Linear(1, 1)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.setattr(registry, "is_timm_available", lambda: True)
    spec = {"name": "timm:resnet18", **SIZES, "kwargs": {key: "/tmp/evil.pth"}}
    with pytest.raises(ModelError, match="cannot be set"):
        build_from_spec(spec)
    assert not calls
    build_from_spec({**spec, "kwargs": {}})
    assert calls and calls[0]["pretrained"] is False
