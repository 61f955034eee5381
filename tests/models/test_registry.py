from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

import distil.models.registry as registry_module
from distil.errors import ModelError
from distil.models import (
    MODELS,
    build_from_spec,
    create_model,
    list_models,
    model_spec,
    register_model,
)

SHAPES = [(1, 28), (3, 32), (1, 8)]
# ResNets use adaptive pooling; 32x32 and 8x8 cover them, 28x28 would only add time.
CASES = [
    (name, c, size)
    for name in list_models()
    for c, size in SHAPES
    if not (name.startswith("resnet") and size == 28)
    and not name.startswith("hf-")  # token models: tests/models/test_hf.py
    and name not in ("lstm-classifier", "gru-lm", "lstm-lm")  # token models: tests/models/test_recurrent.py
    and name != "crepe"  # (N, 1024) audio frames and 360 bins only: tests/models/test_crepe.py
    and name != "tiny-segnet"  # per-pixel (B, K, H, W) outputs: tests/models/test_seg.py
]


def test_list_models_has_every_family() -> None:
    names = list_models()
    assert names == sorted(names)
    for name in ("largenet", "smallnet", "mlp", "tiny-cnn", "resnet20", "resnet8x4", "resnet32x4"):
        assert name in names
    assert list_models("resnet*x4") == ["resnet32x4", "resnet8x4"]
    assert len(MODELS) == len(names)


@pytest.mark.parametrize(("name", "c", "size"), CASES)
def test_every_model_forward_shape(name: str, c: int, size: int) -> None:
    model = create_model(name, num_classes=7, in_channels=c, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, c, size, size))
    assert out.shape == (2, 7)


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ModelError) as info:
        create_model("largnet", num_classes=10)
    message = str(info.value)
    assert "Did you mean 'largenet'?" in message
    assert "resnet20" in message  # lists the valid ones


def test_unknown_kwarg_names_valid_ones() -> None:
    with pytest.raises(ModelError) as info:
        create_model("largenet", num_classes=10, widht=0.5)
    message = str(info.value)
    assert "'widht'" in message and "Did you mean 'width'?" in message
    assert "dropout, norm, width" in message


def test_kwarg_for_model_without_options() -> None:
    with pytest.raises(ModelError, match="Valid arguments: none"):
        create_model("resnet20", num_classes=10, width=2)


@pytest.mark.parametrize("bad", [{"num_classes": 0}, {"in_channels": -1}, {"image_size": 2.5}])
def test_bad_sizes(bad: dict[str, Any]) -> None:
    sizes: dict[str, Any] = {"num_classes": 10, "in_channels": 3, "image_size": 32, **bad}
    with pytest.raises(ModelError, match="positive integer"):
        create_model("tiny-cnn", **sizes)


def test_user_factory_gets_only_accepted_args() -> None:
    model = create_model(
        "tests.models.user_factory:make", num_classes=4, in_channels=1, image_size=8, hidden=5
    )
    out = model(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 4)


def test_user_factory_with_var_kwargs_gets_everything() -> None:
    from tests.models import user_factory

    model = create_model(
        "tests.models.user_factory:make_conv", num_classes=3, in_channels=2, image_size=6, x=1
    )
    assert model(torch.zeros(1, 2, 6, 6)).shape == (1, 3)
    assert user_factory.make_conv.last_kwargs == {"x": 1}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("tests.models.no_such_module:make", "cannot import module 'tests.models.no_such_module'"),
        ("tests.models.user_factory:mak", "Did you mean 'make'"),
        ("tests.models.user_factory:NOT_CALLABLE", "not a callable"),
        ("tests.models.user_factory:", "pkg.module:factory"),
        (":make", "pkg.module:factory"),
        ("tests.models.user_factory:needs_depth", "requires argument"),
        ("tests.models.user_factory:not_a_model", "not a torch.nn.Module"),
    ],
)
def test_bad_user_paths(path: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        create_model(path, num_classes=10)


def test_user_factory_unknown_kwarg() -> None:
    with pytest.raises(ModelError, match="Valid arguments: hidden"):
        create_model("tests.models.user_factory:make", num_classes=10, depth=3)


@pytest.mark.parametrize(
    ("name", "sizes", "kwargs"),
    [
        ("largenet", (10, 1, 28), {"width": 0.5, "dropout": 0.1}),
        ("smallnet", (10, 3, 32), {}),
        ("mlp", (10, 1, 8), {"hidden": (32, 16)}),
        ("resnet8x4", (100, 3, 32), {}),
        ("tiny-cnn", (2, 1, 8), {}),
        ("tests.models.user_factory:make_conv", (3, 2, 6), {}),
    ],
)
def test_spec_round_trip(name: str, sizes: tuple[int, int, int], kwargs: dict[str, Any]) -> None:
    classes, channels, size = sizes
    spec = model_spec(name, classes, channels, size, **kwargs)
    assert set(spec) == {"name", "num_classes", "in_channels", "image_size", "kwargs"}
    reloaded = json.loads(json.dumps(spec))
    assert reloaded == spec
    original = create_model(name, num_classes=classes, in_channels=channels, image_size=size, **kwargs)
    rebuilt = build_from_spec(reloaded, trusted=[name])  # a user factory must be named to be imported
    assert type(rebuilt) is type(original)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in original.state_dict().items()
    }


