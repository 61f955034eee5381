"""On-policy distillation: the coin, the rewritten batch, the loss on generated tokens, the checks made
before training, the records, exact resumption and two data-parallel ranks."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from distil.api import distill, distill_loss
from distil.config import FSDPConfig, GenerationConfig, KDConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.data.batch import GENERATED, IGNORE_INDEX, INPUTS, LABELS, MASK
from distil.errors import ConfigError, DataError, ModelError
from distil.losses.registry import TeacherNeeds
from distil.models import create_model
from distil.teachers.cache import choose_teacher_source
from distil.teachers.live import LiveTeacher, freeze
from distil.train.completions import Sampling
from distil.train.engine import fit
from distil.train.onpolicy import OnPolicy, check_on_policy
from distil.train.state import TrainStateStore

LLAMA = {
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}
ARITHMETIC = {"digits": 2, "train_size": 200, "test_size": 20}


@pytest.fixture(scope="module")
def sums():
    return load_dataset("arithmetic", options=ARITHMETIC)


def _lm(data: Any, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("hf-causal-lm", num_classes=data.num_classes, config=LLAMA)


def _cfg(lmbda: float, **kwargs: Any) -> StudentTrainConfig:
    generation = GenerationConfig(lmbda=lmbda, temperature=1.0, top_p=0.9)
    return StudentTrainConfig(
        **{"epochs": 1, "batch_size": 16, "lr": 0.01, "generation": generation, **kwargs}
    )


KD = KDConfig(kd_weight=0.5, ce_weight=0.5, temperature=1.0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# -- the coin and the rewritten batch ------------------------------------------------------------------


def test_the_coin_is_a_function_of_seed_and_step_with_probability_lmbda() -> None:
    half = OnPolicy(0.5, Sampling(), eos_id=0, seed=3)
    draws = [half.generates(s) for s in range(4000)]
    assert draws == [OnPolicy(0.5, Sampling(), eos_id=0, seed=3).generates(s) for s in range(4000)]
    assert abs(sum(draws) / len(draws) - 0.5) < 0.03
    assert draws != [OnPolicy(0.5, Sampling(), eos_id=0, seed=4).generates(s) for s in range(4000)]
    assert all(OnPolicy(1.0, Sampling(), eos_id=0, seed=3).generates(s) for s in range(200))
    assert not any(OnPolicy(0.0, Sampling(), eos_id=0, seed=3).generates(s) for s in range(200))


def test_a_generated_batch_is_marked_and_labelled_on_its_generated_tokens_only(sums) -> None:
    student = _lm(sums, 1)
    batch = next(iter(sums.train.batches(8)))
    eos = int(sums.extra["eos_id"])
    always = OnPolicy(1.0, Sampling(temperature=1.0), eos_id=eos, seed=0)
    out = always(student, batch, step=0)
    assert out[GENERATED] is True
    assert out[INPUTS].shape == batch[INPUTS].shape
    assert torch.equal(out[MASK], out[LABELS] != IGNORE_INDEX)
    # The prompts are kept: every position before the first label is the data's.
    first = (batch[LABELS] != IGNORE_INDEX).int().argmax(dim=1)
    for row, p in enumerate(first.tolist()):
        assert torch.equal(out[INPUTS][row, : p + 1], batch[INPUTS][row, : p + 1])
        assert (out[LABELS][row, :p] == IGNORE_INDEX).all()
    assert always.batches == 1 and always.tokens == int(out[MASK].sum())
    never = OnPolicy(0.0, Sampling(), eos_id=eos, seed=0)
    assert never(student, batch, step=0) is batch


def test_a_composed_loss_leaves_label_only_terms_out_of_a_generated_batch(sums) -> None:
    teacher, student = _lm(sums, 0), _lm(sums, 1)
    loss = distill_loss(KD, teacher=teacher, student=student, data=sums, cfg=_cfg(1.0))
    batch = next(iter(sums.train.batches(4)))
    s_out, t_out = torch.randn(4, 11, sums.num_classes), torch.randn(4, 11, sums.num_classes)
    plain = loss(s_out, t_out, batch)
    generated = loss(s_out, t_out, {**batch, GENERATED: True})
    assert float(plain["ce"]) > 0 and float(generated["ce"]) == 0.0
    assert torch.equal(generated["kd"], plain["kd"])
    assert torch.allclose(generated["loss"], 0.5 * plain["kd"])
    assert torch.allclose(plain["loss"], 0.5 * plain["kd"] + 0.5 * plain["ce"])


# -- training ------------------------------------------------------------------------------------------


def test_lmbda_zero_trains_exactly_as_without_on_policy_distillation(sums) -> None:
    teacher = _lm(sums, 0)
    before = distill(teacher, _lm(sums, 1), sums, StudentTrainConfig(epochs=1, batch_size=16, lr=0.01), KD)
    zero = distill(teacher, _lm(sums, 1), sums, _cfg(0.0), KD)
    _same_weights(before.model, zero.model)
    assert "on_policy_batches" not in zero.history[0]
    # A rewriter that never draws generation leaves the batches and the step bit for bit alone too.
    cfg = StudentTrainConfig(epochs=1, batch_size=16, lr=0.01)
    freeze(teacher)
    plain = fit(
        _lm(sums, 1),
        sums,
        cfg,
        distill_loss(KD, teacher=teacher, student=_lm(sums, 1), data=sums, cfg=cfg),
        teacher=LiveTeacher(teacher),
    )
    never = OnPolicy(0.0, Sampling(), eos_id=int(sums.extra["eos_id"]), seed=0)
    loss = distill_loss(KD, teacher=teacher, student=_lm(sums, 1), data=sums, cfg=cfg)
    rewritten = fit(_lm(sums, 1), sums, cfg, loss, teacher=LiveTeacher(teacher), rewriter=never)
    _same_weights(plain.model, rewritten.model)
    assert [r["train_loss"] for r in plain.history] == [r["train_loss"] for r in rewritten.history]


def test_the_teacher_scores_the_generated_batch_and_records_count_generation(sums) -> None:
    teacher, student = _lm(sums, 0), _lm(sums, 1)
    seen: list[dict[str, Any]] = []

    class Spy(LiveTeacher):
        def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            seen.append(batch)
            return super().__call__(batch)

    cfg = StudentTrainConfig(epochs=1, batch_size=16, lr=0.01)
    loss = distill_loss(KD, teacher=teacher, student=student, data=sums, cfg=cfg)
    always = OnPolicy(1.0, Sampling(), eos_id=int(sums.extra["eos_id"]), seed=0)
    result = fit(student, sums, cfg, loss, teacher=Spy(freeze(teacher)), rewriter=always)
    steps = len(sums.train) // 16
    assert len(seen) == steps and all(b.get(GENERATED) is True for b in seen)
    record = result.history[0]
    assert record["on_policy_batches"] == steps
    assert record["generated_tokens"] == sum(int(b[MASK].sum()) for b in seen)
    assert record["generation_seconds"] > 0 and record["generated_tokens_per_s"] > 0
    assert record["generation_seconds"] < record["seconds"]
    assert record["train_ce"] == 0.0 and record["train_kd"] > 0


def test_distill_runs_the_teacher_live_and_says_why(sums) -> None:
    result = distill(_lm(sums, 0), _lm(sums, 1), sums, _cfg(0.5), KD)
    record = result.history[0]
    assert record["teacher_source"] == "live"
    assert "on-policy" in record["teacher_source_reason"]
    assert 0 < record["on_policy_batches"] < len(sums.train) // 16


def test_what_on_policy_distillation_cannot_train_is_refused_before_training(sums, tmp_path: Path) -> None:
    teacher, student = _lm(sums, 0), _lm(sums, 1)
    # A recipe says so when it is loaded; a config built without validation, when distill starts.
    with pytest.raises(ValidationError, match=r"teacher_cache=on cannot be used with on-policy.*lmbda=0"):
        _cfg(0.5, teacher_cache={"mode": "on"})
    with pytest.raises(ValidationError, match="not supported with fsdp=true"):
        _cfg(0.5, fsdp=True)
    # The same decisions where they are made (a config built without validation reaches them).
    with pytest.raises(ConfigError, match=r"teacher_cache=on cannot be used with on-policy.*lmbda=0"):
        choose_teacher_source("on", "none", needs=TeacherNeeds(False), on_policy=0.5)
    assert choose_teacher_source("auto", "none", needs=TeacherNeeds(False), on_policy=0.5)[0] == "live"
    sharded = StudentTrainConfig.model_construct(fsdp=FSDPConfig(enabled=True), seed=0)
    with pytest.raises(ConfigError, match="fsdp=true shards"):
        check_on_policy(GenerationConfig(lmbda=0.5), sharded, sums, student, None)
    with pytest.raises(ConfigError, match="teacher-matching terms only"):
        distill(teacher, student, sums, _cfg(0.5), KDConfig(terms={"ce": 1.0}))
    with pytest.raises(ConfigError, match="teacher-matching terms only"):  # a pipeline checks the recipe's kd
        check_on_policy(GenerationConfig(lmbda=0.5), _cfg(0.5), sums, student, KDConfig(terms={"ce": 1.0}))
    check_on_policy(GenerationConfig(lmbda=0.0), _cfg(0.0), load_dataset("digits", limit=100), student, None)
    (tmp_path / "a.txt").write_text("plain text without prompts " * 40)
    text = load_dataset("text", tmp_path, options={"block_size": 16})
    with pytest.raises(
        DataError,
        match=r"one prompt/completion sample per row: training sample 0 is labelled.*data.name: chat",
    ):
        distill(_lm(text, 0), _lm(text, 1), text, _cfg(0.5), KD)
    digits = load_dataset("digits", limit=100)
    torch.manual_seed(0)
    net = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(DataError, match="one prompt/completion sample per row"):
        distill(net, net, digits, _cfg(0.5), KD)
    with pytest.raises(ModelError, match="cannot generate"):
        distill(teacher, _NoGenerate(student), sums, _cfg(0.5), KD)
    # The compiled decoding step asked of a student that cannot take a static cache: refused before training.
    compiled = _cfg(0.5).model_copy(update={"generation": GenerationConfig(lmbda=0.5, compile_step=True)})
    with pytest.raises(
        ModelError, match=r"compiled decoding step: distil's decoder cannot.*compile_step=false"
    ):
        check_on_policy(compiled.generation, compiled, sums, _GenerateOnly(student), None)
    check_on_policy(compiled.generation, compiled, sums, student, None)  # a llama takes it


class _NoGenerate(torch.nn.Module):
    """A language model without `generate` (not a causal LM as far as generation goes)."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(ids)


