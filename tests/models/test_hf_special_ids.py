"""An exported NAME-hf/ folder carries its tokenizer's BOS/EOS/PAD ids, not the model family's defaults,
so transformers' generate stops at the tokenizer's EOS (issue 23, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distil.data.tokenize import ByteTokenizer
from distil.models import create_model, model_spec
from distil.train.checkpoint import hf_pretrained_dir, save_checkpoint

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}


def eos_zero_tokenizer(directory: Path) -> Path:
    """A word-level tokenizer whose EOS "</s>" is id 0 (llama's defaults say BOS 1, EOS 2), no BOS or PAD."""
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["</s>", "<unk>"])
    model.train_from_iterator(["the cat sat on the mat !", "a dog ran"], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", eos_token="</s>")
    fast.save_pretrained(str(directory))
    return directory


def exported(tmp_path: Path, tokenizer: object, vocab: int) -> Path:
    torch.manual_seed(0)
    lm = create_model("hf-causal-lm", num_classes=vocab, config=TINY)
    spec = model_spec("hf-causal-lm", num_classes=vocab, in_channels=1, image_size=1, config=TINY)
    save_checkpoint(tmp_path / "student", lm, spec, {}, tokenizer=tokenizer)
    return hf_pretrained_dir(tmp_path / "student")


def ids_of(directory: Path) -> tuple[dict, dict]:
    keys = ("bos_token_id", "eos_token_id", "pad_token_id")
    config = json.loads((directory / "config.json").read_text())
    generation = json.loads((directory / "generation_config.json").read_text())
    return {k: config.get(k) for k in keys}, {k: generation.get(k) for k in keys}


def test_an_hf_tokenizers_ids_are_written_and_generate_stops_at_its_eos(tmp_path: Path) -> None:
    from distil.data.hf_tokenizer import HFTokenizer

    tok = HFTokenizer(eos_zero_tokenizer(tmp_path / "tok"))
    assert tok.eos_id == 0
    directory = exported(tmp_path, tok, tok.vocab_size)
    want = {"bos_token_id": None, "eos_token_id": 0, "pad_token_id": None}
    config, generation = ids_of(directory)
    assert config == want and generation == want
    back = transformers.AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    with torch.no_grad():
        back.model.norm.weight.zero_()  # every logit 0: greedy picks id 0, the tokenizer's EOS
        out = back.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=6, do_sample=False)
    assert out.tolist() == [[3, 4, 5, 0]]  # stopped at EOS, not run on to max_new_tokens


def test_the_byte_tokenizers_ids_are_written(tmp_path: Path) -> None:
    tok = ByteTokenizer()
    directory = exported(tmp_path, tok, tok.vocab_size)
    want = {"bos_token_id": tok.BOS, "eos_token_id": tok.EOS, "pad_token_id": tok.PAD}
    config, generation = ids_of(directory)
    assert config == want and generation == want
