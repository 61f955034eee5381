"""`train.fsdp`: the student and the teacher sharded with FSDP2 across two real CPU ranks (gloo, torchrun),
and the checks that refuse what it cannot do, on one process."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from pydantic import ValidationError
from safetensors.torch import load_file

from distil.api import distill
from distil.config import TrainConfig, parse_recipe
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.measure import split_metrics
from distil.models import create_model
from distil.run import run_pipeline
from distil.teachers.cache import choose_teacher_source
from distil.train import engine
from distil.train.engine import _check_fsdp_model
from distil.train.fsdp import check_fsdp, unit_classes
from distil.train.mutual import Cohort

pytest.importorskip("transformers")

LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def _lm(layers: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("hf-causal-lm", num_classes=259, config={**LLAMA, "num_hidden_layers": layers})


def _two_ranks(mixed_precision: str = "no") -> SimpleNamespace:
    return SimpleNamespace(
        num_processes=2, mixed_precision=mixed_precision, distributed_type=DistributedType.MULTI_CPU
    )


# -- on one process: what is refused, and why ------------------------------------------------------


def test_fsdp_options_that_cannot_combine_are_refused_by_the_config() -> None:
    assert TrainConfig(fsdp={"enabled": True, "units": ["LlamaDecoderLayer"]}).fsdp.units == [
        "LlamaDecoderLayer"
    ]
    with pytest.raises(ValidationError, match="compile=false and channels_last=false"):
        TrainConfig(fsdp=True, compile=True)
    with pytest.raises(ValidationError, match="channels_last"):
        TrainConfig(fsdp=True, channels_last=True)
    with pytest.raises(ValidationError, match=r"needs fsdp\.enabled=true"):
        TrainConfig(fsdp={"units": ["LlamaDecoderLayer"]})


def test_fsdp_needs_several_processes_and_no_fp16() -> None:
    one = SimpleNamespace(num_processes=1, mixed_precision="no")
    with pytest.raises(ConfigError, match=r"one process.*torchrun --nproc_per_node N"):
        check_fsdp(one, what="student_train.fsdp")
    with pytest.raises(ConfigError, match="use mixed_precision=bf16"):
        check_fsdp(_two_ranks("fp16"))
    check_fsdp(_two_ranks("bf16"))  # accepted


def test_a_recipe_with_an_fsdp_stage_on_one_process_fails_before_training(tmp_path: Path) -> None:
    recipe = parse_recipe({"data": {"name": "digits", "limit": 60}, "student_train": {"fsdp": True}})
    with pytest.raises(ConfigError, match=r"student_train.fsdp=true .* one process"):
        run_pipeline(recipe, tmp_path / "runs", show_progress=False)
    assert not list((tmp_path / "runs").glob("*/teacher.safetensors"))


def test_distill_with_fsdp_on_one_process_says_how_to_launch() -> None:
    data = load_dataset("digits", limit=60)
    teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    student = create_model("resnet8", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node N"):
        distill(teacher, student, data, TrainConfig(epochs=1, fsdp=True))


def test_the_trained_model_must_be_one_unhooked_model() -> None:
    model = _lm(1, 0)
    _check_fsdp_model(model, _two_ranks())  # a plain HF model carries no hooks of its own
    with pytest.raises(ConfigError, match="cohort"):
        _check_fsdp_model(Cohort([_lm(1, 0), _lm(1, 1)]), _two_ranks())
    handle = model.hf.model.layers[0].register_forward_hook(lambda *args: None)
    with pytest.raises(ConfigError, match=r"\['hf.model.layers.0'\] carry forward hooks.*kd, ce"):
        _check_fsdp_model(model, _two_ranks())
    handle.remove()


def test_units_are_the_transformer_blocks_unless_named() -> None:
    lm = _lm(2, 0)
    assert unit_classes(lm) == {"LlamaDecoderLayer"}  # the HF model's _no_split_modules
    assert unit_classes(lm, ["LlamaMLP"]) == {"LlamaMLP"}
    with pytest.raises(ConfigError, match=r"no module of that class.*LlamaDecoderLayer"):
        unit_classes(lm, ["GPT2Block"])
    net = create_model("resnet8", num_classes=10, in_channels=1, image_size=8)
    assert unit_classes(net) == set()  # no blocks declared: the whole model is one unit


def test_a_sharded_teacher_runs_live() -> None:
    source, reason = choose_teacher_source("auto", "none", sharded=True)
    assert source == "live" and "sharded" in reason
    with pytest.raises(ConfigError, match="teacher_cache=auto or off"):
        choose_teacher_source("on", "none", sharded=True)
    assert choose_teacher_source("off", "none", sharded=True) == ("live", "teacher_cache=off")


def test_an_accelerate_fsdp_launch_is_refused(monkeypatch) -> None:
    fake = SimpleNamespace(distributed_type=DistributedType.FSDP)
    monkeypatch.setattr(engine, "Accelerator", lambda **kwargs: fake)
    with pytest.raises(ConfigError, match=r"no --use_fsdp.*student_train.fsdp=true"):
        engine.make_accelerator("cpu")


# -- two ranks: sharded teacher and student, convergence, saved weights, resume ---------------------

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file
    from distil.api import distill
    from distil.config import TrainConfig, parse_recipe
    from distil.data import load_dataset
    from distil.measure import split_evaluation, split_metrics
    from distil.models import create_model
    from distil.train.distributed import close_process_group, sharded_metrics
    from distil.train.fsdp import shard_copy
    from distil.train.state import checkpointing

    torch.set_num_threads(1)
    out, corpus, precision = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    acc = Accelerator(cpu=True, mixed_precision=precision)
    rank = acc.process_index
    data = load_dataset("text", corpus, options={"block_size": 16})
    LLAMA = json.loads(sys.argv[4])
    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=data.num_classes, config={**LLAMA, "num_hidden_layers": 3})
    epochs = 3 if precision == "no" else 1
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, optimizer={"name": "adamw", "weight_decay": 0.0}, fsdp=True)

    def student():
        torch.manual_seed(1)
        return create_model("hf-causal-lm", num_classes=data.num_classes, config={**LLAMA, "num_hidden_layers": 2})

    with checkpointing(out / "state"):
        result = distill(teacher, student(), data, cfg, accelerator=acc)
    save_file(result.model.state_dict(), str(out / f"student{rank}.safetensors"))
    (out / f"history{rank}.json").write_text(json.dumps({"world": acc.num_processes, "history": result.history}))
    if precision != "no":
        close_process_group()
        sys.exit(0)

    # Evaluation in lockstep: 4 blocks per forward gives the two ranks' shards a different number of
    # batches (the one with fewer must still join every all-gather, or both wait forever).
    sharded = shard_copy(result.model, acc, frozen=False)
    found = sharded_metrics(acc, sharded, data.val, split_evaluation(data.task), batch_size=4)
    single, _ = split_metrics(result.model, data.val, data.task, batch_size=4)
    (out / f"lockstep{rank}.json").write_text(json.dumps({"sharded": found, "single": single, "val": len(data.val)}))

    # Against DDP: plain SGD with a clip that binds, so a wrong (per-shard) gradient norm or a missing
    # gradient average would show in the weights.
    for fsdp in (True, False):
        sgd = TrainConfig(epochs=1, batch_size=8, lr=0.5, optimizer={"momentum": 0.0, "weight_decay": 0.0}, grad_clip=0.05, fsdp=fsdp)
        trained = distill(teacher, student(), data, sgd, accelerator=acc).model
        save_file(trained.state_dict(), str(out / f"sgd-{'fsdp' if fsdp else 'ddp'}{rank}.safetensors"))

    # Resume: drop the newest state (the end of the last epoch); a fresh run continues from the one before.
    acc.wait_for_everyone()
    if acc.is_main_process:
        newest = sorted((out / "state").rglob("*.json"))[-1]
        newest.unlink()
        newest.with_suffix(".safetensors").unlink()
    acc.wait_for_everyone()
    with checkpointing(out / "state"):
        resumed = distill(teacher, student(), data, cfg, accelerator=acc)
    save_file(resumed.model.state_dict(), str(out / f"resumed{rank}.safetensors"))
    close_process_group()
    """
)


