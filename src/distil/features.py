"""Intermediate features by module path, captured with forward hooks: models are never edited for KD.

    >>> with FeatureCapture(student, ["layer2", "layer3"]) as capture:
    ...     logits = student(x)
    ...     maps = capture.features()   # [output of student.layer2, output of student.layer3]

Also: the output shape of every module (`layer_shapes`), teacher/student layer pairs proposed by stage
(`propose_pairs`) or, for transformers, by a map of block indices (`block_pairs`), and the adapters that
project a student feature onto the teacher's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from distil.errors import ConfigError
from distil.registry import closest


def module_paths(model: nn.Module) -> list[str]:
    """Every submodule path of `model` (as `named_modules` gives them), without the root."""
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, path: str, role: str = "model") -> nn.Module:
    """The submodule at dotted `path` (e.g. "layer3.1.conv2").

    Raises:
        ConfigError: the path does not exist; the message lists valid paths and the closest match.
    """
    modules = dict(model.named_modules())
    if path and path in modules:
        return modules[path]
    valid = module_paths(model)
    hint = closest(path, valid)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
    raise ConfigError(
        f"unknown module path {path!r} in the {role} ({type(model).__name__}).{did_you_mean} "
        f"Valid paths: {shown}. `distil layers MODEL` lists them with output shapes."
    )


def _first_tensor(output: Any) -> torch.Tensor:
    # Some modules return tuples (e.g. attention blocks): the first tensor is the feature.
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"a hooked module returned {type(output).__name__}, not a tensor")


class FeatureCapture:
    """Forward hooks that keep the latest output of each module in `paths`.

    Each forward overwrites the stored outputs, so after `model(x)` the capture holds exactly the
    features of `x`. `features()` hands them over and clears them, so a stale feature from an earlier
    batch can never be used by mistake (a missing forward raises instead).

    Args:
        model: the network to observe (the wrapped-for-DDP one works too: hooks live on submodules).
        paths: module paths, in the order `features()` returns them.
        detach: store detached outputs (for a frozen teacher: no graph is kept alive).
        role: "student" or "teacher", used in error messages.

    Raises:
        ConfigError: a path does not exist in `model`.
    """

    def __init__(
        self, model: nn.Module, paths: Sequence[str], *, detach: bool = False, role: str = "model"
    ) -> None:
        self.paths = list(paths)
        self.detach = detach
        self.role = role
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        modules = [resolve_module(model, p, role) for p in self.paths]
        for path, module in zip(self.paths, modules, strict=True):
            self._handles.append(module.register_forward_hook(self._hook(path)))

    def _hook(self, path: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = _first_tensor(output)
            self._outputs[path] = out.detach() if self.detach else out

        return hook

    def features(self) -> list[torch.Tensor]:
        """The captured features of the last forward, in `paths` order; clears them.

        Raises:
            RuntimeError: a module did not run since the last call (no forward, or a skipped branch).
        """
        missing = [p for p in self.paths if p not in self._outputs]
        if missing:
            raise RuntimeError(
                f"no {self.role} feature captured for {missing}: run the {self.role} forward before the loss "
                "(and check that these modules are used in forward)"
            )
        out = [self._outputs[p] for p in self.paths]
        self._outputs.clear()
        return out

    def clear(self) -> None:
        """Drop the stored features (frees their memory between steps)."""
        self._outputs.clear()

    def remove(self) -> None:
        """Remove the hooks: the model is exactly as before."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs.clear()

    def __enter__(self) -> FeatureCapture:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __getstate__(self) -> dict[str, Any]:
        # Hooks cannot be copied (deepcopy of a loss, multiprocessing); the copy captures nothing.
        state = self.__dict__.copy()
        state["_handles"], state["_outputs"] = [], {}
        return state


@dataclass(frozen=True)
class LayerInfo:
    """One module of a model and the shape of its output for one sample (batch dimension dropped)."""

    path: str
    kind: str
    shape: tuple[int, ...]
    params: int
    depth: int
    order: int  # position in execution order


def _probe(model: nn.Module, x: torch.Tensor) -> list[LayerInfo]:
    records: list[LayerInfo] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(m: nn.Module, inputs: Any, output: Any, name: str = name) -> None:
            try:
                out = _first_tensor(output)
            except TypeError:
                return
            params = sum(p.numel() for p in m.parameters())
            records.append(
                LayerInfo(name, type(m).__name__, tuple(out.shape[1:]), params, name.count("."), 0)
            )

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    # A module called twice (e.g. a shared ReLU) keeps its last output, as FeatureCapture does.
    last: dict[str, LayerInfo] = {}
    for i, r in enumerate(records):
        last[r.path] = LayerInfo(r.path, r.kind, r.shape, r.params, r.depth, i)
    return sorted(last.values(), key=lambda r: r.order)


