"""Issue 21.5: the documented opt-in for a Hugging Face model folder with its own code works.

A folder whose config.json has an ``auto_map`` naming a modeling file in it (written here: nothing foreign
runs) is refused without ``--trust-code`` (exit 2, the message names the flag), and with
``trust_remote_code: true`` in the kwargs plus ``--trust-code`` it distills, after a one-line warning that
the folder's code runs.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from distil.cli.app import app

transformers = pytest.importorskip("transformers")
runner = CliRunner()

TINY = {
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}
MODELING = '''from transformers import LlamaForCausalLM


class LocalForCausalLM(LlamaForCausalLM):
    """The folder's own class: a llama under another name."""
'''


def _remote_code_folder(root: Path) -> Path:
    """A save_pretrained folder whose config maps AutoModelForCausalLM to its own modeling_local.py."""
    from distil.models import create_model
    from distil.models.hf import save_hf_pretrained

    torch.manual_seed(0)
    directory = save_hf_pretrained(
        create_model("hf-causal-lm", num_classes=259, config=TINY), root / "remote"
    )
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_local.LocalForCausalLM"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "modeling_local.py").write_text(MODELING)
    return directory


def _corpus(root: Path) -> Path:
    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"]
    root.mkdir(parents=True)
    for i in range(8):
        (root / f"doc{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(40)))
    return root


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # the copied code goes here
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = _remote_code_folder(tmp_path)
    train = {"optimizer": "adamw", "lr": 0.003, "epochs": 1, "batch_size": 8, "teacher_cache": "off"}
    body = {
        "name": "remote",
        "data": {
            "name": "text",
            "root": str(_corpus(tmp_path / "corpus")),
            "block_size": 16,
            "val_fraction": 0.2,
        },
        "teacher": {"model": "hf-causal-lm", "kwargs": {"path": str(folder), "trust_remote_code": True}},
        "student": {
            "model": "hf-causal-lm",
            "kwargs": {"config": {**TINY, "hidden_size": 8, "intermediate_size": 16}},
        },
        "student_train": train,
        "kd": {"temperature": 1.0, "kd_weight": 0.5, "ce_weight": 0.5},
        "device": "cpu",
    }
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _distill(recipe: Path, *extra: str) -> tuple[int, str]:
    out = recipe.parent / "runs"
    r = runner.invoke(app, ["distill", str(recipe), "--out", str(out), "-q", "--no-latency", *extra])
    return r.exit_code, r.output


def test_a_folder_with_its_own_code_is_refused_without_trust_code(recipe: Path) -> None:
    code, out = _distill(recipe)
    assert code == 2, out
    assert "--trust-code" in out and "trust_remote_code: true" in out, out
    assert "name it yourself" not in out  # the generic sidecar advice does not fit a folder the user named
    assert not (recipe.parent / "modules").exists()  # refused before transformers copied the folder's code


def test_trust_code_lets_the_folders_own_code_run_and_distill(recipe: Path) -> None:
    code, out = _distill(recipe, "--trust-code")
    assert code == 0, out
    assert (recipe.parent / "modules").exists()  # transformers imported the folder's modeling file
    warned = [line for line in out.splitlines() if "running the model code" in line]
    assert len(warned) == 1 and warned[0].startswith("distil: warning:"), out
    assert "student_kd" in out
    runs = list((recipe.parent / "runs").glob("remote-kd-*"))
    assert len(runs) == 1 and (runs[0] / "student_kd.safetensors").is_file()