class _GenerateOnly(_NoGenerate):
    """A language model with a `generate` (transformers' would run it) that distil's decoder cannot drive."""

    def generate(self, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("not called by the checks")


def test_chat_data_trains_on_policy(tmp_path: Path) -> None:
    rows = [{"prompt": f"what is {i}+1?", "completion": f"{i + 1}"} for i in range(40)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    chat = load_dataset("chat", tmp_path, options={"block_size": 48})
    assert chat.extra["eos_id"] == "257"
    result = distill(_lm(chat, 0), _lm(chat, 1), chat, _cfg(1.0, batch_size=8), KD)
    assert result.history[0]["on_policy_batches"] == len(chat.train) // 8
    assert result.history[0]["generated_tokens"] > 0


def test_chat_whose_template_ends_the_turn_without_eos_is_refused_for_generation(tmp_path: Path) -> None:
    from distil.data.hf_tokenizer import train_byte_bpe
    from distil.teachers.generations import check_seq_kd

    rows = [{"prompt": f"what is {i}+1?", "completion": f"{i + 1}"} for i in range(40)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    name = train_byte_bpe([json.dumps(r) for r in rows] * 5, 300, tmp_path / "tok")
    config = tmp_path / "tok" / "tokenizer_config.json"
    template = (  # ends the assistant's turn with "</turn>\n": never the tokenizer's eos_token
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": template}))
    chat = load_dataset("chat", tmp_path, options={"block_size": 48, "tokenizer": name})
    student = _lm(chat, 1)
    with pytest.raises(DataError, match=r"without the end-of-sequence id 0 .*chat_template: builtin"):
        check_on_policy(GenerationConfig(lmbda=0.5), _cfg(0.5), chat, student, KD)
    with pytest.raises(DataError, match=r"seq_kd: training sample \d+ has a completion without"):
        check_seq_kd([student], chat)


class Crash(Exception):
    """Stands in for a kill right after the n-th training state reached the disk."""


def _crash_after(store: TrainStateStore, saves: int) -> TrainStateStore:
    original, count = store.save, {"n": 0}

    def save(state: Any) -> Any:
        path = original(state)
        count["n"] += 1
        if count["n"] == saves:
            raise Crash
        return path

    store.save = save  # type: ignore[method-assign]
    return store


def test_an_interrupted_on_policy_run_resumes_to_bit_identical_weights(sums, tmp_path: Path) -> None:
    teacher = freeze(_lm(sums, 0))
    cfg = _cfg(0.5, epochs=2, checkpoint_every=4)  # 11 steps an epoch: states at 4, 8, 11, 12...
    eos = int(sums.extra["eos_id"])

    def run(store: TrainStateStore | None) -> Any:
        student = _lm(sums, 1)
        loss = distill_loss(KD, teacher=teacher, student=student, data=sums, cfg=cfg)
        rewriter = OnPolicy(0.5, Sampling(temperature=1.0, top_p=0.9), eos_id=eos, seed=cfg.seed)
        return fit(
            student, sums, cfg, loss, teacher=LiveTeacher(teacher), checkpoint=store, rewriter=rewriter
        )

    reference = run(None)
    assert 0 < reference.history[0]["on_policy_batches"] < 11
    for saves in (1, 4):  # mid first epoch; mid second epoch (after the epoch-end state)
        root = tmp_path / f"crash{saves}"
        with pytest.raises(Crash):
            run(_crash_after(TrainStateStore(root, every=4), saves))
        torch.manual_seed(1234)  # a new process starts with other RNG states: the state restores them
        np.random.seed(5)
        random.seed(7)
        resumed = run(TrainStateStore(root, every=4))
        _same_weights(reference.model, resumed.model)
        assert resumed.history[-1]["train_loss"] == reference.history[-1]["train_loss"]
        # The records count the whole epoch's generation, before and after the interruption.
        for field in ("on_policy_batches", "generated_tokens"):
            assert [r[field] for r in resumed.history] == [r[field] for r in reference.history], field


WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file
    from distil.api import distill
    from distil.config import FSDPConfig, GenerationConfig, KDConfig, StudentTrainConfig
    from distil.data import load_dataset
    from distil.models import create_model
    from distil.train.distributed import close_process_group

    torch.set_num_threads(1)
    out = sys.argv[1]
    acc = Accelerator(cpu=True)
    data = load_dataset("arithmetic", options={"digits": 2, "train_size": 200, "test_size": 20})
    config = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 32}
    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=data.num_classes, config=config)
    torch.manual_seed(100 + acc.process_index)  # DDP gives every rank rank 0's start
    student = create_model("hf-causal-lm", num_classes=data.num_classes, config=config)
    cfg = StudentTrainConfig(epochs=2, batch_size=8, lr=0.01, generation=GenerationConfig(lmbda=1.0))
    result = distill(teacher, student, data, cfg, KDConfig(terms={"kd": 1.0}, temperature=1.0),
                     accelerator=acc)
    r = acc.process_index
    save_file(result.model.state_dict(), f"{out}/rank{r}.safetensors")
    open(f"{out}/record{r}.json", "w").write(json.dumps(result.history[-1]))
    close_process_group()
    """
)


@pytest.mark.slow
def test_two_gloo_ranks_each_generate_for_their_shard_and_end_with_identical_students(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0)
    records = [json.loads((tmp_path / f"record{r}.json").read_text()) for r in (0, 1)]
    steps = 180 // 2 // 8  # each rank's shard of 180 training problems, in batches of 8
    assert [r["on_policy_batches"] for r in records] == [steps, steps]
    # Generated tokens are summed over both ranks: both report the same total.
    assert records[0]["generated_tokens"] == records[1]["generated_tokens"] > 0


def test_a_state_saved_before_bundles_recorded_their_eos_id_still_resumes(sums) -> None:
    from distil.train.state import fingerprint, upgrade_fingerprint

    cfg = StudentTrainConfig(epochs=1)
    today = fingerprint("student_kd", cfg, sums.describe(), _lm(sums, 1))
    old_extra = {k: v for k, v in today["data"]["extra"].items() if k != "eos_id"}
    saved = {**today, "data": {**today["data"], "extra": old_extra}}
    assert saved != today and upgrade_fingerprint(saved, today) == today
    other = {**saved, "data": {**saved["data"], "extra": {**old_extra, "tokenizer": "other-v1"}}}
    assert upgrade_fingerprint(other, today) != today  # another tokenizer is still another run


def test_the_compiled_decoding_step_reaches_the_sampler_and_may_change_on_resume(sums) -> None:
    from distil.train.onpolicy import on_policy
    from distil.train.state import fingerprint, upgrade_fingerprint

    student = _lm(sums, 1)
    generation = GenerationConfig(lmbda=1.0, compile_step=True)
    rewriter = on_policy(generation, _cfg(1.0), sums, student, KDConfig(terms={"rkl": 1.0}))
    assert rewriter is not None and rewriter.sampling.compile_step
    # How fast completions are decoded is not what was trained: a run resumes with it turned on or off.
    on, off = (
        StudentTrainConfig(epochs=1, generation=GenerationConfig(compile_step=c)) for c in (True, False)
    )
    assert fingerprint("student_kd", on, {}, student) == fingerprint("student_kd", off, {}, student)
    today = fingerprint("student_kd", on, {}, student)
    before_generation = {k: v for k, v in today["recipe"].items() if k != "generation"}
    assert upgrade_fingerprint({**today, "recipe": before_generation}, today) == today


@pytest.mark.slow
def test_on_policy_training_with_the_compiled_step_trains_the_student_eager_decoding_trains(sums) -> None:
    from torch._dynamo.utils import counters

    weights = []
    for compiled in (False, True):
        generation = GenerationConfig(lmbda=1.0, temperature=1.0, compile_step=compiled)
        cfg = StudentTrainConfig(epochs=1, batch_size=16, lr=0.01, generation=generation)
        student = _lm(sums, 1)
        torch.manual_seed(5)
        torch._dynamo.reset()  # other tests' graphs of the step: a guard failing on them would count as a recompile
        graphs = counters["stats"]["unique_graphs"]
        # 13 batches: prompts of several lengths, weights updated between them, a last batch of 8 (eager).
        with torch._dynamo.config.patch(error_on_recompile=True):
            distill(_lm(sums, 0), student, sums, cfg, KD)
        assert counters["stats"]["unique_graphs"] - graphs == int(compiled)  # one graph, compiled once
        weights.append([p.detach().clone() for p in student.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))  # the same draws, the same student
