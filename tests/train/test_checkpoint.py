import json
import os
import pickle

import pytest
import torch

from distil.errors import CheckpointError
from distil.models import build_from_spec, model_spec
from distil.train.checkpoint import (
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
        with pytest.raises(CheckpointError, match="weights_only"):
            load_state_dict_file(evil)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


def test_missing_weights_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pt")
