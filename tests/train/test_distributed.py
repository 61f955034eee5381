"""Two real data-parallel ranks on CPU (gloo), launched by torchrun like a multi-GPU run would be."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from distil.data import load_dataset
from distil.errors import ConfigError
from distil.measure import accuracy, predict, split_evaluation, split_metrics
from distil.models import create_model
from distil.train.distributed import rank_run_root, rank_zero_console, shard_bounds, sharded_metrics, use_cpu
from distil.train.engine import make_accelerator

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file
    from distil.api import distill
    from distil.config import StudentTrainConfig
    from distil.data import load_dataset
    from distil.models import create_model
    from distil.train.distributed import close_process_group

    torch.set_num_threads(1)
    out = sys.argv[1]
    acc = Accelerator(cpu=True)
    data = load_dataset("digits", limit=320, val_fraction=0.3)
    torch.manual_seed(0)
    teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    # Different initial students per rank: DDP must broadcast rank 0's weights for the ranks to agree.
    # A BatchNorm student: its running statistics must agree across ranks too.
    torch.manual_seed(100 + acc.process_index)
    student = create_model("resnet8", num_classes=10, in_channels=1, image_size=8)
    cfg = StudentTrainConfig(epochs=2, batch_size=16, lr=0.05, teacher_cache={"dir": out + "/cache"})
    log = open(f"{out}/epochs-rank{acc.process_index}.jsonl", "w")
    result = distill(teacher, student, data, cfg, accelerator=acc,
                     on_epoch_end=lambda r: log.write(json.dumps(r) + "\\n"))
    log.close()
    save_file(result.model.state_dict(), f"{out}/rank{acc.process_index}.safetensors")
    with open(f"{out}/history-rank{acc.process_index}.json", "w") as f:
        json.dump({"world": acc.num_processes, "history": result.history}, f)
    close_process_group()
    """
)