def _corpus(root: Path) -> Path:
    rng = random.Random(0)
    vocab = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "then", "sat", "on"]
    vocab += ["the", "mat"]
    root.mkdir(parents=True)
    for i in range(24):
        (root / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(60)))
    return root


def _torchrun(*args: str, cache: Path, timeout: int = 600) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTIL_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_two_ranks_distil_a_sharded_teacher_into_a_sharded_student(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "fp32"
    out.mkdir()
    _torchrun(str(script), str(out), str(corpus), "no", json.dumps(LLAMA), cache=tmp_path / "cache")
    runs = [json.loads((out / f"history{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in runs] == [2, 2]
    history = runs[0]["history"]

    # Both models are sharded: each rank holds about half of every parameter (dim 0 split in two),
    # the teacher in 4 units (3 blocks + the rest), the student in 3.
    teacher_full = sum(p.numel() for p in _lm(3, 0).parameters())
    student_full = sum(p.numel() for p in _lm(2, 1).parameters())
    for rank in (0, 1):
        record = runs[rank]["history"][0]
        t, s = record["teacher_fsdp"], record["fsdp"]
        assert t["parameters"] == teacher_full and t["units"] == 4
        assert s["parameters"] == student_full and s["units"] == 3
        assert abs(t["local"] - teacher_full / 2) < 0.01 * teacher_full
        assert abs(s["local"] - student_full / 2) < 0.01 * student_full
        assert record["teacher_source"] == "live" and "sharded" in record["teacher_source_reason"]
    assert sum(runs[r]["history"][0]["teacher_fsdp"]["local"] for r in (0, 1)) == teacher_full

    # It learns: the distillation loss falls epoch after epoch.
    losses = [r["train_loss"] for r in history]
    assert losses[0] > losses[1] > losses[2], losses

    # Every rank returns the whole trained student, the same one.
    w0, w1 = (load_file(out / f"student{r}.safetensors") for r in (0, 1))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # The saved weights load into a plain model whose single-process evaluation is the one reported.
    data = load_dataset("text", corpus, options={"block_size": 16})
    plain = create_model(
        "hf-causal-lm", num_classes=data.num_classes, config={**LLAMA, "num_hidden_layers": 2}
    )
    plain.load_state_dict(w0)
    single, _ = split_metrics(plain, data.val, data.task, batch_size=32)
    assert history[-1]["val_accuracy"] == single["accuracy"]
    assert history[-1]["val_perplexity"] == pytest.approx(single["perplexity"], rel=1e-5)
    assert history[-1]["val_loss"] == pytest.approx(single["loss"], rel=1e-5)

    # Evaluation with unequal batch counts per rank finishes, and equals one process's.
    for rank in (0, 1):
        lockstep = json.loads((out / f"lockstep{rank}.json").read_text())
        assert lockstep["val"] % 2 == 1  # the shards differ in size: one rank runs an extra batch
        assert lockstep["sharded"]["accuracy"] == lockstep["single"]["accuracy"]
        assert lockstep["sharded"]["loss"] == pytest.approx(lockstep["single"]["loss"], rel=1e-5)

    # The same SGD steps as DDP (up to the order of float sums: reduce-scatter vs all-reduce).
    start = _lm(2, 1).state_dict()
    ddp, fsdp = (load_file(out / f"sgd-{kind}0.safetensors") for kind in ("ddp", "fsdp"))
    for k in ddp:
        torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(ddp[k], start[k]) for k in ddp)  # it did train

    # A run resumed from the state of epoch 2 ends with the uninterrupted run's weights, bit for bit.
    for rank in (0, 1):
        resumed = load_file(out / f"resumed{rank}.safetensors")
        assert all(torch.equal(resumed[k], w0[k]) for k in w0)


@pytest.mark.slow
def test_two_ranks_distil_with_bf16_mixed_precision(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "bf16"
    out.mkdir()
    _torchrun(str(script), str(out), str(corpus), "bf16", json.dumps(LLAMA), cache=tmp_path / "cache")
    record = json.loads((out / "history0.json").read_text())["history"][0]
    assert 0 < record["train_loss"] < 10 and 1 < record["val_perplexity"] < 259
    # The parameters stay fp32 (bf16 is the all-gather and compute dtype only): so are the saved ones.
    weights = load_file(out / "student0.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.float32}


@pytest.mark.slow
def test_the_cli_runs_a_language_model_recipe_with_fsdp_stages_under_torchrun(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    model = {"model": "hf-causal-lm", "kwargs": {"config": {**LLAMA, "num_hidden_layers": 2}}}
    small = {
        "model": "hf-causal-lm",
        "kwargs": {"config": {**LLAMA, "hidden_size": 16, "num_hidden_layers": 2}},
    }
    train = {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "batch_size": 8, "fsdp": True}
    recipe = {
        "name": "lm-fsdp",
        "data": {"name": "text", "root": str(corpus), "block_size": 16, "val_fraction": 0.2},
        "teacher": model,
        "student": small,
        "teacher_train": train,
        "student_train": train,
        "kd": {"temperature": 1.0, "kd_weight": 0.5, "ce_weight": 0.5},
        "device": "cpu",
    }
    path = tmp_path / "recipe.json"  # JSON is YAML
    path.write_text(json.dumps(recipe))
    runs = tmp_path / "runs"
    args = [
        "-m",
        "distil.cli.app",
        "run",
        str(path),
        "--quiet",
        "--no-latency",
        "--out",
        str(runs),
        "--name",
        "r",
    ]
    _torchrun(*args, cache=tmp_path / "cache")
    records = [json.loads(line) for line in (runs / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records} == {"teacher", "student_scratch", "student_kd"}
    assert all(r["fsdp"]["local"] < r["fsdp"]["parameters"] for r in records)
    kd = next(r for r in records if r["stage"] == "student_kd")
    assert kd["teacher_source"] == "live" and kd["teacher_fsdp"]["local"] < kd["teacher_fsdp"]["parameters"]
    # The saved student is a whole, ordinary checkpoint.
    from distil.train.checkpoint import load_checkpoint

    student, _ = load_checkpoint(runs / "r" / "student_kd")
    assert sum(p.numel() for p in student.parameters()) == kd["fsdp"]["parameters"]
