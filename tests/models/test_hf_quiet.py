"""transformers' own progress bars stay out of a run's output: distil reports its own progress."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from distil.hf_common import quiet_progress
from distil.models import create_model
from distil.models.hf import load_local, save_hf_pretrained


def test_saving_and_loading_an_hf_model_prints_no_progress_bar(tmp_path, capfd) -> None:
    config = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    config |= {"num_attention_heads": 2, "num_key_value_heads": 2}
    model = create_model("hf-causal-lm", num_classes=64, config=config)
    save_hf_pretrained(model, tmp_path / "m-hf")
    load_local(tmp_path / "m-hf")
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "Loading weights" not in err, err


def test_the_progress_setting_is_restored() -> None:
    import transformers.utils.logging as hf_logging

    hf_logging.enable_progress_bar()
    with quiet_progress():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
