"""Training states: a run stopped at any step boundary resumes to bit-identical weights, and every
damaged, foreign or torn state is detected instead of being loaded partially."""

from __future__ import annotations

import errno
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import distil.fileio
from distil.config import KDConfig, TrainConfig
from distil.data import load_dataset
from distil.errors import CheckpointError, TrainingError
from distil.losses import CELoss, build_loss
from distil.models import create_model
from distil.train.engine import fit
from distil.train.mutual import Cohort, MutualLoss
from distil.train.state import (
    TrainStateStore,
    capture_state,
    checkpointing,
    rank_local_state,
    restore_state,
    store_for,
)


class Crash(Exception):
    """Stands in for a kill: raised right after the n-th state reached the disk."""


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=200)


def _net(name: str = "smallnet", **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1, image_size=8, **kwargs)


def _crash_after(store: TrainStateStore, saves: int) -> TrainStateStore:
    original = store.save
    count = {"n": 0}

    def save(state):
        path = original(state)
        count["n"] += 1
        if count["n"] == saves:
            raise Crash
        return path

    store.save = save  # type: ignore[method-assign]
    return store


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# 180 train samples, batch 32, drop_last: 5 steps per epoch. checkpoint_every=3 puts states at
# steps 3, 5 (epoch end), 6, 9, 10 (epoch end)...: crashing after the 1st, 2nd or 4th save stops the
# run mid-epoch, exactly at an epoch end, and mid-epoch after an epoch end.
@pytest.mark.parametrize(
    ("optimizer", "model_kwargs", "saves"),
    [
        ("sgd", {}, 1),
        ("adam", {}, 2),
        ("adamw", {"dropout": 0.3}, 4),  # dropout draws from the global torch RNG every step
    ],
)
def test_resume_after_a_crash_ends_with_bit_identical_weights(
    digits, tmp_path: Path, optimizer: str, model_kwargs: dict, saves: int
) -> None:
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.01, optimizer=optimizer, checkpoint_every=3)
    reference = fit(_net(**model_kwargs), digits, cfg, CELoss())

    store = _crash_after(TrainStateStore(tmp_path, every=3), saves)
    with pytest.raises(Crash):
        fit(_net(**model_kwargs), digits, cfg, CELoss(), checkpoint=store)
    # The resumed process starts with other RNG states: the training state must restore them.
    torch.manual_seed(1234)
    np.random.seed(5)
    random.seed(7)
    resumed = fit(_net(**model_kwargs), digits, cfg, CELoss(), checkpoint=TrainStateStore(tmp_path, every=3))

    _assert_same_weights(reference.model, resumed.model)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in reference.history]
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in reference.history]


def test_mutual_learning_resumes_after_a_crash_with_bit_identical_students(digits, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.01, optimizer="adam", checkpoint_every=3)

    def cohort() -> Cohort:
        return Cohort([_net(dropout=0.3), _net("largenet", width=0.5)])

    reference = fit(cohort(), digits, cfg, MutualLoss(temperature=2.0), description="mutual")
    store = _crash_after(TrainStateStore(tmp_path, every=3), 1)  # mid-epoch, at step 3
    with pytest.raises(Crash):
        fit(cohort(), digits, cfg, MutualLoss(temperature=2.0), description="mutual", checkpoint=store)
    torch.manual_seed(1234)
    resumed = fit(
        cohort(),
        digits,
        cfg,
        MutualLoss(temperature=2.0),
        description="mutual",
        checkpoint=TrainStateStore(tmp_path, every=3),
    )

    _assert_same_weights(reference.model, resumed.model)
    keys = ("train_s0_loss", "train_s1_kd", "s0_val_accuracy", "s1_val_accuracy", "eval_accuracy")
    assert [[r[k] for k in keys] for r in resumed.history] == [
        [r[k] for k in keys] for r in reference.history
    ]


