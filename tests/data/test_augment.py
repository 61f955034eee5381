from __future__ import annotations

import pytest
import torch

from distil.data import augment_batch, zero_fill
from distil.errors import ConfigError


def _batch() -> torch.Tensor:
    return torch.randn(16, 3, 8, 6, generator=torch.Generator().manual_seed(0))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["none", "crop", "crop_flip"])
def test_shape_and_dtype_preserved(kind: str) -> None:
    x = _batch()
    out = augment_batch(x, kind, 2, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype


def test_none_is_identity() -> None:
    x = _batch()
    assert torch.equal(augment_batch(x, "none", 4, _gen()), x)


def test_crop_without_padding_is_identity() -> None:
    x = _batch()
    assert torch.equal(augment_batch(x, "crop", 0, _gen()), x)


def test_crop_is_a_shifted_window_with_fill() -> None:
    x = _batch()
    fill = (-1.0, -2.0, -3.0)
    out = augment_batch(x, "crop", 2, _gen(), fill)
    padded = torch.stack([torch.full((12, 10), v) for v in fill]).expand(16, 3, 12, 10).clone()
    padded[:, :, 2:10, 2:8] = x
    for i in range(16):  # reference check, per sample on purpose
        windows = [padded[i, :, t : t + 8, c : c + 6] for t in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)  # some sample moved


def test_flip_flips_some_samples() -> None:
    x = _batch()
    out = augment_batch(x, "crop_flip", 0, _gen())
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(16)]
    kept = [torch.equal(out[i], x[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 16


def test_seeded_generator_is_deterministic() -> None:
    x = _batch()
    a = augment_batch(x, "crop_flip", 3, _gen(5))
    b = augment_batch(x, "crop_flip", 3, _gen(5))
    c = augment_batch(x, "crop_flip", 3, _gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_fill_maps_black_pixel() -> None:
    mean, std = (0.5, 0.25), (0.5, 0.125)
    assert zero_fill(mean, std) == (-1.0, -2.0)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'crop_flip'"):
        augment_batch(_batch(), "crop_flips", 2)
    with pytest.raises(ConfigError, match="padding"):
        augment_batch(_batch(), "crop", -1)
    with pytest.raises(ConfigError, match="one per channel"):
        augment_batch(_batch(), "crop", 1, fill=(0.0,))


def test_mixup_and_cutmix_are_seeded_and_mix_samples_of_the_batch() -> None:
    from distil.data.augment import mix_batch

    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 8, 8).contiguous()
    a = mix_batch(x, "mixup", 1.0, seed=3)
    assert torch.equal(a, mix_batch(x, "mixup", 1.0, seed=3)) and not torch.equal(a, x)
    # Each mixed image is a convex combination of two constant images: constant, within [0, 5].
    assert (a.amax((1, 2, 3)) == a.amin((1, 2, 3))).all() and a.min() >= 0 and a.max() <= 5
    c = mix_batch(x, "cutmix", 1.0, seed=3)
    assert torch.equal(c, mix_batch(x, "cutmix", 1.0, seed=3))
    assert set(c.unique().tolist()) <= set(range(6))  # every pixel comes from one of the images
    assert mix_batch(x, "none", 1.0, seed=3) is x
    with pytest.raises(ConfigError, match="mixup for feature vectors"):
        mix_batch(torch.zeros(4, 3), "cutmix", 1.0, seed=0)


def test_a_mixing_loader_hides_labels_and_resumes_to_identical_batches() -> None:
    from distil.data import Split, TensorLoader
    from distil.data.batch import IGNORE_INDEX

    split = Split(torch.randn(20, 1, 6, 6), torch.arange(20) % 4)
    loader = TensorLoader(split, 4, shuffle=True, seed=2, augment="crop_flip", crop_padding=1, mixing="mixup")
    loader.set_epoch(1)
    full = list(loader)
    assert all((b["labels"] == IGNORE_INDEX).all() for b in full)
    loader.set_epoch(1, start_batch=3)
    for b, ref in zip(loader, full[3:], strict=True):
        assert torch.equal(b["inputs"], ref["inputs"])


# --- replayable per-sample draws (distil.data.augment.Augmenter) ---------------------------------------

_ALL_OPS = "resized_crop+flip+jitter+randaugment"


def _rgb_augmenter(ops: str = _ALL_OPS, mixing: str = "none", **options):
    from distil.data.augment import Augmenter, AugmentSpec, parse_ops

    spec = AugmentSpec(
        parse_ops(ops),
        padding=2,
        hue=0.1,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        mixing=mixing,
        **options,
    )
    return Augmenter(spec, seed=5, mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.25), num_samples=40)


@pytest.mark.parametrize("ops", ["crop+flip", "resized_crop", "jitter", "trivial", _ALL_OPS])
def test_a_samples_augmentation_is_the_same_in_any_batch(ops: str) -> None:
    """A view depends on (seed, id, key) only: not on the batch it is in, its size or position."""
    aug = _rgb_augmenter(ops)
    x = torch.randn(40, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    ids = torch.arange(40)
    whole = aug(x, ids, 2)
    assert whole.shape == x.shape and not torch.equal(whole, x)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    for chunk in order.split(7):
        assert torch.equal(aug(x[chunk], chunk, 2), whole[chunk])
    assert not torch.equal(aug(x, ids, 3), whole)  # another epoch or view: another draw


def test_apply_replays_recorded_parameters() -> None:
    aug = _rgb_augmenter(mixing="cutmix")
    x = torch.randn(40, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    ids, keys = torch.arange(40), torch.arange(40) % 3
    params = aug.params(ids, keys, x.shape)
    assert torch.equal(aug.params(ids, keys, x.shape)["box"], params["box"])
    assert {"partner", "lam", "partner.box"} <= set(params)
    once = aug.apply(x, params)
    assert torch.equal(once, aug.apply(x, params))
    mixed = aug(x, ids, keys, fetch=lambda i: x[i])
    assert not torch.equal(mixed, once)


def test_resized_crop_of_the_whole_image_is_the_identity() -> None:
    aug = _rgb_augmenter("resized_crop", scale=(1.0, 1.0), ratio=(1.0, 1.0))
    x = torch.randn(8, 3, 10, 10)
    torch.testing.assert_close(aug(x, torch.arange(8), 0), x, rtol=1e-5, atol=1e-5)


def test_jitter_keeps_pixels_in_range_and_randaugment_draws_n_ops() -> None:
    aug = _rgb_augmenter("jitter+randaugment", randaugment_ops=3)
    x = (torch.rand(16, 3, 8, 8) - 0.4) / 0.25
    out = aug(x, torch.arange(16), 0)
    pixels = out * 0.25 + torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert aug.params(torch.arange(16), 0, x.shape)["auto_op"].shape == (16, 3)


def test_kornia_ops_without_kornia_say_how_to_install_it(monkeypatch) -> None:
    from distil.data import augment

    monkeypatch.setattr(augment, "is_kornia_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'distil\[augment\]'"):
        augment.AugmentSpec(("trivial",))
    augment.AugmentSpec(("crop", "flip", "resized_crop", "jitter"), padding=1, brightness=0.2)  # plain torch


def test_recipe_augment_names_are_checked() -> None:
    from distil.config import TrainConfig

    assert TrainConfig(augment="resized_crop+flip").augment.ops == "resized_crop+flip"
    with pytest.raises(ConfigError, match="rotate"):
        from distil.config import checked_config

        checked_config(TrainConfig, "recipe", augment="crop+rotate")
