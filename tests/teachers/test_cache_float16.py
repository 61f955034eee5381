"""Issue 26.4: the float16 teacher cache refuses outputs it cannot hold instead of storing inf."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distil.errors import ConfigError
from distil.teachers.store import FullLogits


def test_outputs_beyond_float16_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"teacher_cache.mode=off"):
        FullLogits().encode(torch.tensor([[1.0, 2.5e5]]))


def test_outputs_within_float16_are_stored() -> None:
    stored = FullLogits().encode(torch.tensor([[1.0, -6.0e4]]))["values.f16"]
    assert stored.dtype.name == "float16" and float(stored[0, 1]) == pytest.approx(-6.0e4, rel=1e-3)


def test_a_regression_cache_keeps_outputs_of_2000_plus_minus_1(tmp_path, monkeypatch) -> None:
    # float16 has 3 significant digits: 2000 +- 1 would be stored as whole numbers (R^2 0.92 against the live
    # teacher); regression caches are float32 and keyed apart from any float16 cache of the same teacher.

    from distil.data import load_dataset
    from distil.teachers.cache import fingerprint, open_or_build

    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "default-cache"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (2000 + rng.normal(size=(64, 1))).astype(np.float32)
    np.savez(tmp_path / "r.npz", x=x, y=y, x_test=x[:8], y_test=y[:8])
    data = load_dataset("npz", root=tmp_path / "r.npz", task="regression")
    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 1).eval()
    with torch.no_grad():
        teacher.bias.fill_(2000.0)
    cached, _ = open_or_build(teacher, data, cache_dir=tmp_path / "c", batch_size=16)
    live = torch.cat([teacher(xb["inputs"].flatten(1)).detach() for xb in _batches(data)])
    rows = torch.arange(len(live))
    assert cached.values.dtype == torch.float32
    assert torch.allclose(cached.lookup(rows), live, rtol=0, atol=1e-3)
    assert fingerprint(teacher, data, augment="none") != fingerprint(
        teacher, data, augment="none", form=FullLogits()
    )


def _batches(data):
    from torch.utils.data import DataLoader

    return DataLoader(data.train, batch_size=16, shuffle=False)


def test_full_cache_precision_is_float32_for_values() -> None:
    live = 2000 + torch.randn(2000, 1, generator=torch.Generator().manual_seed(0))
    stored = FullLogits(precision="float32").encode(live)["values.f32"]
    assert stored.dtype.name == "float32" and np.array_equal(stored, live.numpy())
    with pytest.raises(ConfigError, match="precision"):
        FullLogits(precision="float64")