def test_trainable_loss_parts_and_global_rngs_are_restored(digits, tmp_path: Path) -> None:
    class AdapterLoss(torch.nn.Module):
        """A loss with its own trainable parameters (like a feature-KD adapter)."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(10))

        def forward(self, out, teacher_out, batch):
            ce = torch.nn.functional.cross_entropy(out * self.scale, batch["labels"])
            return {"loss": ce, "ce": ce}

    model, loss = _net(), AdapterLoss()
    cfg = TrainConfig(epochs=1, batch_size=32, optimizer="adam")
    fit(model, digits, cfg, loss)
    loss.scale.data.mul_(3)  # something the optimizer would not produce by itself
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = capture_state(
        model=model, optimizer=optimizer, scheduler=scheduler, epoch=0, batch=0, step=0, loss_module=loss
    )
    expected = (torch.rand(3), np.random.rand(3), random.random())
    TrainStateStore(tmp_path).save(state)
    loaded = TrainStateStore(tmp_path).latest()
    assert loaded is not None

    model2, loss2 = _net(), AdapterLoss()
    optimizer2 = torch.optim.Adam(list(model2.parameters()) + list(loss2.parameters()))
    scheduler2 = torch.optim.lr_scheduler.LambdaLR(optimizer2, lambda s: 1.0)
    restore_state(loaded, model=model2, optimizer=optimizer2, scheduler=scheduler2, loss_module=loss2)
    assert torch.equal(loss2.scale, loss.scale)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    # A state with loss parameters cannot be loaded into a run whose loss has none.
    with pytest.raises(CheckpointError, match="loss parameters"):
        restore_state(loaded, model=model2, optimizer=optimizer2, scheduler=scheduler2)


def test_each_data_parallel_rank_gets_its_own_rng_states_and_loss_sums_back(tmp_path: Path) -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    ranks, expected = [], []
    for rank in range(3):  # what gather_rank_states collects from 3 processes
        torch.manual_seed(10 + rank)
        np.random.seed(10 + rank)
        random.seed(10 + rank)
        ranks.append(rank_local_state({"loss": torch.tensor(float(rank) + 0.5)}))
        expected.append((torch.rand(3), np.random.rand(3), random.random()))
    torch.manual_seed(99)  # this process's own RNG must not leak into the state
    state = capture_state(
        model=model, optimizer=optimizer, scheduler=scheduler, epoch=0, batch=2, step=2, ranks=ranks
    )
    TrainStateStore(tmp_path).save(state)
    loaded = TrainStateStore(tmp_path).latest()
    assert loaded is not None and loaded.processes == 3
    for rank in (2, 0, 1):
        restore_state(loaded, model=model, optimizer=optimizer, scheduler=scheduler, rank=rank)
        assert torch.equal(torch.rand(3), expected[rank][0]), rank
        assert np.array_equal(np.random.rand(3), expected[rank][1])
        assert random.random() == expected[rank][2]
        assert loaded.rank_sums(rank) == {"loss": torch.tensor(float(rank) + 0.5)}
    assert loaded.sums == loaded.rank_sums(0)
    # A state saved by fewer processes gives the extra ranks rank 0's RNG states.
    restore_state(loaded, model=model, optimizer=optimizer, scheduler=scheduler, rank=5)
    assert torch.equal(torch.rand(3), expected[0][0])


def test_a_finished_stage_is_not_trained_again(digits, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32)
    first = fit(_net(), digits, cfg, CELoss(), checkpoint=TrainStateStore(tmp_path))
    calls = {"n": 0}

    def counting_loss(out, teacher_out, batch):
        calls["n"] += 1
        return CELoss()(out, teacher_out, batch)

    again = fit(_net(), digits, cfg, counting_loss, checkpoint=TrainStateStore(tmp_path))
    assert calls["n"] == 0
    _assert_same_weights(first.model, again.model)
    assert again.history == first.history


def test_states_are_plain_tensors_and_json_with_an_index(digits, tmp_path: Path) -> None:
    fit(
        _net(),
        digits,
        TrainConfig(epochs=1, batch_size=32, optimizer="adam"),
        CELoss(),
        checkpoint=TrainStateStore(tmp_path),
    )
    (sidecar,) = tmp_path.glob("*.json")
    meta = json.loads(sidecar.read_text())
    tensors = load_file(sidecar.with_suffix(".safetensors"))  # safetensors: no pickle anywhere
    assert meta["tensors"] == {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()}
    assert tensors["rng.torch"].dtype == torch.uint8
    assert {"rng.numpy", "rng.python", "model.fc2.weight"} <= set(tensors)
    assert any(k.startswith("optim.") and k.endswith(".exp_avg") for k in tensors)
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 0, 5)


def _saved_run(digits, directory: Path, cfg: TrainConfig) -> None:
    fit(_net(), digits, cfg, CELoss(), checkpoint=TrainStateStore(directory, every=cfg.checkpoint_every))


def test_a_state_from_another_recipe_is_refused(digits, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, batch_size=32)
    _saved_run(digits, tmp_path, cfg)
    with pytest.raises(CheckpointError, match=r"different run: recipe\.lr: saved 0\.05, now 0\.1"):
        fit(
            _net(), digits, cfg.model_copy(update={"lr": 0.1}), CELoss(), checkpoint=TrainStateStore(tmp_path)
        )
    # The checkpoint interval is not part of what was computed: changing it is allowed.
    fit(
        _net(),
        digits,
        cfg.model_copy(update={"checkpoint_every": 2}),
        CELoss(),
        checkpoint=TrainStateStore(tmp_path),
    )


def test_a_damaged_newest_state_falls_back_to_the_previous_one_with_a_warning(digits, tmp_path: Path) -> None:
    _saved_run(digits, tmp_path, TrainConfig(epochs=2, batch_size=32))
    store = TrainStateStore(tmp_path)
    newest = sorted(tmp_path.glob("*.safetensors"))[-1]
    blob = bytearray(newest.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit
    newest.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="SHA-256"):
        state = store.latest()
    assert state is not None and state.step == 5
    sorted(tmp_path.glob("*.safetensors"))[0].write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no usable training state"):
        store.latest()


def test_a_sidecar_whose_index_disagrees_with_the_tensors_is_an_error(digits, tmp_path: Path) -> None:
    _saved_run(digits, tmp_path, TrainConfig(epochs=1, batch_size=32))
    (sidecar,) = tmp_path.glob("*.json")
    meta = json.loads(sidecar.read_text())
    meta["tensors"]["model.fc2.weight"]["shape"] = [10, 1]
    sidecar.write_text(json.dumps(meta))
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=r"tensor list .*model\.fc2\.weight"):
        TrainStateStore(tmp_path).latest()


def test_what_a_kill_during_a_save_leaves_is_ignored_and_cleaned(digits, tmp_path: Path) -> None:
    _saved_run(digits, tmp_path, TrainConfig(epochs=1, batch_size=32))
    # A kill between the two renames leaves weights without a sidecar; a kill mid-write a temp file.
    (tmp_path / "e0001-s000000099.safetensors").write_bytes(b"half")
    (tmp_path / ".e0001-s000000100.safetensors.abc.tmp").write_bytes(b"half")
    store = TrainStateStore(tmp_path)
    state = store.latest()
    assert state is not None and state.step == 5
    store.save(state)  # the next save removes the leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e0001-s000000005.json",
        "e0001-s000000005.safetensors",
    ]


def test_only_the_newest_states_are_kept(digits, tmp_path: Path) -> None:
    _saved_run(digits, tmp_path, TrainConfig(epochs=2, batch_size=32, checkpoint_every=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e0001-s000000010.json",
        "e0001-s000000010.safetensors",
        "e0002-s000000010.json",
        "e0002-s000000010.safetensors",
    ]


def test_divergence_stops_the_run_and_keeps_the_last_good_state(digits, tmp_path: Path) -> None:
    cfg = TrainConfig(
        epochs=3, batch_size=32, lr=1e12, grad_clip=None, optimizer={"momentum": 0.0}, checkpoint_every=1
    )
    store = TrainStateStore(tmp_path, every=1)
    with pytest.raises(TrainingError, match=r"(NaN/Inf between steps|became NaN/Inf by step).*lr=1e\+12"):
        fit(_net(), digits, cfg, CELoss(), checkpoint=store)
    # What is on disk is loadable and finite: no diverged state replaced a good one.
    for sidecar in tmp_path.glob("*.json"):
        state = store.load(sidecar)
        assert all(torch.isfinite(v).all() for k, v in state.tensors.items() if k.startswith("model."))


def test_nan_in_the_weights_is_caught_even_when_the_loss_is_finite(digits, tmp_path: Path) -> None:
    model = _net()

    def poison(out, teacher_out, batch):
        with torch.no_grad():
            model.fc1.bias[0] = float("inf")  # the loss of this step is still finite
        return CELoss()(out, teacher_out, batch)

    with pytest.raises(TrainingError, match=r"parameter 'fc1.bias' became NaN/Inf by step 1"):
        fit(
            model,
            digits,
            TrainConfig(epochs=1, batch_size=32, checkpoint_every=1),
            poison,
            checkpoint=TrainStateStore(tmp_path, every=1),
        )
    assert not list(tmp_path.glob("*.json"))


def test_a_failing_writer_keeps_the_previous_state_and_says_why(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = distil.fileio.os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 6:  # two states reach the disk (weights, sidecar, directory), then it is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(distil.fileio.os, "fsync", fsync)
    store = TrainStateStore(tmp_path, every=1)
    with pytest.raises(
        TrainingError,
        match=r"No space left on device; the last good state \(e0000-s000000002.json\) is intact",
    ):
        fit(
            _net(),
            digits,
            TrainConfig(epochs=1, batch_size=32, checkpoint_every=1),
            CELoss(),
            checkpoint=store,
        )
    monkeypatch.setattr(distil.fileio.os, "fsync", real_fsync)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e0000-s000000001.json",
        "e0000-s000000001.safetensors",
        "e0000-s000000002.json",
        "e0000-s000000002.safetensors",
    ]
    state = store.latest()
    assert state is not None and state.step == 2


def test_checkpointing_block_gives_each_stage_its_own_store(digits, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, batch_size=32, checkpoint_every=4)
    assert store_for("teacher", cfg) is None
    with checkpointing(tmp_path):
        store = store_for("student kd/phase 2", cfg)
        assert store is not None and store.every == 4
        assert store.directory == tmp_path / "student-kd-phase-2"
        fit(
            _net(),
            digits,
            cfg,
            build_loss(
                KDConfig(temperature=2.0, kd_weight=0.5, ce_weight=0.5),
                student=nn.Identity(),
                teacher=nn.Identity(),
                sample_x=torch.zeros(2, 10),
                num_classes=10,
            ),
            teacher=lambda b: torch.zeros(len(b["labels"]), 10),
            description="kd",
        )
    assert (tmp_path / "kd" / "e0001-s000000005.json").is_file()
