"""Full disks, unwritable directories, out-of-memory errors, and the run directory's life cycle."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import distil.resources
from distil.cli.app import app
from distil.config import TrainConfig
from distil.data import TensorLoader, load_dataset
from distil.errors import ConfigError, DataError, TrainingError
from distil.losses import CELoss
from distil.models import create_model
from distil.resources import (
    check_disk_space,
    check_writable,
    estimate_run_bytes,
    oom_hint,
    preflight,
    state_bytes,
)
from distil.train.engine import fit
from distil.train.runs import RunDir, resolve_resume
from distil.train.state import TrainStateStore


def _net(name: str = "smallnet"):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1, image_size=8)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a real filesystem that fills up (needs root and mount; skipped otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# ------------------------------------------------------------------------------- disk space


def test_a_full_disk_during_training_keeps_the_last_good_state(tiny_fs: Path) -> None:
    data = load_dataset("digits", limit=200)
    model = _net("largenet")  # 342k parameters: weights + SGD momentum make a 2.6 MiB state
    cfg = TrainConfig(epochs=2, batch_size=32, checkpoint_every=1)
    size = state_bytes(model, cfg)
    assert size < 3 * 2**20 < 2 * size  # one state fits on the 3 MiB filesystem, two do not
    store = TrainStateStore(tiny_fs / "state", every=1)
    with pytest.raises(
        TrainingError,
        match=r"No space left on device; the last good state \(e0000-s000000001.json\) is intact",
    ):
        fit(model, data, cfg, CELoss(), checkpoint=store)
    names = sorted(p.name for p in (tiny_fs / "state").iterdir())
    assert not any(n.endswith(".tmp") for n in names), names
    state = store.latest()
    assert state is not None and all(
        f"{p.stem}.safetensors" in names for p in (tiny_fs / "state").glob("*.json")
    )


def test_preflight_refuses_a_run_that_does_not_fit(tiny_fs: Path) -> None:
    model = _net("largenet")
    need = estimate_run_bytes([(model, TrainConfig()), (_net(), TrainConfig())])
    with pytest.raises(TrainingError, match=r"not enough disk space .* MiB free, this run writes about"):
        preflight(tiny_fs / "runs", [(model, TrainConfig()), (_net(), TrainConfig())])
    assert need > 3 * 2**20


def test_disk_space_check_uses_the_free_space_of_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_disk_space(tmp_path / "not" / "yet", 1024)  # the nearest existing parent is measured
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(distil.resources.shutil, "disk_usage", lambda p: usage._replace(free=5 * 2**20))
    with pytest.raises(TrainingError, match=r"5\.0 MiB free, this run writes about 10\.0 MiB"):
        check_disk_space(tmp_path, 10 * 2**20)


def test_estimate_counts_checkpoints_kept_states_and_optimizer_slots() -> None:
    model = _net()
    weights = sum(t.numel() * 4 for t in model.state_dict().values())
    sgd, adam = TrainConfig(optimizer="sgd"), TrainConfig(optimizer="adam")
    assert state_bytes(model, adam) - state_bytes(model, sgd) == weights  # Adam keeps 2 slots, SGD 1
    one = estimate_run_bytes([(model, sgd)])
    assert one == weights + 3 * state_bytes(model, sgd) + distil.resources.MARGIN_BYTES


def test_unwritable_output_directories_are_config_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(
        ConfigError, match=r"output directory .*a-file/runs' is not writable.*choose another --out"
    ):
        check_writable(blocker / "runs")
    assert check_writable(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    # The probe and the directories made for it are gone: a command refused later leaves nothing.
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    check_writable(tmp_path / "old")
    assert (tmp_path / "old").is_dir() and list((tmp_path / "old").iterdir()) == []


def test_a_read_only_filesystem_is_reported_before_training(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = CliRunner().invoke(app, ["train", "--quiet", "--out", str(ro), "--set", "data.limit=100"])
        assert result.exit_code == 2
        assert "is not writable (Read-only file system)" in result.output
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


# ------------------------------------------------------------------------------- out of memory


def test_out_of_memory_names_the_batch_size_to_use() -> None:
    cfg = TrainConfig(batch_size=256)
    gpu = r"ran out of GPU memory .*--set teacher_train\.batch_size=128.*--set teacher_train\.fsdp=true"
    with pytest.raises(TrainingError, match=gpu), oom_hint({"teacher_train": cfg}):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    sharded = TrainConfig(batch_size=256, fsdp=True)
    with (
        pytest.raises(TrainingError, match=r"halves activation memory\.$"),
        oom_hint({"student_train": sharded}),
    ):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    cpu = r"ran out of CPU memory .*student_train\.batch_size=128"
    with pytest.raises(TrainingError, match=cpu), oom_hint({"student_train": cfg}):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    with pytest.raises(RuntimeError, match="shape mismatch"), oom_hint({"student_train": cfg}):
        raise RuntimeError("shape mismatch")  # not every RuntimeError is about memory


def test_the_cli_turns_an_oom_into_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr("distil.run.stages.train_model", oom)
    result = CliRunner().invoke(app, ["train", "--quiet", "--out", str(tmp_path), "--set", "data.limit=100"])
    assert result.exit_code == 2
    assert "ran out of GPU memory" in result.output and "teacher_train.batch_size=64" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing was trained: no partial run is kept


# ------------------------------------------------------------------------------- run directories


def _fake_state(run: RunDir) -> None:
    d = run.state_dir("teacher")
    d.mkdir(parents=True)
    (d / "e0000-s000000003.json").write_text("{}")


def test_a_failed_run_keeps_its_partial_directory_only_when_it_holds_a_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DataError), RunDir(tmp_path, "empty", exact=True):
        raise DataError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TrainingError), RunDir(tmp_path, "kept", exact=True) as run:
        _fake_state(run)
        raise TrainingError("NaN")
    assert run.path == tmp_path / ".kept.partial" and run.path.is_dir()
    assert f"continue it with the same command plus --resume {run.path}" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt), RunDir(tmp_path, "ctrl-c", exact=True) as run2:
        _fake_state(run2)
        raise KeyboardInterrupt
    assert run2.path.is_dir()


def test_resuming_drops_a_torn_log_line_logs_each_epoch_once_and_finishes(tmp_path: Path) -> None:
    with pytest.raises(TrainingError), RunDir(tmp_path, "r", exact=True) as run:
        run.log({"stage": "teacher", "epoch": 1, "train_loss": 1.0})
        _fake_state(run)
        with open(run.file("metrics.jsonl"), "a") as f:
            f.write('{"stage": "teacher", "ep')  # a kill in the middle of a write
        raise TrainingError("killed")
    with RunDir(tmp_path, "ignored", resume=tmp_path / ".r.partial") as run:
        assert run.resuming
        run.log({"stage": "teacher", "epoch": 1, "train_loss": 1.0})  # replayed by the resumed run
        run.log({"stage": "teacher", "epoch": 2, "train_loss": 0.5})
    assert run.path == tmp_path / "r" and not (run.path / "state").exists()
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_resume_paths_are_checked(tmp_path: Path) -> None:
    (tmp_path / ".a-1.partial").mkdir()
    (tmp_path / "done").mkdir()
    assert resolve_resume(tmp_path / ".a-1.partial") == tmp_path / ".a-1.partial"
    assert resolve_resume(tmp_path / "a-1") == tmp_path / ".a-1.partial"  # the final name works too
    with pytest.raises(ConfigError, match=r"no such directory\. Interrupted runs there: \.a-1\.partial"):
        resolve_resume(tmp_path / "nope")
    with pytest.raises(ConfigError, match="is a finished run"):
        resolve_resume(tmp_path / "done")
    result = CliRunner().invoke(app, ["train", "--quiet", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "cannot resume" in result.output


def test_a_diverged_cli_run_stops_with_the_cause_and_keeps_its_last_good_state(tmp_path: Path) -> None:
    args = ["train", "--quiet", "--no-latency", "--out", str(tmp_path), "--name", "nan"]
    sets = [
        "data.limit=200",
        "teacher.model=smallnet",
        "teacher_train.lr=1e12",
        "teacher_train.grad_clip=null",
    ]
    sets += [
        "teacher_train.optimizer.momentum=0",
        "teacher_train.checkpoint_every=1",
        "teacher_train.batch_size=16",
    ]
    result = CliRunner().invoke(app, [*args, *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 2
    assert "NaN/Inf" in result.output and "lr=1e+12" in result.output
    store = TrainStateStore(tmp_path / ".nan.partial" / "state" / "teacher")
    state = store.latest()
    assert state is not None
    assert all(torch.isfinite(v).all() for k, v in state.tensors.items() if k.startswith("model."))
    # Resuming needs the recipe the run was started with; a changed one is refused, naming the change.
    sets[2] = "teacher_train.lr=0.01"
    again = [*args, "--resume", str(tmp_path / ".nan.partial"), *(a for s in sets for a in ("--set", s))]
    result = CliRunner().invoke(app, again)
    assert result.exit_code == 2
    assert "belongs to a different run: recipe.lr: saved 1000000000000.0, now 0.01" in result.output


@pytest.mark.slow
def test_an_interrupted_pipeline_resumes_without_retraining_finished_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distil.config import load_recipe
    from distil.run import pipeline
    from distil.train.engine import fit as real_fit

    sets = [
        "data.limit=200",
        "teacher_train.epochs=1",
        "student_train.epochs=2",
        "teacher_train.batch_size=32",
    ]
    sets += ["student_train.batch_size=32", "student_train.checkpoint_every=3", "teacher.model=smallnet"]
    sets += [f"student_train.teacher_cache.dir={tmp_path / 'cache'}"]
    recipe = load_recipe(None, sets)
    quiet = {"show_progress": False, "measure_latency": False}
    reference = pipeline.run_pipeline(recipe, tmp_path / "ref", run_name="ref", **quiet)

    stages: list[str] = []

    def interrupted_fit(*args, **kwargs):
        stages.append(kwargs.get("description", "?"))
        if kwargs.get("description") == "student_kd":
            raise KeyboardInterrupt  # Ctrl-C as the last stage starts
        return real_fit(*args, **kwargs)

    monkeypatch.setattr("distil.api.fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(recipe, tmp_path / "runs", run_name="r", **quiet)
    partial = tmp_path / "runs" / ".r.partial"
    assert sorted(p.name for p in (partial / "state").iterdir()) == ["student_scratch", "teacher"]

    monkeypatch.setattr("distil.api.fit", real_fit)
    batches = {"n": 0}
    real_iter = TensorLoader.__iter__

    def counting_iter(self):
        for batch in real_iter(self):
            batches["n"] += 1
            yield batch

    monkeypatch.setattr(TensorLoader, "__iter__", counting_iter)
    result = pipeline.run_pipeline(recipe, tmp_path / "runs", resume=partial, **quiet)
    assert batches["n"] == 2 * 5  # only student_kd trains: 2 epochs of 5 batches
    assert result.run_dir == tmp_path / "runs" / "r"
    for name in ("teacher", "student_scratch", "student_kd"):
        ref = load_file(reference.run_dir / f"{name}.safetensors")
        got = load_file(result.run_dir / f"{name}.safetensors")
        assert all(torch.equal(ref[k], got[k]) for k in ref), name
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in records] == [
        ("teacher", 1),
        ("student_scratch", 1),
        ("student_scratch", 2),
        ("student_kd", 1),
        ("student_kd", 2),
    ]


def test_a_new_output_directory_removed_by_another_probe_is_made_again(tmp_path, monkeypatch) -> None:
    # Regression (slow FSDP CLI test): two torchrun ranks probe the same new --out; one removed the
    # directory it had created while the other was about to write its probe file there.
    import tempfile

    from distil import resources

    real, calls = tempfile.mkstemp, []

    def racing_mkstemp(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            (tmp_path / "new" / "runs").rmdir()  # the other rank's clean-up, between our mkdir and write
            raise FileNotFoundError(2, "No such file or directory")
        return real(*args, **kwargs)

    monkeypatch.setattr(resources.tempfile, "mkstemp", racing_mkstemp)
    assert resources.check_writable(tmp_path / "new" / "runs") == tmp_path / "new" / "runs"
    assert len(calls) == 2 and not (tmp_path / "new").exists()  # probed again; what it made is removed