def sample_input(model: nn.Module, input_shape: Sequence[int], batch: int = 2) -> torch.Tensor:
    """A random batch of `input_shape` (C, H, W) on the model's device (two samples: BatchNorm needs > 1)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.randn(batch, *input_shape, device=device)


def layer_shapes(model: nn.Module, x: torch.Tensor) -> list[LayerInfo]:
    """Every module of `model` with its output shape, in execution order, from one forward of `x`.

    The model is run in eval mode without gradients (running statistics are not touched).
    """
    return _probe(model, x)


def feature_shapes(
    model: nn.Module, paths: Sequence[str], x: torch.Tensor, role: str = "model"
) -> list[tuple[int, ...]]:
    """Output shapes (without the batch dimension) of the modules at `paths` for input `x`."""
    with FeatureCapture(model, paths, detach=True, role=role) as capture:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(x)
        finally:
            model.train(was_training)
        return [tuple(f.shape[1:]) for f in capture.features()]


def _stage_ends(layers: list[LayerInfo]) -> list[LayerInfo]:
    """The last shallowest 4-D output at each spatial resolution: the end of each stage."""
    # 1x1 maps (global pooling) are the embedding in disguise; it is paired separately.
    maps = [r for r in layers if len(r.shape) == 3 and r.shape[1] * r.shape[2] > 1]
    if not maps:
        return []
    top = min(r.depth for r in maps)
    ends: dict[tuple[int, ...], LayerInfo] = {}
    for r in maps:
        if r.depth == top:
            ends[r.shape[1:]] = r  # later modules at the same resolution replace earlier ones
    return sorted(ends.values(), key=lambda r: r.order)


def _embedding(layers: list[LayerInfo]) -> LayerInfo | None:
    """The module whose output feeds the classifier: the last 2-D output before the final one."""
    vectors = [r for r in layers if len(r.shape) == 1]
    return vectors[-2] if len(vectors) >= 2 else None


def propose_pairs(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """Teacher/student layer pairs by stage: `(student_path, teacher_path)`.

    Stage ends (the last top-level 4-D output at each spatial resolution) are paired at equal
    resolution; the penultimate vectors (the classifier's input) are paired last, so relational losses
    that use the last pair get the embeddings.

    Args:
        teacher: the teacher network.
        student: the student network.
        x: a sample batch both accept.

    Returns:
        Pairs in execution order; empty when the two share no resolution and have no embedding.
    """
    t_layers, s_layers = _probe(teacher, x), _probe(student, x)
    t_ends = {r.shape[1:]: r for r in _stage_ends(t_layers)}
    pairs = [(s.path, t_ends[s.shape[1:]].path) for s in _stage_ends(s_layers) if s.shape[1:] in t_ends]
    s_emb, t_emb = _embedding(s_layers), _embedding(t_layers)
    if s_emb is not None and t_emb is not None:
        pairs.append((s_emb.path, t_emb.path))
    return pairs


def transformer_blocks(model: nn.Module, role: str = "model") -> tuple[str, int]:
    """The path and length of a transformer's stack of blocks: its longest `nn.ModuleList` of one class.

    E.g. ``hf.model.layers`` (llama-style, under distil's `CausalLM`) or ``hf.transformer.h`` (GPT-2).

    Raises:
        ConfigError: the model has no such list (name the layers with kd.feature_pairs instead).
    """
    best: tuple[str, int] | None = None
    for name, module in model.named_modules():
        one_class = isinstance(module, nn.ModuleList) and len({type(m) for m in module}) == 1
        if one_class and (best is None or len(module) > best[1]):
            best = (name, len(module))
    if best is None:
        raise ConfigError(
            f"the {role} ({type(model).__name__}) has no stack of transformer blocks (an nn.ModuleList of "
            "one block class) to map layers by index; give kd.feature_pairs as module paths instead."
        )
    return best


def block_pairs(
    student: nn.Module, teacher: nn.Module, layer_map: dict[int, int] | str = "auto"
) -> list[tuple[str, str]]:
    """(student_path, teacher_path) pairs of transformer blocks from `{student_block: teacher_block}`.

    Indices count from 0; negative ones from the end (-1 is the last block). "auto" maps every student
    block i to the teacher block at the same relative depth, round((i + 1) * L_t / L_s) - 1, so the last
    blocks pair up (as DistilBERT/TinyBERT-style uniform maps do).

    Raises:
        ConfigError: an index out of range, or a model without a block stack; the message names both.
    """
    s_path, s_n = transformer_blocks(student, "student")
    t_path, t_n = transformer_blocks(teacher, "teacher")
    if layer_map == "auto":
        mapping = {i: round((i + 1) * t_n / s_n) - 1 for i in range(s_n)}
    elif isinstance(layer_map, dict):
        mapping = {int(k): int(v) for k, v in layer_map.items()}
    else:
        raise ConfigError(f"layer_map must be 'auto' or {{student_block: teacher_block}}, got {layer_map!r}")
    pairs = []
    for si, ti in mapping.items():
        if not (-s_n <= si < s_n and -t_n <= ti < t_n):
            raise ConfigError(
                f"layer_map {si}: {ti} is out of range: the student has {s_n} blocks ({s_path}), the teacher "
                f"{t_n} ({t_path}); indices count from 0, negative ones from the end."
            )
        pairs.append((f"{s_path}.{si % s_n}", f"{t_path}.{ti % t_n}"))
    return pairs


def make_adapter(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """A trainable projection of a student feature onto the teacher's shape (batch dimension excluded).

    Equal shapes give `nn.Identity`; (C_s, H, W) -> (C_t, H, W) a 1x1 convolution + BatchNorm (as in
    CRD code); (D_s,) -> (D_t,) a linear layer, and so does (T, D_s) -> (T, D_t) (per-token hidden states:
    the same linear map at every position). FitNets uses `make_regressor` instead.

    Raises:
        ConfigError: the shapes cannot be matched by a projection (different spatial sizes or ranks);
            the message names both shapes.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if s == t:
        return nn.Identity()
    if len(s) == 3 and len(t) == 3 and s[1:] == t[1:]:
        return nn.Sequential(nn.Conv2d(s[0], t[0], kernel_size=1, bias=False), nn.BatchNorm2d(t[0]))
    if len(s) == 1 and len(t) == 1:
        return nn.Linear(s[0], t[0])
    if len(s) == 2 and len(t) == 2:
        return nn.Linear(s[1], t[1])  # positions may differ from the probe's; the map is per position
    raise _unadaptable(s, t)


def make_regressor(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """The FitNets regressor: a trainable map of a student feature onto the teacher's, also for equal shapes.

    FitNets (Romero et al. 2015) always trains a regressor on the student's guided layer; RepDistiller's
    `ConvReg` is a convolution + BatchNorm + ReLU (1x1 at equal spatial size). (C_s, H, W) -> (C_t, H, W)
    gives exactly that; (D_s,) -> (D_t,) a linear layer + ReLU.

    Raises:
        ConfigError: the shapes cannot be matched (different spatial sizes or ranks); both are named.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) == 3 and len(t) == 3 and s[1:] == t[1:]:
        return nn.Sequential(
            nn.Conv2d(s[0], t[0], kernel_size=1, bias=False), nn.BatchNorm2d(t[0]), nn.ReLU()
        )
    if len(s) == 1 and len(t) == 1:
        return nn.Sequential(nn.Linear(s[0], t[0]), nn.ReLU())
    raise _unadaptable(s, t)


def _unadaptable(s: tuple[int, ...], t: tuple[int, ...]) -> ConfigError:
    return ConfigError(
        f"cannot adapt a student feature of shape {s} to a teacher feature of shape {t}: adapters project "
        "channels (1x1 conv) or vector sizes (linear) but do not resize. Pick layers at the same spatial "
        "resolution (`distil layers STUDENT --teacher TEACHER` proposes pairs)."
    )


def check_shapes(student_shape: Sequence[int], teacher_shape: Sequence[int], pair: tuple[str, str]) -> None:
    """Fail clearly when a loss needs equal shapes and no adapter is used."""
    if tuple(student_shape) != tuple(teacher_shape):
        raise ConfigError(
            f"feature pair student {pair[0]!r} {tuple(student_shape)} / teacher {pair[1]!r} "
            f"{tuple(teacher_shape)} has different shapes and adapters are off; set kd.adapters: true or "
            "pick layers of equal shape."
        )
