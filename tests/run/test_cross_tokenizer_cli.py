"""`distil distill` with a teacher of another tokenizer (`kd.teacher_tokenizer`): the students train and are
measured on the data's tokens, the teacher on its own tokenization of the same test text; `distil run`
with a teacher it would train on the data's tokens is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from distil.cli.app import app
from distil.config import parse_recipe
from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS
from distil.data.hf_tokenizer import train_byte_bpe
from distil.data.text import TokenRowSplit, load_text
from distil.data.tokenize import get_tokenizer
from distil.errors import ConfigError
from distil.measure.bytes import split_bits_per_byte
from distil.models import create_model, model_spec
from distil.run import run_pipeline
from distil.run.pipeline import load_data
from distil.train.checkpoint import save_checkpoint

pytest.importorskip("transformers")

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat.\n"
CONFIG = {
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, torch.nn.Module]:
    """A corpus, a BPE trained on it, a teacher checkpoint over that BPE and a recipe with a byte student."""
    root = tmp_path_factory.mktemp("xtok-cli")
    (root / "corpus").mkdir()
    for i in range(4):
        (root / "corpus" / f"d{i}.txt").write_text(TEXT * (i + 2))
    name = train_byte_bpe([TEXT] * 20, 280, root / "bpe")
    vocab = get_tokenizer(name).vocab_size
    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=vocab, config=CONFIG)
    spec = model_spec("hf-causal-lm", num_classes=vocab, in_channels=1, image_size=1, config=CONFIG)
    bpe_data = load_text(
        root / "corpus", tokenizer=name, block_size=8, split_by="blocks", cache_dir=root / "c"
    )
    save_checkpoint(root / "teacher", teacher, spec, {"data": bpe_data.describe()})
    recipe = {
        "name": "xtok",
        "data": {"name": "text", "root": str(root / "corpus"), "block_size": 16, "split_by": "blocks"},
        "teacher": {"model": "hf-causal-lm"},
        "student": {"model": "hf-causal-lm", "kwargs": {"config": CONFIG}},
        "student_train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "max_steps": 2},
        "kd": {"temperature": 1.0},
        "device": "cpu",
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root, name, teacher.eval()


def _own_tokenization(split: object, name: str) -> TokenRowSplit:
    """The reference: each byte row decoded to text, cut at EOS and encoded by the teacher's tokenizer."""
    tok, byte = get_tokenizer(name), get_tokenizer("byte")
    rows = []
    for batch in split.batches(64):  # type: ignore[attr-defined]
        for x, y in zip(batch[INPUTS].tolist(), batch[LABELS].tolist(), strict=True):
            ids: list[int] = []
            pieces = bytes(i if i != byte.eos_id else 0 for i in [*x, y[-1]]).split(b"\0")
            for k, piece in enumerate(pieces):
                ids += ([tok.eos_id] if k else []) + tok.encode(piece.decode("utf-8"))
            rows.append(ids)
    width = max(len(r) for r in rows) - 1
    inputs = torch.full((len(rows), width), tok.eos_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for k, r in enumerate(rows):
        inputs[k, : len(r) - 1], labels[k, : len(r) - 1] = torch.tensor(r[:-1]), torch.tensor(r[1:])
    return TokenRowSplit(inputs, labels)


def test_distil_distill_measures_a_teacher_with_its_own_tokenizer_on_its_own_tokens(setup, tmp_path) -> None:
    root, name, teacher = setup
    args = ["distill", str(root / "recipe.yaml"), "--teacher", str(root / "teacher.safetensors")]
    args += ["--set", f"kd.teacher_tokenizer={name}", "--set", "kd.terms={ce: 1, alm: 1}"]
    args += ["--out", str(tmp_path / "runs"), "--quiet", "--name", "x"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "x"
    summary = json.loads((run / "summary.json").read_text())
    rows = {m["name"]: m for m in summary["metrics"]}
    assert list(rows) == ["teacher", "student_kd"]
    t, s = rows["teacher"], rows["student_kd"]
    assert t["tokenizer"] == name and "tokenizer" not in s  # the student's numbers are on the data's tokens
    recipe = parse_recipe(yaml.safe_load((root / "recipe.yaml").read_text()))
    own = _own_tokenization(load_data(recipe).test, name)
    expected = split_bits_per_byte(teacher, own, get_tokenizer(name))
    assert t["extra"]["bits_per_byte"] == pytest.approx(expected["bits_per_byte"], rel=1e-5)
    assert 0 < s["extra"]["bits_per_byte"] < 20
    # Agreement over two vocabularies is undefined; the teacher does not generate from the student's ids.
    assert t["agreement"] is None and s["agreement"] is None
    assert (
        "teacher" not in summary["generation"]["samples"] and "student_kd" in summary["generation"]["samples"]
    )
    assert summary["ratios"]["student_kd"]["accuracy_change"] is None
    # Timed with the student in one interleaved measurement, on a block of its own tokens (the same text).
    assert t["latency_b1_ms"] > 0 and s["latency_b1_ms"] > 0
    assert summary["ratios"]["student_kd"]["speedup_b1"] is not None
    # Its checkpoint is saved with its own tokenizer; the report says what its row compares with.
    sidecar = json.loads((run / "teacher.json").read_text())
    assert sidecar["data"]["extra"]["tokenizer"] == get_tokenizer(name).fingerprint
    report = (run / "report.md").read_text()
    assert f"teacher reads the text with its own tokenizer ({name})" in report
    kd_row = next(line for line in report.splitlines() if line.startswith("| student_kd |"))
    assert kd_row.rstrip(" |").endswith("—")  # no perplexity ratio across vocabularies


def test_distil_run_with_a_teacher_it_would_train_and_a_teacher_tokenizer_writes_nothing(
    setup, tmp_path
) -> None:
    root, name, _ = setup
    recipe = parse_recipe(
        {**yaml.safe_load((root / "recipe.yaml").read_text()),
         "kd": {"terms": {"ce": 1.0, "alm": 1.0}, "teacher_tokenizer": name}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"needs a trained teacher.*teacher\.checkpoint.*distil distill"):
        run_pipeline(recipe, tmp_path / "runs", show_progress=False)
    assert not (tmp_path / "runs").exists()
