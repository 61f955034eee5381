"""vit-tiny: sizes, the output contract of the distillation token, spec round trip, ONNX export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distil.errors import ModelError
from distil.models import (
    TokenLogits,
    VisionTransformer,
    build_from_spec,
    create_model,
    model_spec,
    plain_logits,
)

TINY = {"dim": 16, "depth": 1, "heads": 2}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("channels", "size", "plain", "token", "smallnet"),
    [(1, 28, 105_546, 106_324, 105_866), (3, 32, 108_554, 109_332, 136_874)],
)
def test_the_default_vit_is_about_smallnets_size(
    channels: int, size: int, plain: int, token: int, smallnet: int
) -> None:
    sizes = {"num_classes": 10, "in_channels": channels, "image_size": size}
    assert _params(create_model("vit-tiny", **sizes)) == plain
    assert _params(create_model("vit-tiny", **sizes, distill_token=True)) == token
    assert _params(create_model("smallnet", **sizes)) == smallnet


@pytest.mark.parametrize(("channels", "size", "patch"), [(1, 28, 4), (3, 32, 4), (3, 16, 8), (2, 9, 3)])
def test_input_sizes_and_channels_are_respected(channels: int, size: int, patch: int) -> None:
    model = create_model(
        "vit-tiny", num_classes=5, in_channels=channels, image_size=size, patch_size=patch, **TINY
    )
    assert isinstance(model, VisionTransformer)
    assert model.pos_embed.shape[1] == (size // patch) ** 2 + 1
    assert model(torch.randn(3, channels, size, size)).shape == (3, 5)


def test_without_the_token_the_output_is_plain_logits_in_both_modes() -> None:
    model = create_model("vit-tiny", num_classes=4, in_channels=1, image_size=8, **TINY)
    x = torch.randn(2, 1, 8, 8)
    assert isinstance(model.train()(x), torch.Tensor)
    assert isinstance(model.eval()(x), torch.Tensor)


def test_with_the_token_training_gives_both_heads_and_eval_their_average() -> None:
    torch.manual_seed(0)
    model = create_model("vit-tiny", num_classes=4, in_channels=1, image_size=8, distill_token=True, **TINY)
    x = torch.randn(3, 1, 8, 8)
    heads = model.train()(x)
    assert isinstance(heads, TokenLogits)
    assert heads.cls.shape == heads.dist.shape == (3, 4)
    assert not torch.allclose(heads.cls, heads.dist)  # two heads on two tokens, not one copied
    averaged = model.eval()(x)
    assert isinstance(averaged, torch.Tensor)
    torch.testing.assert_close(averaged, (heads.cls + heads.dist) / 2)
    torch.testing.assert_close(plain_logits(heads), averaged)
    assert plain_logits(averaged) is averaged


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 30, "patch_size": 4}, "not a multiple of patch_size=4"),
        ({"dim": 30, "heads": 4}, "multiple of heads=4"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"mlp_ratio": 0}, "mlp_ratio must be a positive number"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
    ],
)
def test_bad_sizes_are_refused_with_the_fix(kwargs: dict, message: str) -> None:
    args = {"num_classes": 3, "in_channels": 1, "image_size": 28, **kwargs}
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        create_model("vit-tiny", **args)


def test_a_spec_rebuilds_the_same_architecture_and_weights_load() -> None:
    spec = model_spec("vit-tiny", num_classes=3, in_channels=1, image_size=8, distill_token=True, **TINY)
    model = build_from_spec(spec)
    copy = build_from_spec(spec)
    copy.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(copy.eval()(x), model.eval()(x))


def test_blocks_are_named_modules_for_feature_capture() -> None:
    model = create_model("vit-tiny", num_classes=3, in_channels=1, image_size=8, depth=2, dim=16, heads=2)
    names = dict(model.named_modules())
    assert {"blocks.0", "blocks.1", "head", "patch_embed"} <= set(names)


def test_onnx_export_of_the_token_model_matches_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from distil.compress.export import export_onnx, verify_onnx

    model = create_model("vit-tiny", num_classes=5, in_channels=1, image_size=8, distill_token=True, **TINY)
    model.train()  # export must use the eval output (averaged heads) without changing the caller's mode
    path = export_onnx(model, tmp_path / "vit.onnx", (1, 8, 8))
    assert model.training
    check = verify_onnx(path, model.eval(), torch.randn(6, 1, 8, 8))
    assert check.max_abs_diff < 1e-5 and check.top1_agreement == 1.0
