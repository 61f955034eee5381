"""`distil import`: a user's weights as safetensors; a pickled module only with --trust-pickle."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from distil.cli.app import app

runner = CliRunner()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _text(result) -> str:
    return " ".join(result.output.split())  # Rich wraps long lines


def _assert_same_tensors(path: Path, model: nn.Module) -> None:
    loaded = load_file(str(path))
    expected = model.state_dict()
    assert sorted(loaded) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, atol=0, rtol=0)


def test_a_state_dict_file_is_imported_without_unpickling(tmp_path: Path) -> None:
    model = _model()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    r = runner.invoke(app, ["import", str(tmp_path / "w.pth"), str(tmp_path / "w.safetensors")])
    assert r.exit_code == 0, r.output
    assert "nothing unpickled" in _text(r)
    _assert_same_tensors(tmp_path / "w.safetensors", model)


def test_a_pickled_module_is_refused_without_trust_and_imported_with_it(tmp_path: Path) -> None:
    model = _model()
    torch.save(model, tmp_path / "m.pt")  # the whole module: loading it needs code
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["import", str(tmp_path / "m.pt"), str(out)])
    assert r.exit_code == 2, r.output
    assert "--trust-pickle" in _text(r) and "runs the code" in _text(r)
    assert _text(r).count("--trust-pickle") == 1  # the loader's own hint is not repeated
    assert not out.exists()  # nothing half-written
    r = runner.invoke(app, ["import", str(tmp_path / "m.pt"), str(out), "--trust-pickle"])
    assert r.exit_code == 0, r.output
    assert "unpickled (--trust-pickle)" in _text(r)
    _assert_same_tensors(out, model)


def test_a_checkpoint_dict_with_a_model_entry_is_imported_with_trust(tmp_path: Path) -> None:
    model = _model()
    torch.save({"model": model, "epoch": 3, "note": "mine"}, tmp_path / "ckpt.pt")
    r = runner.invoke(
        app, ["import", str(tmp_path / "ckpt.pt"), str(tmp_path / "c.safetensors"), "--trust-pickle"]
    )
    assert r.exit_code == 0, r.output
    _assert_same_tensors(tmp_path / "c.safetensors", model)


def test_an_output_that_is_not_safetensors_and_a_missing_source_are_errors(tmp_path: Path) -> None:
    torch.save(_model().state_dict(), tmp_path / "w.pth")
    r = runner.invoke(app, ["import", str(tmp_path / "w.pth"), str(tmp_path / "w.pt")])
    assert r.exit_code == 2 and "OUT.safetensors" in _text(r)
    r = runner.invoke(app, ["import", str(tmp_path / "nope.pth"), str(tmp_path / "x.safetensors")])
    assert r.exit_code == 2 and "does not exist" in _text(r)
