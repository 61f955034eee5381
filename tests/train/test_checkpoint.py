import json
import os
import pickle
import warnings

import pytest
import torch

from distil.errors import CheckpointError
from distil.models import build_from_spec, model_spec
from distil.train.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_state_dict_file,
    load_state_dict_strict,
    read_sidecar,
    save_checkpoint,
)


def _model():
    spec = model_spec("tiny-cnn", num_classes=3, in_channels=1, image_size=8)
    return build_from_spec(spec), spec


def test_round_trip_restores_identical_weights_and_meta(tmp_path) -> None:
    model, spec = _model()
    weights = save_checkpoint(tmp_path / "m", model, spec, {"data": {"num_classes": 3}})
    assert weights.name == "m.safetensors"
    loaded, meta = load_checkpoint(tmp_path / "m.json")
    assert meta["spec"] == spec and meta["data"]["num_classes"] == 3
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2
        torch.testing.assert_close(a, b)


def test_tampered_weights_fail_the_hash_check(tmp_path) -> None:
    model, spec = _model()
    weights = save_checkpoint(tmp_path / "m", model, spec, {})
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path / "m")


def test_missing_or_foreign_sidecar(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_sidecar(tmp_path / "nothing")
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a distil checkpoint"):
        read_sidecar(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_sidecar(tmp_path / "y.json")


def test_plain_state_dict_files_load_strictly(tmp_path) -> None:
    model, _ = _model()
    pt = tmp_path / "w.pt"
    torch.save(model.state_dict(), pt)
    state = load_state_dict_file(pt)
    fresh, _ = _model()
    load_state_dict_strict(fresh, state, source=str(pt))
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())
    del state[next(iter(state))]
    with pytest.raises(CheckpointError, match="missing 1"):
        load_state_dict_strict(fresh, state, source=str(pt))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path) -> None:
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(CheckpointError, match="needs code to load"):
            load_state_dict_file(evil)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 4"])
def test_the_pickle_refusal_never_advises_unpickling(tmp_path, writer) -> None:
    """Issue 16.9: torch's own message says weights_only=False "will likely succeed", carries ANSI codes,
    and a UserWarning comes with it; distil's refusal says what to do instead, in plain text."""
    evil = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"w": _Evil()}, evil)  # torch's message names the global, in bold (ANSI codes)
    else:
        with open(evil, "wb") as f:
            pickle.dump({"w": _Evil()}, f, protocol=4)  # torch warns about the protocol
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning torch emits becomes a failure here
        with pytest.raises(CheckpointError) as info:
            load_state_dict_file(evil)
    message = str(info.value)
    assert "weights_only=False" not in message and "`weights_only` set to `False`" not in message
    assert "likely succeed" not in message and "add_safe_globals" not in message
    assert "\x1b" not in message
    assert "needs code" in message and "does not unpickle" in message
    assert "safetensors" in message and "state_dict()" in message
    assert f"distil import {evil}" in message and "--trust-pickle" in message  # the conversion, named
    assert not (tmp_path / "pwned").exists()


def test_missing_weights_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pt")


def test_checkpoint_paths_name_both_files_for_every_spelling(tmp_path) -> None:
    expected = (tmp_path / "m.safetensors", tmp_path / "m.json")
    for given in ("m", "m.json", "m.safetensors"):
        assert checkpoint_paths(tmp_path / given) == expected
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="0 checkpoints"):
        checkpoint_paths(run)
    model, spec = _model()
    save_checkpoint(run / "student", model, spec, {})
    assert checkpoint_paths(run) == (run / "student.safetensors", run / "student.json")
