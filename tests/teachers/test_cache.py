import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.errors import ConfigError
from distil.losses import TeacherNeeds
from distil.models import create_model
from distil.teachers import store
from distil.teachers.cache import CachedTeacher, choose_teacher_source, fingerprint, open_or_build


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=300)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # The default cache directory is the user's; tests must never read or fill it.
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "default-cache"))


def _teacher(seed: int = 0, classes: int = 10):
    torch.manual_seed(seed)
    return create_model("largenet", num_classes=classes, in_channels=1, image_size=8).eval()


def _reference(teacher, x):
    with torch.no_grad():
        return teacher(x)


def test_cached_logits_equal_the_teachers_in_any_order(digits, tmp_path: Path) -> None:
    teacher = _teacher()
    cached, info = open_or_build(teacher, digits, cache_dir=tmp_path)
    assert not info.hit and info.rows == len(digits.train) and info.num_classes == 10
    index = torch.randperm(len(digits.train))[:50]
    got = cached({"inputs": digits.train.x[index], "index": index})
    want = _reference(teacher, digits.train.x[index])
    assert got.dtype == torch.float32 and got.shape == (50, 10)
    # float16 storage: about 3 significant digits.
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)


def test_second_run_hits_and_any_change_misses(digits, tmp_path: Path) -> None:
    teacher = _teacher()
    _, first = open_or_build(teacher, digits, cache_dir=tmp_path)
    _, again = open_or_build(copy.deepcopy(teacher), digits, cache_dir=tmp_path)
    assert again.hit and again.path == first.path

    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    _, after_weights = open_or_build(changed, digits, cache_dir=tmp_path)
    assert not after_weights.hit and after_weights.fingerprint != first.fingerprint

    fewer = load_dataset("digits", limit=299)
    keys = {
        fingerprint(teacher, digits, augment="none"),
        fingerprint(teacher, fewer, augment="none"),
        fingerprint(teacher, digits, augment="crop"),
        fingerprint(teacher, digits, augment="none", topk=3),
        # Same sizes and description, different pixels: only the content hash tells them apart.
        fingerprint(
            teacher,
            dataclasses.replace(digits, train=dataclasses.replace(digits.train, x=digits.train.x + 1)),
            augment="none",
        ),
    }
    assert len(keys) == 5


def test_a_damaged_cache_is_rebuilt_not_used(digits, tmp_path: Path) -> None:
    teacher = _teacher()
    _, info = open_or_build(teacher, digits, cache_dir=tmp_path)
    values = Path(info.path) / "values.f16"
    values.write_bytes(values.read_bytes()[:100])  # a truncated file
    cached, rebuilt = open_or_build(teacher, digits, cache_dir=tmp_path)
    assert not rebuilt.hit
    index = torch.arange(len(digits.train))
    torch.testing.assert_close(
        cached.lookup(index), _reference(teacher, digits.train.x), rtol=2e-3, atol=2e-3
    )
    # No temp directories left behind.
    assert [p.name for p in tmp_path.iterdir()] == [Path(info.path).name]
    assert json.loads((Path(info.path) / "meta.json").read_text())["fingerprint"] == info.fingerprint


def test_topk_keeps_top_probabilities_and_tail_mass(digits, tmp_path: Path) -> None:
    teacher = _teacher(classes=10)
    k = 3
    cached, info = open_or_build(teacher, digits, cache_dir=tmp_path, topk=k)
    # One top-k layout for classifiers and sequences: uint16 ids (K <= 65536), float16 values, a fill per T.
    assert info.topk == k and (Path(info.path) / "ids").stat().st_size == len(digits.train) * k * 2
    index = torch.arange(40)
    got = torch.softmax(cached.lookup(index), dim=1)
    want = torch.softmax(_reference(teacher, digits.train.x[:40]).double(), dim=1).float()
    top_p, top_i = want.topk(k, dim=1)
    torch.testing.assert_close(got.gather(1, top_i), top_p, rtol=5e-3, atol=1e-4)
    torch.testing.assert_close(
        got.sum(1) - got.gather(1, top_i).sum(1), 1 - top_p.sum(1), rtol=1e-2, atol=1e-4
    )
    with pytest.raises(ConfigError, match=r"teacher_cache\.k must be in \[1, 10\]"):
        open_or_build(teacher, digits, cache_dir=tmp_path, topk=11)


