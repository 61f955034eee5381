"""Language models through the one pipeline: bundle sizing, per-epoch and final measurement, the report's
LM rows, generation latency and samples, the tokenizer check, and `distil demo --task lm`."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import ModelConfig, parse_recipe
from distil.data import load_dataset
from distil.data.text import load_text
from distil.data.tokenize import ByteTokenizer
from distil.errors import ConfigError, DataError, ModelError
from distil.measure import (
    count_macs,
    measure_latency,
    next_token_agreement,
    perplexity,
    predict,
    split_evaluation,
    split_metrics,
)
from distil.measure.lm import greedy_ids
from distil.models import create_model
from distil.run import run_pipeline
from distil.run.lm_report import NEW_TOKENS, fixed_prompts, lm_section
from distil.train.build import build_model, check_checkpoint_tokenizer
from distil.train.distributed import sharded_metrics
from distil.train.engine import make_accelerator

pytest.importorskip("transformers")

TINY = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
SMALLER = {**TINY, "hidden_size": 16, "intermediate_size": 32}


def _corpus(root: Path, files: int = 24, words: int = 60) -> Path:
    rng = random.Random(0)
    vocab = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "and",
        "then",
        "sat",
        "on",
        "the",
        "mat",
    ]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(words)))
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return _corpus(tmp_path / "corpus")


def _lm(config: dict = TINY, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("hf-causal-lm", num_classes=ByteTokenizer().vocab_size, config=config)


def test_a_language_model_bundle_sizes_models_by_its_vocabulary(corpus: Path) -> None:
    data = load_dataset("text", corpus, options={"block_size": 32})
    assert data.is_tokens and not data.is_tabular
    assert (data.num_classes, data.in_channels, data.image_size) == (259, 1, 1)
    assert data.input_shape == (32,)
    assert data.extra["tokenizer_name"] == "byte"


def test_text_options_reach_the_reader_and_foreign_ones_are_named(corpus: Path) -> None:
    data = load_dataset("text", corpus, options={"block_size": 16, "split_by": "blocks"})
    assert data.input_shape == (16,) and data.extra["split_by"] == "blocks"
    with pytest.raises(ConfigError, match="text readers"):
        load_dataset("digits", options={"block_size": 16})


def test_python_docs_without_the_package_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"apt-get install python3\.11-doc"):
        load_dataset("python-docs", tmp_path)


def test_streaming_metrics_equal_the_whole_logits_formulas(corpus: Path) -> None:
    data = load_text(corpus, block_size=32)
    teacher, student = _lm(TINY, 0), _lm(SMALLER, 1)
    x = data.test.head(len(data.test))
    y = torch.cat([b["labels"] for b in data.test.batches(64)])
    t_logits, s_logits = predict(teacher, x), predict(student, x)
    _, reference = split_metrics(teacher, data.test, "language-modeling", batch_size=3, keep_predictions=True)
    found, _ = split_metrics(student, data.test, "language-modeling", reference=reference, batch_size=3)
    assert found["perplexity"] == pytest.approx(perplexity(s_logits, y), rel=1e-5)
    assert found["loss"] == pytest.approx(torch.log(torch.tensor(perplexity(s_logits, y))).item(), rel=1e-5)
    assert found["agreement"] == pytest.approx(next_token_agreement(s_logits, t_logits, y))
    # Per-epoch validation: the same numbers through the sharded evaluation (one process here).
    evaluation = split_evaluation("language-modeling")
    per_epoch = sharded_metrics(make_accelerator("cpu"), student, data.test, evaluation)
    assert per_epoch["perplexity"] == pytest.approx(found["perplexity"], rel=1e-6)
    assert per_epoch["accuracy"] == pytest.approx(found["accuracy"])


def test_macs_and_latency_of_a_token_model_use_token_ids() -> None:
    model = _lm()
    macs = count_macs(model, (32,), vocab_size=259)
    assert macs > count_macs(model, (8,), vocab_size=259) > 0
    assert measure_latency(model, (32,), min_run_time=0.05, vocab_size=259).median_ms > 0


def test_generation_section_times_and_samples_causal_lms_only(corpus: Path) -> None:
    data = load_text(corpus, block_size=32)
    model = _lm()
    assert [len(p) for p in fixed_prompts(data.test, count=2, tokens=8)] == [8, 8]
    prompts = fixed_prompts(data.test)  # what lm_section uses
    section = lm_section([("lm", model), ("linear", torch.nn.Linear(2, 2))], data.test, data.extra)
    assert set(section["latency"]) == {"lm"} and section["latency"]["lm"]["ms_per_token"] > 0
    assert len(section["samples"]["lm"]) == 2 and len(section["prompts"]) == 2
    assert model.training  # the section leaves the model's mode as it found it
    # The samples are the KV-cache greedy continuations (distil.measure.lm, tested there against
    # scoring the whole sequence), cut at EOS.
    first = greedy_ids(model, prompts[0], NEW_TOKENS)[0].tolist()
    eos = ByteTokenizer().eos_id
    assert section["samples"]["lm"][0] == ByteTokenizer().decode(
        first[: first.index(eos)] if eos in first else first
    )


def test_a_checkpoint_of_another_tokenizer_is_refused(corpus: Path) -> None:
    data = load_text(corpus, block_size=32)
    same = {"data": {"extra": {"tokenizer": "byte-v1", "vocab_size": "259"}}}
    check_checkpoint_tokenizer("t", same, data)
    other = {"data": {"extra": {"tokenizer": "hf:gpt2-abc", "vocab_size": "50257"}}}
    with pytest.raises(ConfigError, match="share one tokenizer"):
        check_checkpoint_tokenizer("t", other, data)


def _recipe(corpus: Path) -> dict:
    train = {"optimizer": "adamw", "lr": 0.003, "epochs": 2, "batch_size": 8}
    return {
        "name": "lm-tiny",
        "data": {"name": "text", "root": str(corpus), "block_size": 32, "val_fraction": 0.2},
        "teacher": {"model": "hf-causal-lm", "kwargs": {"config": TINY}},
        "student": {"model": "hf-causal-lm", "kwargs": {"config": SMALLER}},
        "teacher_train": train,
        "student_train": {**train, "teacher_cache": "off"},
        "kd": {"temperature": 1.0, "kd_weight": 0.5, "ce_weight": 0.5},
        "device": "cpu",
    }


def test_the_pipeline_trains_and_measures_language_models(corpus: Path, tmp_path: Path) -> None:
    result = run_pipeline(parse_recipe(_recipe(corpus)), tmp_path / "runs", show_progress=False)
    run = result.run_dir
    summary = json.loads((run / "summary.json").read_text())
    names = [m["name"] for m in summary["metrics"]]
    assert names == ["teacher", "student_scratch", "student_kd"]
    for m in summary["metrics"]:
        assert m["task"] == "language-modeling"
        assert 1.0 < m["extra"]["perplexity"] < 259.0
        # Per byte too (the byte tokenizer: one byte a token, EOS none), so other tokenizers compare.
        assert 0.0 < m["extra"]["bits_per_byte"] < math.log2(259) + 1
        assert m["extra"]["byte_perplexity"] == pytest.approx(2 ** m["extra"]["bits_per_byte"])
        assert m["extra"]["generate_ms_per_token"] > 0
        assert m["macs"] > 0 and m["throughput_b256"] is None
    assert summary["metrics"][0]["agreement"] is None
    assert 0.0 <= summary["metrics"][2]["agreement"] <= 1.0
    assert summary["training"]["student_kd"]["tokens_per_s"] > 0
    assert set(summary["generation"]["samples"]) == set(names)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_s"] > 0 and r["eval_perplexity"] > 1.0 for r in records)
    assert all(r["eval_perplexity"] == pytest.approx(2.718281828 ** r["eval_loss"]) for r in records)
    report = (run / "report.md").read_text()
    assert "| model | perplexity | bits/byte | byte ppl | next-token acc |" in report
    assert "## Generation" in report and "tokens/s" in report
    assert "Generation" in (run / "report.html").read_text()
    # The distilled student loads back with its architecture from the sidecar.
    from distil.train.checkpoint import load_checkpoint

    student, _ = load_checkpoint(run / "student_kd")
    assert predict(student, torch.zeros(1, 32, dtype=torch.long)).shape == (1, 32, 259)
    # Its NAME-hf/ copy stops generating at the byte tokenizer's EOS, not at llama's default id 2.
    config = json.loads((run / "student_kd-hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (ByteTokenizer.BOS, ByteTokenizer.EOS)


@pytest.mark.slow
def test_demo_task_lm_runs_on_the_standard_library(tmp_path: Path) -> None:
    quick = [
        "--set", "data.limit=40", "--set", "teacher_train.epochs=1", "--set", "student_train.epochs=1",
        "--teacher-blocks", "80",
    ]  # fmt: skip
    result = CliRunner().invoke(
        app, ["demo", "--task", "lm", "--out", str(tmp_path), "--no-latency", "--quiet", *quick]
    )
    assert result.exit_code == 0, result.output
    (run,) = [p for p in tmp_path.iterdir() if (p / "summary.json").is_file()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["name"] == "python-stdlib"
    assert [m["task"] for m in summary["metrics"]] == ["language-modeling"] * 3


def test_demo_task_is_checked() -> None:
    result = CliRunner().invoke(app, ["demo", "--task", "speech"])
    assert result.exit_code == 2 and "classification or lm" in result.output


def test_the_loader_reads_token_blocks_a_batch_at_a_time(corpus: Path) -> None:
    from distil.data.loader import DatasetLoader

    data = load_text(corpus, block_size=16)
    loader = DatasetLoader(data.train, 4, shuffle=True, seed=3)
    loader.set_epoch(0)
    for batch in loader:
        stacked = [data.train[int(i)] for i in batch["index"]]
        assert torch.equal(batch["inputs"], torch.stack([s["inputs"] for s in stacked]))
        assert torch.equal(batch["labels"], torch.stack([s["labels"] for s in stacked]))


def test_a_student_derived_from_the_teachers_config_gets_a_self_contained_spec(corpus: Path) -> None:
    data = load_dataset("text", corpus, options={"block_size": 32})
    teacher, _ = build_model(ModelConfig(model="hf-causal-lm", kwargs={"config": TINY}), data)
    derived = ModelConfig(model="hf-causal-lm", kwargs={"from_teacher": {"num_hidden_layers": 1}})
    student, spec = build_model(derived, data, teacher=teacher)
    assert student.config.num_hidden_layers == 1
    assert student.config.hidden_size == teacher.config.hidden_size
    assert "from_teacher" not in spec["kwargs"] and spec["kwargs"]["config"]["num_hidden_layers"] == 1
    with pytest.raises(ModelError, match="from_teacher"):
        build_model(derived, data)  # no teacher to derive from


@pytest.mark.slow
def test_a_local_hugging_face_folder_distils_into_a_student_that_loads_with_transformers(
    corpus: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    teacher_dir = tmp_path / "my-lm"
    _lm().hf.save_pretrained(teacher_dir)  # "your own" model: a save_pretrained folder, byte vocabulary
    result = CliRunner().invoke(
        app,
        [
            "distill", "lm-demo", "--set", "teacher.model=hf-causal-lm",
            "--set", f"teacher.kwargs={{path: {teacher_dir}}}",
            "--set", "student.kwargs={from_teacher: {num_hidden_layers: 1}}",
            "--set", "data.name=text", "--set", f"data.root={corpus}", "--set", "data.block_size=32",
            "--set", "data.limit=16", "--set", "student_train.epochs=1",
            "--out", str(tmp_path / "runs"), "--name", "small", "--no-latency", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "runs" / "small" / "student_kd-hf")
    assert student.config.num_hidden_layers == 1 and student.config.vocab_size == 259


def test_a_checkpoint_records_its_text_blocks_so_eval_cuts_the_same(corpus: Path, tmp_path: Path) -> None:
    from distil.models import model_spec
    from distil.run.evaluate import load_checkpoint_data
    from distil.train.checkpoint import save_checkpoint

    data = load_text(corpus, block_size=16, split_by="blocks")
    spec = model_spec("hf-causal-lm", num_classes=259, in_channels=1, image_size=1, config=TINY)
    save_checkpoint(tmp_path / "m", _lm(), spec, {"data": data.describe()})
    # distil eval on the checkpoint, told nothing: the recorded block size and split rule, not the defaults.
    again = load_checkpoint_data(str(tmp_path / "m"), "text", corpus, val_fraction=0.1)
    assert again.input_shape == (16,) and again.extra["split_by"] == "blocks"
    assert torch.equal(again.test.head(2), data.test.head(2))
    # A value given on the command line wins.
    given = load_checkpoint_data(
        str(tmp_path / "m"), "text", corpus, val_fraction=0.1, options={"block_size": 8}
    )
    assert given.input_shape == (8,)


def test_eval_of_language_model_checkpoints_reports_bits_per_byte(corpus: Path, tmp_path: Path) -> None:
    """`distil eval` of LM checkpoints: per-token perplexity and, the data's tokenizer being byte-level, bits
    per byte and per-byte perplexity for each (the same pass as a run's measurement)."""
    from distil.measure.bytes import split_bits_per_byte
    from distil.models import model_spec
    from distil.run.evaluate import evaluate_checkpoints
    from distil.train.checkpoint import save_checkpoint

    data = load_text(corpus, block_size=16)
    spec = model_spec("hf-causal-lm", num_classes=259, in_channels=1, image_size=1, config=TINY)
    for i in range(2):
        save_checkpoint(tmp_path / f"m{i}", _lm(seed=i), spec, {"data": data.describe()})
    rows = evaluate_checkpoints([str(tmp_path / "m0"), str(tmp_path / "m1")], data, measure_latency=False)
    alone = split_bits_per_byte(_lm(seed=1), data.test, ByteTokenizer())
    assert rows[1].extra["bits_per_byte"] == pytest.approx(alone["bits_per_byte"], rel=1e-5)
    assert all(r.extra["byte_perplexity"] == pytest.approx(2 ** r.extra["bits_per_byte"]) for r in rows)
    assert all("perplexity" in r.extra for r in rows)