# FitNets adapters and CRD heads + memory banks: trainable loss parts outside the DDP-wrapped student.
LOSS_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file
    from distil.api import distill
    from distil.config import KDConfig, TrainConfig
    from distil.data import load_dataset
    from distil.losses.compose import build_loss
    from distil.models import create_model
    from distil.train.distributed import close_process_group

    torch.set_num_threads(1)
    out = sys.argv[1]
    acc = Accelerator(cpu=True)
    data = load_dataset("digits", limit=200, val_fraction=0.2)
    torch.manual_seed(0)
    teacher = create_model("resnet8x4", num_classes=10, in_channels=1, image_size=8)
    student = create_model("resnet8", num_classes=10, in_channels=1, image_size=8)
    kd = KDConfig(terms={"ce": 1.0, "fitnet": 1.0, "crd": 0.5},
                  options={"crd": {"feat_dim": 8, "n_negatives": 16}})
    # Each rank builds its adapters and heads from its own RNG: the ranks must agree on rank 0's.
    torch.manual_seed(100 + acc.process_index)
    loss = build_loss(kd, student=student, teacher=teacher, sample_x=data.train.x[:2], num_classes=10,
                      n_data=len(data.train), epochs=1)
    save_file({k: v.clone() for k, v in loss.state_dict().items()}, f"{out}/loss-init{acc.process_index}.safetensors")
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, augment="none")
    result = distill(teacher, student, data, cfg, loss=loss, accelerator=acc)
    r = acc.process_index
    save_file(result.model.state_dict(), f"{out}/student{r}.safetensors")
    save_file(loss.state_dict(), f"{out}/loss{r}.safetensors")
    json.dump({"steps": len(data.train) // 2 // 16, "batch": 16}, open(f"{out}/info{r}.json", "w"))
    close_process_group()
    """
)


def test_shards_cover_every_sample_once() -> None:
    for n in (0, 1, 7, 10, 11):
        for shards in (1, 2, 3, 4):
            covered = [i for r in range(shards) for i in range(*shard_bounds(n, shards, r))]
            assert covered == list(range(n))


def test_launched_ranks_on_a_cpu_only_machine_form_one_gloo_group(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert use_cpu("auto") and use_cpu("cpu") and not use_cpu("cuda")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not use_cpu("auto")  # one process: Accelerate picks the device itself


def test_only_rank_zero_writes_the_run_directory(tmp_path: Path) -> None:
    main = SimpleNamespace(is_main_process=True, num_processes=2, process_index=0)
    other = SimpleNamespace(is_main_process=False, num_processes=2, process_index=1)
    assert rank_run_root(main, tmp_path, "partial") == (tmp_path, "partial", None)
    root, resume, states = rank_run_root(other, tmp_path)
    assert resume is None and states is None
    assert root.is_dir() and tmp_path not in root.parents and root != tmp_path
    # Resuming: the other ranks still write privately, but read rank 0's training states.
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    root, resume, states = rank_run_root(other, tmp_path, partial)
    assert resume is None and states == partial / "state" and tmp_path not in root.parents
    with pytest.raises(ConfigError, match="no such directory"):
        rank_run_root(other, tmp_path, tmp_path / "missing")


def test_only_rank_zero_speaks(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RANK", "1")
    rank_zero_console().print("from rank 1")
    monkeypatch.setenv("RANK", "0")
    rank_zero_console().print("from rank 0")
    assert capsys.readouterr().out == "from rank 0\n"


@pytest.mark.slow
def test_under_torchrun_only_rank_zero_prints_the_final_table(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTIL_CACHE_DIR": str(tmp_path / "cache")}
    args = ["train", "digits", "--quiet", "--no-latency", "--out", str(tmp_path / "runs"), "--name", "t"]
    # 600 samples: each rank's shard holds several batches of 64.
    args += ["--set", "data.limit=600", "--set", "teacher_train.epochs=1"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "distil.cli.app",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("teacher checkpoint:") == 1, proc.stdout
    assert "distil-rank1" not in proc.stdout + proc.stderr  # no temporary run directory is named
    assert (tmp_path / "runs" / "t" / "teacher.safetensors").is_file()


@pytest.mark.slow
def test_two_gloo_ranks_train_identical_weights_and_report_single_process_accuracy(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTIL_CACHE_DIR": str(tmp_path / "unused")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / f"history-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in runs] == [2, 2]

    # Both ranks hold the same weights after training.
    w0, w1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0)

    # The reported accuracy is exactly what one process measures on the whole validation split.
    data = load_dataset("digits", limit=320, val_fraction=0.3)
    model = create_model("resnet8", num_classes=10, in_channels=1, image_size=8)
    model.load_state_dict(w0)
    single = accuracy(predict(model, data.val.x), data.val.y)
    assert runs[0]["history"][-1]["val_accuracy"] == single == runs[1]["history"][-1]["val_accuracy"]
    # Loss terms are averaged across ranks, so both report the same numbers.
    assert runs[0]["history"][-1]["train_loss"] == pytest.approx(
        runs[1]["history"][-1]["train_loss"], rel=1e-6
    )

    # The teacher cache was built once and used by both ranks; records are written by rank 0 only.
    assert [r["history"][0]["teacher_source"] for r in runs] == ["cache", "cache"]
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert len((tmp_path / "epochs-rank0.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "epochs-rank1.jsonl").read_text() == ""


def _torchrun(script: Path, out: Path, timeout: int = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTIL_CACHE_DIR": str(out / "unused")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_ranks_keep_loss_adapters_heads_and_crd_memory_identical(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(LOSS_WORKER)
    _torchrun(script, tmp_path)
    init0, init1 = (load_file(tmp_path / f"loss-init{r}.safetensors") for r in (0, 1))
    assert not torch.equal(
        init0["terms.fitnet.adapters.0.0.weight"], init1["terms.fitnet.adapters.0.0.weight"]
    )
    for name in ("student", "loss"):
        w0, w1 = (load_file(tmp_path / f"{name}{r}.safetensors") for r in (0, 1))
        assert w0.keys() == w1.keys()
        different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
        assert not different, f"{name} tensors differ between the ranks: {different}"
    trained = load_file(tmp_path / "loss0.safetensors")
    assert not torch.equal(
        trained["terms.fitnet.adapters.0.0.weight"], init0["terms.fitnet.adapters.0.0.weight"]
    )
    assert not torch.equal(trained["terms.crd.embed_s.weight"], init0["terms.crd.embed_s.weight"])
    # Each rank's memory holds the rows of both shards: every sample trained on either rank moved.
    info = json.loads((tmp_path / "info0.json").read_text())
    for bank in ("memory_s", "memory_t"):
        moved = (trained[f"terms.crd.{bank}"] != init0[f"terms.crd.{bank}"]).any(dim=1).sum()
        assert int(moved) == 2 * info["steps"] * info["batch"], bank


class _CountSamples:
    """A metric that is not a task's: the samples a shard saw, and the forward passes it took."""

    size, batch_size = 2, 3

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def sums(
        self, model, split, *, start: int, stop: int, batch_size: int, inference_mode: bool
    ) -> torch.Tensor:
        self.calls.append((start, stop, batch_size))
        return torch.tensor([stop - start, -(-(stop - start) // batch_size)], dtype=torch.float64)

    def finish(self, totals: torch.Tensor) -> dict[str, float | None]:
        return {"samples": float(totals[0]), "forwards": float(totals[1])}


def test_sharded_metrics_reduces_the_evaluation_it_is_given() -> None:
    data = load_dataset("digits", limit=50, val_fraction=0.2)
    model = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    accelerator = make_accelerator("cpu")
    counting = _CountSamples()
    n = len(data.val)
    assert sharded_metrics(accelerator, model, data.val, counting) == {"samples": n, "forwards": -(-n // 3)}
    assert counting.calls == [(0, n, 3)]  # one process: the whole split, at the evaluation's batch size
    # A task's evaluation is the same numbers as a whole-split one.
    found = sharded_metrics(accelerator, model, data.val, split_evaluation(data.task), batch_size=7)
    single, _ = split_metrics(model, data.val, data.task, batch_size=7)
    assert found == single
