"""HF models from local directories (safetensors only, no remote code without trust), classifiers, derived
students, and the save_pretrained round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distil.data.tokenize import get_tokenizer
from distil.errors import ModelError, UntrustedCodeError
from distil.models import build_from_spec, create_model, model_spec
from distil.models.hf import CausalLM, derive_student_config, save_hf_pretrained
from distil.models.registry import check_trusted

transformers = pytest.importorskip("transformers")

TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
GPT2 = {"model_type": "gpt2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def _saved(tmp_path: Path, config: dict = TINY) -> tuple[CausalLM, Path]:
    torch.manual_seed(0)
    lm = create_model("hf-causal-lm", num_classes=259, config=config)
    assert isinstance(lm, CausalLM)
    return lm, save_hf_pretrained(lm, tmp_path / "lm")


@pytest.mark.parametrize("config", [TINY, {**TINY, "tie_word_embeddings": True}, GPT2])
def test_save_pretrained_loads_back_with_auto_class_and_same_logits(tmp_path: Path, config: dict) -> None:
    lm, directory = _saved(tmp_path, config)
    assert (directory / "model.safetensors").is_file()
    back = transformers.AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    ids = torch.randint(0, 259, (2, 9))
    torch.testing.assert_close(back(ids).logits, lm.eval()(ids), rtol=0, atol=0)
    if back.config.tie_word_embeddings:
        assert back.get_output_embeddings().weight is back.get_input_embeddings().weight


def test_loads_a_local_directory_through_the_spec(tmp_path: Path) -> None:
    lm, directory = _saved(tmp_path)
    spec = model_spec("hf-causal-lm", num_classes=259, in_channels=1, image_size=1, path=str(directory))
    loaded = build_from_spec(json.loads(json.dumps(spec))).eval()
    ids = torch.randint(0, 259, (1, 6))
    torch.testing.assert_close(loaded(ids), lm.eval()(ids), rtol=0, atol=0)
    with pytest.raises(ModelError, match="vocabulary of 259"):
        create_model("hf-causal-lm", num_classes=300, path=str(directory))
    with pytest.raises(ModelError, match="not both"):
        create_model("hf-causal-lm", num_classes=259, path=str(directory), config=TINY)


def test_pickled_weights_are_refused_with_the_fix(tmp_path: Path) -> None:
    _, directory = _saved(tmp_path)
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"no safetensors weights \(found pytorch_model.bin\).*pickle"):
        create_model("hf-causal-lm", num_classes=259, path=str(directory))
    with pytest.raises(ModelError, match="does not exist"):
        create_model("hf-causal-lm", num_classes=259, path=str(tmp_path / "nowhere"))


def test_remote_code_needs_the_kwarg_and_the_users_trust(tmp_path: Path) -> None:
    _, directory = _saved(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"auto_map.*trust_remote_code: true.*--trust-code"):
        create_model("hf-causal-lm", num_classes=259, path=str(directory))
    # A sidecar asking for the directory's code is refused before anything is built, unless trusted.
    spec = model_spec(
        "hf-causal-lm",
        num_classes=259,
        in_channels=1,
        image_size=1,
        path=str(directory),
        trust_remote_code=True,
    )
    with pytest.raises(UntrustedCodeError, match="trust_remote_code"):
        build_from_spec(spec, trusted=["hf-causal-lm"])
    check_trusted(spec, True)  # the user's --trust-code lets it through


def test_seq_classifier_from_config_and_directory(tmp_path: Path) -> None:
    bert = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    bert["intermediate_size"] = 64
    for config in (bert, {**TINY, "model_type": "llama"}):
        clf = create_model("hf-seq-classifier", num_classes=3, config=config).eval()
        ids = torch.randint(0, 258, (4, 7))
        logits = clf(ids, attention_mask=torch.ones_like(ids))
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    directory = save_hf_pretrained(clf, tmp_path / "clf")
    back = create_model("hf-seq-classifier", num_classes=3, path=str(directory)).eval()
    torch.testing.assert_close(back(ids), clf(ids), rtol=0, atol=0)
    with pytest.raises(ModelError, match="3 labels"):
        create_model("hf-seq-classifier", num_classes=5, path=str(directory))


def test_derived_student_config_is_shallower_narrower_and_keeps_head_size() -> None:
    teacher = create_model("hf-causal-lm", num_classes=259, config={**TINY, "num_hidden_layers": 4})
    derived = derive_student_config(teacher.config, num_hidden_layers=2, hidden_size=16, intermediate_size=32)
    json.dumps(derived)  # plain JSON: it goes into the student's spec
    student = create_model("hf-causal-lm", num_classes=259, config=derived)
    cfg = student.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (2, 16, 32)
    assert cfg.head_dim == teacher.config.head_dim == 8 and cfg.num_attention_heads == 2
    assert student(torch.randint(0, 259, (1, 4))).shape == (1, 4, 259)
    gpt = create_model("hf-causal-lm", num_classes=259, config=GPT2)
    small = derive_student_config(gpt.config, num_hidden_layers=1)
    assert create_model("hf-causal-lm", num_classes=259, config=small).config.n_layer == 1
    with pytest.raises(ModelError, match="unknown"):
        derive_student_config(teacher.config, layers=2)


def test_forward_with_hidden_returns_every_layer_boundary() -> None:
    lm = create_model("hf-causal-lm", num_classes=259, config=TINY)
    assert isinstance(lm, CausalLM)
    logits, hidden = lm.forward_with_hidden(torch.randint(0, 259, (2, 5)))
    assert logits.shape == (2, 5, 259) and len(hidden) == 3 and hidden[1].shape == (2, 5, 32)
    from distil.models.hf import block_names

    assert block_names(lm) == ["hf.model.layers.0", "hf.model.layers.1"]


@pytest.mark.parametrize("tied", [False, True])
def test_a_distil_checkpoint_of_an_hf_model_also_writes_a_save_pretrained_dir(
    tmp_path: Path, tied: bool
) -> None:
    from distil.train.checkpoint import hf_pretrained_dir, load_checkpoint, save_checkpoint
    from tests.data.test_hf_tokenizer import save_tiny_tokenizer

    tok = get_tokenizer(f"hf:{save_tiny_tokenizer(tmp_path / 'tok')}")
    config = {**TINY, "tie_word_embeddings": tied}
    lm = create_model("hf-causal-lm", num_classes=tok.vocab_size, config=config).eval()
    spec = model_spec("hf-causal-lm", num_classes=tok.vocab_size, in_channels=1, image_size=1, config=config)
    save_checkpoint(tmp_path / "student", lm, spec, {"note": "x"}, tokenizer=tok)
    directory = hf_pretrained_dir(tmp_path / "student")
    assert directory == tmp_path / "student-hf" and (directory / "model.safetensors").is_file()
    ids = torch.randint(0, tok.vocab_size, (2, 5))
    back = transformers.AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    torch.testing.assert_close(back(ids).logits, lm(ids), rtol=0, atol=0)
    assert back.config.tie_word_embeddings == tied
    assert get_tokenizer(f"hf:{directory}").fingerprint == tok.fingerprint  # the tokenizer travels with it
    model, meta = load_checkpoint(tmp_path / "student")  # the distil checkpoint itself is unchanged
    assert meta["hf_pretrained"] == "student-hf"
    torch.testing.assert_close(model.eval()(ids), lm(ids), rtol=0, atol=0)


def test_from_teacher_kwargs_resolve_to_a_plain_config() -> None:
    from distil.models.hf import resolve_from_teacher

    teacher = create_model("hf-causal-lm", num_classes=259, config={**TINY, "num_hidden_layers": 4})
    kwargs = resolve_from_teacher({"from_teacher": {"num_hidden_layers": 2}}, teacher)
    spec = model_spec("hf-causal-lm", num_classes=259, in_channels=1, image_size=1, **kwargs)
    assert build_from_spec(spec).config.num_hidden_layers == 2
    assert resolve_from_teacher({"config": TINY}, teacher) == {"config": TINY}
    with pytest.raises(ModelError, match="resolve_from_teacher"):
        create_model("hf-causal-lm", num_classes=259, from_teacher={"num_hidden_layers": 2})
    with pytest.raises(ModelError, match="only one"):
        resolve_from_teacher({"from_teacher": {"num_hidden_layers": 2}, "config": TINY}, teacher)
