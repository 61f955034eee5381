"""`train.compile`: a compiled run resumes exactly, and what it saves loads into an uncompiled model.

Compiling (inductor, a C++ compiler) takes tens of seconds on CPU, so these tests are `slow`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from distil.config import TrainConfig
from distil.data import load_dataset
from distil.losses import CELoss
from distil.models import create_model, model_spec
from distil.train.checkpoint import load_checkpoint, save_checkpoint
from distil.train.engine import fit
from distil.train.state import TrainStateStore
from tests.reliability.test_resume import Crash, _assert_same_weights, _crash_after

needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
pytestmark = [pytest.mark.slow, needs_compiler]

SPEC = model_spec("smallnet", num_classes=10, in_channels=1, image_size=8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=200)  # 180 train samples: 5 steps of 32 per epoch


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("smallnet", num_classes=10, in_channels=1, image_size=8, dropout=0.3)


# Dropout draws from the global RNG every step: the compiled graph must replay the restored state.
CFG = TrainConfig(epochs=2, batch_size=32, lr=0.01, optimizer="adam", checkpoint_every=3, compile=True)


@pytest.fixture(scope="module")
def reference(digits):
    """One uninterrupted compiled run, shared by both tests (each compile costs tens of seconds)."""
    return fit(_net(), digits, CFG, CELoss())


def test_a_compiled_run_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(
    digits, reference, tmp_path: Path
) -> None:
    cfg = CFG
    # States at steps 3, 5 (epoch end), 6, ...: stop after the first, mid-epoch.
    with pytest.raises(Crash):
        fit(_net(), digits, cfg, CELoss(), checkpoint=_crash_after(TrainStateStore(tmp_path, every=3), 1))
    torch.manual_seed(1234)  # the resumed process starts from other RNG states
    resumed = fit(_net(), digits, cfg, CELoss(), checkpoint=TrainStateStore(tmp_path, every=3))

    _assert_same_weights(reference.model, resumed.model)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in reference.history]
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in reference.history]


def test_a_compiled_model_saves_a_checkpoint_that_loads_into_an_uncompiled_one(
    digits, reference, tmp_path: Path
) -> None:
    trained = reference.model
    assert set(trained.state_dict()) == set(_net().state_dict())  # no `_orig_mod.` prefixes
    save_checkpoint(tmp_path / "student", trained, SPEC, {})

    loaded, _ = load_checkpoint(tmp_path / "student")
    _assert_same_weights(trained, loaded)
    x = digits.val.x[:16]
    trained.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x))