def test_choice_of_teacher_source_and_its_reason() -> None:
    logits_only, features = (
        TeacherNeeds(live=False),
        TeacherNeeds(live=True, reason="terms fitnet need features"),
    )
    assert choose_teacher_source("auto", "none", needs=logits_only)[0] == "cache"
    source, reason = choose_teacher_source("auto", "crop_flip", needs=logits_only)
    assert source == "live" and "crop_flip" in reason and "random" in reason
    # A loss that declares nothing (a user's) stays live under auto; "on" uses cached logits with it.
    assert choose_teacher_source("auto", "none")[0] == "live"
    assert choose_teacher_source("on", "none")[0] == "cache"
    assert choose_teacher_source("auto", "none", needs=features) == ("live", "terms fitnet need features")
    assert choose_teacher_source("auto", "none", needs=logits_only, teachers=2)[0] == "live"
    with pytest.raises(ConfigError, match="teacher_cache=on cannot be used here: terms fitnet"):
        choose_teacher_source("on", "none", needs=features)
    assert choose_teacher_source("off", "none", needs=logits_only) == ("live", "teacher_cache=off")
    with pytest.raises(ConfigError, match="augment=none"):
        choose_teacher_source("on", "crop")
    with pytest.raises(ConfigError, match="Did you mean 'auto'"):
        choose_teacher_source("autp", "none")


@pytest.mark.parametrize(
    ("terms", "source"),
    [
        (None, "cache"),  # Hinton KD: {kd, ce}
        ({"ce": 1.0, "dkd": 1.0}, "cache"),
        ({"ce": 0.1, "rkl": 0.9}, "cache"),
        ({"ce": 0.1, "js": 0.9}, "cache"),
        ({"ce": 0.1, "logit_mse": 0.9}, "cache"),
        ({"ce": 1.0, "fitnet": 1.0}, "live"),
    ],
)
def test_logit_only_terms_use_the_cache_and_feature_terms_run_live(
    digits, tmp_path: Path, terms, source
) -> None:
    cfg = StudentTrainConfig(epochs=1, batch_size=64, augment="none", teacher_cache={"dir": str(tmp_path)})
    kd = KDConfig(terms=terms, feature_pairs=[("conv2", "conv2")])
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    record = distill(_teacher(), student, digits, cfg, kd).history[-1]
    assert record["teacher_source"] == source, record["teacher_source_reason"]
    assert ("fitnet" in record["teacher_source_reason"]) == (source == "live")


def test_a_user_loss_without_declared_needs_stays_live(digits, tmp_path: Path) -> None:
    from distil.losses import build_loss

    cfg = StudentTrainConfig(epochs=1, batch_size=64, augment="none", teacher_cache={"dir": str(tmp_path)})
    teacher = _teacher()
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    composed = build_loss(
        KDConfig(), student=student, teacher=teacher, sample_x=digits.train.x[:2], num_classes=10
    )

    def user_loss(s_out, t_out, batch):  # the same KD, but it declares nothing
        return composed(s_out, t_out, batch)

    record = distill(teacher, student, digits, cfg, loss=user_loss).history[-1]
    assert record["teacher_source"] == "live" and "does not declare" in record["teacher_source_reason"]


def test_a_cached_teacher_needs_sample_indices(digits, tmp_path: Path) -> None:
    cached, _ = open_or_build(_teacher(), digits, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"batch\['index'\]"):
        cached({"inputs": digits.train.x[:4]})
    assert isinstance(cached, CachedTeacher) and len(cached) == len(digits.train)