def test_spec_rejects_unknown_name_and_unserialisable_kwargs() -> None:
    with pytest.raises(ModelError, match="Did you mean 'largenet'"):
        model_spec("largnet", 10, 1, 28)
    with pytest.raises(ModelError, match="JSON-serialisable"):
        model_spec("largenet", 10, 1, 28, width=object())


def test_build_from_spec_rejects_bad_specs() -> None:
    spec = model_spec("tiny-cnn", 10, 1, 8)
    with pytest.raises(ModelError, match="missing keys \\['kwargs'\\]"):
        build_from_spec({k: v for k, v in spec.items() if k != "kwargs"})
    with pytest.raises(ModelError, match="unknown keys \\['extra'\\]"):
        build_from_spec({**spec, "extra": 1})
    with pytest.raises(ModelError, match="mapping"):
        build_from_spec([1, 2])  # type: ignore[arg-type]


def test_torchvision_missing_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "is_torchvision_available", lambda: False)
    with pytest.raises(ModelError) as info:
        create_model("torchvision:resnet18", num_classes=10)
    assert "pip install 'distil[vision]'" in str(info.value)
    assert "torchvision" in str(info.value)


def test_timm_missing_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "is_timm_available", lambda: False)
    with pytest.raises(ModelError, match="pip install 'distil\\[vision\\]'"):
        create_model("timm:resnet18", num_classes=10)


def _fake_torchvision(monkeypatch: pytest.MonkeyPatch, calls: list[dict[str, Any]]) -> None:
    def get_model(name: str, **kwargs: Any) -> nn.Module:
        calls.append({"name": name, **kwargs})
        return nn.Linear(3, kwargs["num_classes"])

    models = types.ModuleType("torchvision.models")
    models.get_model = get_model  # type: ignore[attr-defined]
    models.list_models = lambda: ["resnet18", "mobilenet_v3_small"]  # type: ignore[attr-defined]
    package = types.ModuleType("torchvision")
    package.models = models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    monkeypatch.setattr(registry_module, "is_torchvision_available", lambda: True)


def test_torchvision_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    _fake_torchvision(monkeypatch, calls)
    model = create_model("torchvision:resnet18", num_classes=5)
    assert isinstance(model, nn.Linear)
    assert calls == [{"name": "resnet18", "weights": None, "num_classes": 5}]
    with pytest.raises(ModelError, match="never downloads"):
        create_model("torchvision:resnet18", num_classes=5, weights="DEFAULT")
    with pytest.raises(ModelError, match="Did you mean 'resnet18'"):
        create_model("torchvision:resnet19", num_classes=5)
    with pytest.raises(ModelError, match="3-channel"):
        create_model("torchvision:resnet18", num_classes=5, in_channels=1)


def test_register_model_rejects_duplicates_and_colons() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("largenet")(lambda **_: nn.Identity())
    with pytest.raises(ValueError, match="':'"):
        register_model("a:b")
    assert "a:b" not in MODELS


def test_loads_trained_weights_is_asked_of_the_registry():
    from distil.models import loads_trained_weights

    # The Hugging Face factories read trained weights from `path`; built from a config they are random.
    assert loads_trained_weights("hf-causal-lm", {"path": "some/dir"})
    assert loads_trained_weights("hf-seq-classifier", {"path": "some/dir"})
    assert not loads_trained_weights("hf-causal-lm", {"config": {"model_type": "llama"}})
    assert not loads_trained_weights("hf-causal-lm", {"path": None})
    # Other models need a checkpoint, whatever their kwargs (a 'path' kwarg means nothing to them).
    assert not loads_trained_weights("largenet", {"path": "x"})
    assert not loads_trained_weights("pkg.module:factory", {"path": "x"})
