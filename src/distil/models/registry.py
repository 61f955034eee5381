"""The model registry: `@register_model` + `create_model`, in the style of timm.

A model is named in one of four ways:

* a registered name (``"largenet"``, ``"resnet20"``, ``"tiny-cnn"``; see :func:`list_models`);
* ``"pkg.module:factory"``: a user factory, imported and called with the size arguments it accepts;
* ``"torchvision:NAME"`` or ``"timm:NAME"``: a model from those libraries (``pip install 'distil[vision]'``),
  always built with random weights so that nothing is ever downloaded.

Every registered factory has the signature
``factory(*, num_classes: int, in_channels: int, image_size: int, **kwargs) -> nn.Module``.
Checkpoints store :func:`model_spec` (plain JSON) and rebuild with :func:`build_from_spec`, so loading a
model never unpickles code. Nor does a spec choose code to run: :func:`build_from_spec` builds registered
and torchvision/timm models, but imports a ``pkg.module:factory`` only when the caller trusts that name
(the user named it, or trusts the file's author), as Hugging Face does with ``trust_remote_code``.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import inspect
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

from torch import nn

from distil.errors import ModelError, UntrustedCodeError
from distil.registry import Registry, closest, unknown_name_message

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)

MODELS: Registry[ModelFactory] = Registry("model", error=ModelError)

# The arguments create_model always supplies; everything else a factory accepts is a model kwarg.
_SIZE_ARGS = ("num_classes", "in_channels", "image_size")
_SPEC_KEYS = ("name", "num_classes", "in_channels", "image_size", "kwargs")
_VISION_HINT = "pip install 'distil[vision]'"


# Registered names whose factory loads trained weights when given this kwarg (a save_pretrained folder).
_WEIGHTS_KWARG: dict[str, str] = {}

# Spec names that are not models but built from the whole spec, e.g. ``"pruned"`` (a base spec with resized
# layers): each registered by the module that builds it (distil.models.pruned), which sits above this one.
SpecBuilder = Callable[..., nn.Module]
_SPEC_BUILDERS: dict[str, SpecBuilder] = {}


def register_spec_builder(name: str) -> Callable[[SpecBuilder], SpecBuilder]:
    """Register `builder(spec, *, trusted) -> nn.Module` for specs named `name` (see :func:`build_from_spec`).

    Raises:
        ValueError: If the name is already a spec builder's.
    """

    def decorator(builder: SpecBuilder) -> SpecBuilder:
        if name in _SPEC_BUILDERS:
            raise ValueError(f"spec name {name!r} already has a builder")
        _SPEC_BUILDERS[name] = builder
        return builder

    return decorator


def register_model(name: str, *, weights_kwarg: str | None = None) -> Callable[[F], F]:
    """Register a model factory under `name`.

    Args:
        name: The registry name, e.g. ``"resnet20"``. Must not contain ``":"`` (reserved for
            ``module:factory`` paths and backends).
        weights_kwarg: the kwarg that makes the factory load trained weights (``"path"`` for the
            Hugging Face models): such a model is a trained teacher without a distil checkpoint.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ValueError: If the name is already registered or contains ``":"``.
    """
    if ":" in name:
        raise ValueError(f"model name {name!r} must not contain ':' (reserved for 'module:factory' paths)")

    def decorator(factory: F) -> F:
        MODELS.register(name)(factory)
        if weights_kwarg is not None:
            _WEIGHTS_KWARG[name] = weights_kwarg
        return factory

    return decorator


def loads_trained_weights(name: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether `create_model(name, **kwargs)` reads trained weights itself (e.g. an ``hf-causal-lm`` given
    ``path``), so that the model needs no checkpoint to be a teacher."""
    key = _WEIGHTS_KWARG.get(name)
    return key is not None and kwargs.get(key) is not None


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted.

    Args:
        pattern: Optional shell-style filter, e.g. ``"resnet*"``.

    Returns:
        The names of registered models (user paths and torchvision/timm models are not listed).
    """
    names = MODELS.names()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def is_torchvision_available() -> bool:
    """Whether torchvision can be imported (the ``vision`` extra)."""
    return _is_available("torchvision")


def is_timm_available() -> bool:
    """Whether timm can be imported (the ``vision`` extra)."""
    return _is_available("timm")


def _is_available(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        # find_spec raises ValueError for a module in sys.modules without a spec (e.g. a test stub).
        return False


def create_model(
    name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    """Build a model by name, sized for the data.

    Args:
        name: A registered name, ``"pkg.module:factory"``, ``"torchvision:NAME"`` or ``"timm:NAME"``.
        num_classes: Number of output logits.
        in_channels: Channels of the input images (1 for grey, 3 for RGB).
        image_size: Height (= width) of the input images, in pixels.
        **kwargs: Architecture options of that model (e.g. ``width=0.5`` for ``largenet``).

    Returns:
        The model, freshly initialised (never pretrained; nothing is downloaded).

    Raises:
        ModelError: Unknown name (with the closest match), unimportable user factory, missing optional
            backend, unknown or invalid kwargs, or sizes the architecture cannot handle.
    """
    _check_sizes(name, num_classes, in_channels, image_size)
    backend, _, backend_name = name.partition(":")
    if backend == "torchvision" and backend_name:
        return _create_torchvision(backend_name, num_classes, in_channels, image_size, kwargs)
    if backend == "timm" and backend_name:
        return _create_timm(backend_name, num_classes, in_channels, kwargs)
    factory = _resolve(name)
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    call_kwargs = _bind(name, factory, sizes, kwargs)
    try:
        model = factory(**call_kwargs)
    except ModelError:
        raise
    except (TypeError, ValueError) as exc:
        # Surface a user-facing error for bad options while keeping the original traceback chained.
        raise ModelError(
            f"could not build model {name!r} with num_classes={num_classes}, in_channels={in_channels}, "
            f"image_size={image_size}, kwargs={kwargs}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module; "
            "make it return the model instance."
        )
    return model


def model_spec(
    name: str, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> dict:
    """A JSON-serialisable description of an architecture, for checkpoint sidecars.

    Args:
        name: Model name, as accepted by :func:`create_model`.
        num_classes: Number of output logits.
        in_channels: Input channels.
        image_size: Input height (= width).
        **kwargs: Architecture options; must be JSON-serialisable (tuples become lists).

    Returns:
        ``{"name", "num_classes", "in_channels", "image_size", "kwargs"}``, made only of JSON types.

    Raises:
        ModelError: If the name cannot be resolved, or a kwarg is not JSON-serialisable.
    """
    _check_sizes(name, num_classes, in_channels, image_size)
    if not name.startswith(("torchvision:", "timm:")):
        _resolve(name)  # fail now, not when the checkpoint is loaded months later
    spec = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "kwargs": dict(kwargs),
    }
    try:
        # The round trip normalises tuples to lists, so the spec equals what a sidecar reads back.
        normalised: dict = json.loads(json.dumps(spec))
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"model kwargs for {name!r} must be JSON-serialisable (numbers, strings, lists, dicts) to be "
            f"saved with a checkpoint; got {kwargs!r}: {exc}"
        ) from exc
    return normalised


def is_user_factory(name: object) -> bool:
    """Whether a model name is a ``pkg.module:factory`` path (code outside distil, torchvision and timm)."""
    if not isinstance(name, str) or ":" not in name:
        return False
    backend, _, rest = name.partition(":")
    return not (backend in ("torchvision", "timm") and rest)


def spec_factories(spec: Mapping[str, Any]) -> list[str]:
    """The ``pkg.module:factory`` names a spec would import, including those nested in ``"pruned"`` bases.

    Reads the spec only: nothing is imported.

    Raises:
        ModelError: the spec nests ``"pruned"`` bases absurdly deep (a hostile file).
    """
    return sorted(set(_walk_factories(spec)))


_MAX_NESTING = 16  # a pruned model of a pruned model...: far more than real specs, far below the stack


def _walk_factories(spec: Any, depth: int = 0) -> Iterator[str]:
    if not isinstance(spec, Mapping):
        return
    if depth > _MAX_NESTING:
        raise ModelError(
            f"model spec nests 'pruned' bases more than {_MAX_NESTING} deep; it was not written by distil."
        )
    name = spec.get("name")
    if is_user_factory(name):
        yield str(name)
    kwargs = spec.get("kwargs")
    if name == "pruned" and isinstance(kwargs, Mapping):
        yield from _walk_factories(kwargs.get("base"), depth + 1)


def _walk_remote_code(spec: Any, depth: int = 0) -> Iterator[str]:
    """The model directories whose own code a spec asks to run (``trust_remote_code``), pruned bases too."""
    if not isinstance(spec, Mapping) or depth > _MAX_NESTING:
        return
    kwargs = spec.get("kwargs")
    if not isinstance(kwargs, Mapping):
        return
    if kwargs.get("trust_remote_code"):
        yield str(kwargs.get("path", "?"))
    if spec.get("name") == "pruned":
        yield from _walk_remote_code(kwargs.get("base"), depth + 1)


def check_trusted(spec: Mapping[str, Any], trusted: Collection[str] | bool = ()) -> None:
    """Refuse a spec that names a user factory the caller does not trust, before anything is imported.

    Args:
        spec: A model spec, e.g. read from a checkpoint sidecar.
        trusted: ``True`` trusts every factory; otherwise the ``pkg.module:factory`` names that may be
            imported (those the user named). Registered and torchvision/timm models are always allowed.

    A spec asking to run a Hugging Face directory's own code (``trust_remote_code`` in its kwargs) is
    refused unless ``trusted`` is True (``--trust-code``).

    Raises:
        UntrustedCodeError: naming the factories (or directories) whose code would have run.
    """
    named = spec_factories(spec)  # walked even when trusted: it also refuses absurd nesting
    if trusted is True:
        return
    remote = sorted(set(_walk_remote_code(spec)))
    if remote:
        # A Hugging Face directory's own code (trust_remote_code) runs only when the user trusts the file
        # as a whole: naming "hf-causal-lm" says nothing about the code inside that directory.
        shown = ", ".join(repr(r) for r in remote)
        raise UntrustedCodeError(
            remote,
            what="Hugging Face model directory with its own code (trust_remote_code)",
            message=f"the model spec asks to run the Python code in the Hugging Face model directory {shown} "
            "(trust_remote_code: true in its kwargs); distil runs a directory's own code only when you also "
            "pass --trust-code (trust_code: true in the recipe, trust_code=True in Python), and only for "
            "files whose author you trust.",
        )
    allowed = set() if trusted is False else set(trusted)
    untrusted = [f for f in named if f not in allowed]
    if untrusted:
        raise UntrustedCodeError(
            untrusted, fix=f"build_from_spec(spec, trusted=[{untrusted[0]!r}]) for a spec of your own"
        )


def build_from_spec(spec: Mapping[str, Any], *, trusted: Collection[str] | bool = ()) -> nn.Module:
    """Rebuild a model from :func:`model_spec` output (e.g. read from a checkpoint's JSON sidecar).

    Args:
        spec: Mapping with keys ``name``, ``num_classes``, ``in_channels``, ``image_size``, ``kwargs``.
        trusted: The ``pkg.module:factory`` names that may be imported and called (the ones the user
            named), or ``True`` to trust any (only for specs whose author you trust). Registered names and
            torchvision/timm models are always allowed; by default no user factory is.

    Returns:
        A freshly initialised model of that architecture; load the weights separately.

    Raises:
        ModelError: If keys are missing or unknown, or the model cannot be built.
        UntrustedCodeError: If the spec names a user factory that is not trusted (nothing was imported).
    """
    if not isinstance(spec, Mapping):
        raise ModelError(
            f"a model spec must be a mapping with keys {list(_SPEC_KEYS)}; got {type(spec).__name__}"
        )
    check_trusted(spec, trusted)
    missing = [k for k in _SPEC_KEYS if k not in spec]
    extra = sorted(set(spec) - set(_SPEC_KEYS))
    if missing or extra:
        raise ModelError(
            f"invalid model spec: missing keys {missing}, unknown keys {extra}. "
            f"A spec has exactly {list(_SPEC_KEYS)}; create one with distil.models.model_spec(...)."
        )
    kwargs = spec["kwargs"]
    if not isinstance(kwargs, Mapping):
        raise ModelError(f"model spec 'kwargs' must be a mapping, got {type(kwargs).__name__}: {kwargs!r}")
    builder = _SPEC_BUILDERS.get(spec["name"])
    if builder is not None:  # e.g. a structurally pruned model: its base with resized layers
        return builder(spec, trusted=trusted)
    return create_model(
        spec["name"],
        num_classes=spec["num_classes"],
        in_channels=spec["in_channels"],
        image_size=spec["image_size"],
        **dict(kwargs),
    )


def _check_sizes(name: str, num_classes: int, in_channels: int, image_size: int) -> None:
    for arg, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
    ):
        # bool is an int subclass; True classes is always a mistake.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"model {name!r}: {arg} must be a positive integer, got {value!r}.")


def _resolve(name: str) -> ModelFactory:
    """The factory for a registered name or a ``pkg.module:factory`` path (backends excluded)."""
    if not isinstance(name, str) or not name:
        raise ModelError(
            f"a model name must be a non-empty string, got {name!r}. Valid: {', '.join(MODELS)}."
        )
    if ":" not in name:
        if name in MODELS:
            return MODELS.get(name)
        raise ModelError(
            unknown_name_message("model", name, MODELS.names())
            + " Or give a user factory as 'pkg.module:factory', or 'torchvision:NAME' / 'timm:NAME'."
        )
    module_name, _, attr_path = name.partition(":")
    if not module_name or not attr_path:
        raise ModelError(
            f"model path {name!r} must look like 'pkg.module:factory' (module and attribute both given)."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"cannot import module {module_name!r} for model {name!r}: {exc}. Fix: make sure the module is "
            "installed or on PYTHONPATH, and that its own imports succeed."
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            public = [a for a in dir(obj) if not a.startswith("_") and callable(getattr(obj, a, None))]
            hint = closest(part, public)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ModelError(
                f"{getattr(obj, '__name__', module_name)!r} has no attribute {part!r} (model {name!r})."
                f"{did_you_mean} Fix: point to a function or class that returns an nn.Module."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"model path {name!r} names a {type(obj).__name__}, not a callable factory.")
    factory: ModelFactory = obj
    return factory


def _bind(name: str, factory: ModelFactory, sizes: dict[str, int], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments to call `factory` with: the size args it accepts plus validated kwargs."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {**sizes, **kwargs}  # no introspectable signature (e.g. a C function): pass all, hope
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    keyword_params = {
        n: p
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    options = sorted(n for n in keyword_params if n not in _SIZE_ARGS)
    unknown = sorted(k for k in kwargs if k not in keyword_params or k in _SIZE_ARGS)
    if unknown and not takes_var_kw:
        hints = [h for h in (closest(k, options) for k in unknown) if h]
        did_you_mean = f" Did you mean {', '.join(map(repr, hints))}?" if hints else ""
        valid = ", ".join(options) if options else "none"
        raise ModelError(
            f"model {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}.{did_you_mean} "
            f"Valid arguments: {valid}."
        )
    call = {k: v for k, v in sizes.items() if k in keyword_params or takes_var_kw}
    call.update(kwargs)
    required = [
        n for n, p in keyword_params.items() if p.default is inspect.Parameter.empty and n not in call
    ]
    if required:
        raise ModelError(
            f"model factory {name!r} requires argument(s) {', '.join(map(repr, required))} that were not "
            "given; pass them as model kwargs or give them defaults."
        )
    return call


def _create_torchvision(
    name: str, num_classes: int, in_channels: int, image_size: int, kwargs: dict[str, Any]
) -> nn.Module:
    if not is_torchvision_available():
        raise ModelError(
            f"model 'torchvision:{name}' needs torchvision, which is not installed: {_VISION_HINT}"
        )
    if in_channels != 3:
        raise ModelError(
            f"torchvision models take 3-channel images; got in_channels={in_channels}. Convert the data to "
            "RGB, or use a distil model (see distil.models.list_models())."
        )
    _refuse_pretrained(f"torchvision:{name}", kwargs, ("weights", "pretrained", "weights_backbone"))
    import torchvision.models as tvm

    available = set(tvm.list_models()) if hasattr(tvm, "list_models") else None
    if available is not None and name not in available:
        raise ModelError(unknown_name_message("torchvision model", name, available))
    try:
        # weights=None always: building a model must never touch the network.
        model: nn.Module = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"could not build 'torchvision:{name}' with num_classes={num_classes}, kwargs={kwargs} "
            f"(image_size={image_size}): {exc}"
        ) from exc
    return model


def _create_timm(name: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> nn.Module:
    if not is_timm_available():
        raise ModelError(f"model 'timm:{name}' needs timm, which is not installed: {_VISION_HINT}")
    # checkpoint_path reads (and may unpickle) a file, cache_dir chooses where timm writes: a spec read
    # from a sidecar must not pick either.
    _refuse_pretrained(
        f"timm:{name}",
        kwargs,
        ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"),
    )
    import timm

    if hasattr(timm, "list_models") and not timm.list_models(name):
        raise ModelError(
            f"unknown timm model {name!r}. List them with timm.list_models('*pattern*'); "
            "note that distil never downloads pretrained weights."
        )
    try:
        # pretrained=False always: building a model must never touch the network.
        model: nn.Module = timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
        )
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"could not build 'timm:{name}' with kwargs={kwargs}: {exc}") from exc
    return model


def _refuse_pretrained(name: str, kwargs: dict[str, Any], keys: tuple[str, ...]) -> None:
    given = [k for k in keys if k in kwargs]
    if given:
        raise ModelError(
            f"model {name!r}: {', '.join(given)} cannot be set; distil builds models with random weights and "
            "never downloads. To start from trained weights, load a checkpoint or state_dict after building."
        )