def test_distill_with_the_cache_matches_live_distillation(digits, tmp_path: Path) -> None:
    teacher = _teacher()
    cfg = StudentTrainConfig(
        epochs=2, batch_size=32, augment="none", teacher_cache={"dir": str(tmp_path)}, seed=1
    )

    def run(mode: str):
        torch.manual_seed(5)
        student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
        return distill(
            teacher,
            student,
            digits,
            cfg.model_copy(update={"teacher_cache": cfg.teacher_cache.model_copy(update={"mode": mode})}),
            KDConfig(),
        )

    live, cached, reused = run("off"), run("auto"), run("on")
    assert [r["teacher_source"] for r in live.history] == ["live", "live"]
    assert [r["teacher_source"] for r in cached.history] == ["cache", "cache"]
    assert not cached.history[0]["teacher_cache"]["hit"] and reused.history[0]["teacher_cache"]["hit"]
    assert "deterministic" in cached.history[0]["teacher_source_reason"]
    for a, b in zip(live.model.parameters(), cached.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    for a, b in zip(cached.model.parameters(), reused.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_random_augmentation_runs_the_teacher_live_and_says_why(digits, tmp_path: Path) -> None:
    cfg = StudentTrainConfig(
        epochs=1, batch_size=64, augment="crop_flip", teacher_cache={"dir": str(tmp_path)}
    )
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    records: list[dict] = []
    result = distill(_teacher(), student, digits, cfg, on_epoch_end=records.append)
    assert result.history[0]["teacher_source"] == "live" and records[0]["teacher_source"] == "live"
    assert "crop_flip" in records[0]["teacher_source_reason"]
    assert not any(tmp_path.iterdir())  # nothing cached


def _realish_logits(n: int = 512, classes: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student logits shaped like a trained classifier's: one clear class over a wide tail."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    hot = torch.nn.functional.one_hot(y, classes).float()
    # Rounded to float16, the cache's storage type, so the stored top-k logits are exact.
    teacher = (torch.randn(n, classes, generator=g) * 2.5 + 10 * hot).half().float()
    student = torch.randn(n, classes, generator=g) * 2.0 + 6 * hot
    return teacher, student


def _represented(teacher: torch.Tensor, k: int, t: float) -> torch.Tensor:
    """What a top-k cache stands for at temperature t, written out independently: the teacher's softened
    probabilities on its top-k classes, and its softened tail mass spread evenly over the other classes."""
    p = torch.softmax(teacher.double() / t, dim=1)
    top = p.topk(k, dim=1).indices
    in_top = torch.zeros_like(p, dtype=torch.bool).scatter_(1, top, True)
    tail_mass = (p * ~in_top).sum(1, keepdim=True)
    return torch.where(in_top, p, tail_mass / (p.shape[1] - k))


def _kd_from_probs(student: torch.Tensor, p_teacher: torch.Tensor, t: float) -> torch.Tensor:
    log_q = torch.log_softmax(student.double() / t, dim=1)
    return (p_teacher * (p_teacher.log() - log_q)).sum(1).mean() * t * t


def test_topk_cache_matches_the_represented_teacher_at_every_temperature(tmp_path: Path) -> None:
    # Regression: the fill kept the tail's mass only at T=1, so KD at T=4 used a far lighter tail.
    from distil.data import Split
    from distil.losses import kd_kl
    from distil.teachers.cache import build_cache

    teacher_logits, student_logits = _realish_logits()
    k, n = 20, len(teacher_logits)
    schedule = [4.0 + e * (1.0 - 4.0) / 4 for e in range(5)]  # kd.temperature 4 -> temperature_final 1
    split = Split(teacher_logits, torch.zeros(n, dtype=torch.long))
    path = build_cache(torch.nn.Identity(), split, tmp_path / "c", key="x", topk=k, temperatures=schedule)
    cached = CachedTeacher(path)
    assert cached.temperatures == (1.0, 1.75, 2.5, 3.25, 4.0)
    index = torch.arange(n)
    errors = {}
    for t in (1.0, 4.0, *schedule):
        got = cached.lookup(index, temperature=t)
        want = _represented(teacher_logits, k, t)
        # The softened distribution: exact top-k probabilities and tail mass (float32 arithmetic).
        torch.testing.assert_close(torch.softmax(got.double() / t, dim=1), want, rtol=1e-5, atol=1e-8)
        kd_cached = kd_kl(student_logits, got, t)
        torch.testing.assert_close(
            kd_cached.double(), _kd_from_probs(student_logits, want, t), rtol=1e-5, atol=0
        )
        full = kd_kl(student_logits, teacher_logits, t).item()
        before = kd_kl(student_logits, cached.lookup(index, temperature=1.0), t).item()  # the old T=1 fill
        errors[t] = (full, before, kd_cached.item())
    print(
        "\nKD, K=100, k=20 (full / old T=1 tail / tail at T): "
        + "; ".join(f"T={t:g}: {f:.3f} / {b:.3f} / {a:.3f}" for t, (f, b, a) in sorted(errors.items()))
    )
    full, before, after = errors[4.0]
    assert abs(after - full) < 0.75 * abs(before - full)  # the tail's mass at T=4 was the bigger error
    with pytest.raises(ConfigError, match=r"temperatures \[1.0, 1.75"):
        cached.lookup(index, temperature=3.0)
    # `follow` makes plain lookups use the loss's current temperature.
    current = [4.0]
    cached.follow(lambda: current[0])
    torch.testing.assert_close(cached({"index": index}), cached.lookup(index, temperature=4.0))


def test_distill_with_a_topk_cache_follows_the_temperature_schedule(
    digits, tmp_path: Path, monkeypatch
) -> None:
    used: list[float] = []
    real = CachedTeacher._fill_column

    def spy(self: CachedTeacher, temperature: float | None) -> int:
        column = real(self, temperature)
        used.append(self.temperatures[column])
        return column

    monkeypatch.setattr(CachedTeacher, "_fill_column", spy)
    cfg = StudentTrainConfig(
        epochs=2, batch_size=64, augment="none", teacher_cache={"dir": str(tmp_path), "form": "topk", "k": 3}
    )
    kd = KDConfig(temperature=4.0, temperature_final=2.0)
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    history = distill(_teacher(), student, digits, cfg, kd).history
    assert history[-1]["teacher_source"] == "cache"
    meta = json.loads((Path(history[-1]["teacher_cache"]["path"]) / "meta.json").read_text())
    assert meta["temperatures"] == [1.0, 2.0, 4.0] and meta["format_version"] == store.FORMAT_VERSION
    steps = len(used) // 2
    assert used == [4.0] * steps + [2.0] * steps  # each epoch's lookups use that epoch's tail


def test_topk_cache_is_exact_when_the_teachers_tail_is_uniform(tmp_path: Path) -> None:
    # The one approximation is the tail's spread over its classes; an even tail loses nothing at any T.
    from distil.data import Split
    from distil.losses import kd_kl
    from distil.teachers.cache import build_cache

    teacher_logits, student_logits = _realish_logits(n=64)
    top = teacher_logits.topk(20, dim=1)
    even = torch.full_like(teacher_logits, -3.0).scatter(1, top.indices, top.values)
    split = Split(even, torch.zeros(64, dtype=torch.long))
    cached = CachedTeacher(
        build_cache(torch.nn.Identity(), split, tmp_path / "c", key="x", topk=20, temperatures=[4.0, 2.0])
    )
    for t in (1.0, 2.0, 4.0):
        got = kd_kl(student_logits, cached.lookup(torch.arange(64), temperature=t), t)
        torch.testing.assert_close(got, kd_kl(student_logits, even, t), rtol=1e-5, atol=1e-6)
