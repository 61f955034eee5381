"""Int8 quantization that makes the deployed model smaller and (where the CPU allows) faster.

Back-end: ONNX Runtime static int8 quantization (MLAS int8 kernels), because the deployed artefact is
an ONNX file and ORT's fp32 already runs the seed nets 3-5x faster than eager PyTorch at batch 1, so
any int8 gain must be measured against that. PyTorch's own paths were measured and rejected on this
kind of CPU: dynamic quantization of Linear layers gave no batch-1 gain for LargeNet (2.76 vs 2.95 ms)
and eager-mode static int8 models cannot be exported to ONNX.

Whether int8 is faster depends on the model and the CPU (small convs with few channels are often
slower in int8 than fp32 on AVX2 machines without VNNI), so :func:`quantize_onnx` never assumes: with
``fmt="auto"`` it builds each candidate (QOperator / QDQ graph format, per-tensor / per-channel
weights) and keeps the one with the lowest measured batch-1 latency.

Two modes:

* **static** (post-training): calibrate activation ranges on training samples, quantize the fp32 ONNX.
* **QAT + KD**: :func:`fake_quantize_` inserts fake-quant observers that mirror ORT's scheme (per-channel
  symmetric int8 weights, per-tensor uint8 activations) into the student, which is trained with the
  distillation loss from its full-precision teacher (:func:`quantization_aware_distill`); the fake-quant
  is then removed and the adapted weights are quantized by the same ORT static path.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from distil.errors import ConfigError, DataError, DistilError

if TYPE_CHECKING:
    from distil.config import KDConfig, QuantizeConfig, TrainConfig
    from distil.data import DataBundle
    from distil.train.engine import FitResult

__all__ = [
    "FakeQuantHandle",
    "QuantizeResult",
    "check_calibration",
    "check_quantizable",
    "fake_quantize_",
    "quantization_aware_distill",
    "quantize",
    "quantize_onnx",
]

_FORMATS = ("auto", "qoperator", "qdq")
# Float compute ops that should have become int8; any left are reported.
_COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
# Layers with parameters that fake-quant (and ORT) handle, or that fold away (norms into convs).
_QAT_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)
_QAT_PASSTHROUGH = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


# --------------------------------------------------------------------------------------------
# calibration data


def check_calibration(x: Tensor, input_shape: Sequence[int]) -> None:
    """Fail clearly when calibration samples are missing or do not fit the model's input.

    Raises:
        DataError: `x` is empty, or its per-sample shape differs from `input_shape`.
    """
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
        raise DataError(
            "the calibration set is empty: static int8 quantization needs sample inputs to measure "
            "activation ranges. Pass training samples (quantize.calibration_size > 0, data with samples)."
        )
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"calibration samples have shape {tuple(x.shape[1:])} per sample but the model takes "
            f"{tuple(input_shape)}; calibrate with data of the model's input shape (same dataset/transform)."
        )
    if not torch.isfinite(x).all():
        raise DataError("the calibration set contains NaN or Inf; clean the data before quantizing.")


class _Reader:
    """ORT CalibrationDataReader over a tensor, in batches."""

    def __init__(self, name: str, x: Tensor, batch_size: int = 64) -> None:
        self._batches = [
            {name: x[i : i + batch_size].detach().cpu().float().numpy()}
            for i in range(0, x.shape[0], batch_size)
        ]
        self._it = iter(self._batches)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


# --------------------------------------------------------------------------------------------
# post-training static int8 with ONNX Runtime


@dataclass
class QuantizeResult:
    """An int8 ONNX file and how it was chosen.

    Attributes:
        path: The int8 ``.onnx`` file.
        fmt: Graph format kept (``"qoperator"`` or ``"qdq"``).
        per_channel: Whether weights have one scale per output channel.
        candidates: Every candidate tried, with its measured batch-1 latency in ms.
        float_nodes: Compute nodes (Conv/Gemm/MatMul) left in fp32 by the quantizer, by name.
    """

    path: Path
    fmt: str
    per_channel: bool
    candidates: list[dict[str, Any]] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)


def _node_names_for(onnx_path: Path, modules: Sequence[str]) -> list[str]:
    """ONNX node names exported from the given module paths (the exporter names them /a/b/Op)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = [n.name for n in graph.node]
    found: list[str] = []
    for path in modules:
        prefix = "/" + path.replace(".", "/") + "/"
        hits = [n for n in names if n.startswith(prefix)]
        if not hits:
            raise ConfigError(
                f"layer {path!r} to keep in fp32 has no node in {onnx_path.name}; give a module path of the "
                f"exported model (its nodes: {', '.join(names[:12])}{'...' if len(names) > 12 else ''})."
            )
        found.extend(hits)
    return found


def _float_nodes(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    # In QDQ graphs a compute node fed by DequantizeLinear is fused into an int8 kernel by ORT.
    return [
        f"{n.name} ({n.op_type})"
        for n in graph.node
        if n.op_type in _COMPUTE_OPS and producer.get(n.input[0]) != "DequantizeLinear"
    ]


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Tensor,
    input_shape: Sequence[int],
    *,
    fmt: str = "auto",
    per_channel: bool | None = None,
    exclude: Sequence[str] = (),
    threads: int = 1,
    min_run_time: float = 0.3,
) -> QuantizeResult:
    """Post-training static int8 quantization of an fp32 ONNX file with ONNX Runtime.

    The fp32 graph is first pre-processed (shape inference and graph optimisation, as ORT
    recommends), then quantized with MinMax calibration on `calibration`: weights int8 (symmetric),
    activations uint8. With ``fmt="auto"`` or ``per_channel=None`` every combination is built and the
    fastest at batch 1 (ORT, `threads` threads) is kept: int8 is not always faster, so it is measured.

    Args:
        fp32_path: The fp32 model exported by :func:`distil.compress.export_onnx`.
        out_path: Where to write the int8 model.
        calibration: Sample inputs ``(N, *input_shape)`` from the training data.
        input_shape: One sample's shape.
        fmt: ``"qoperator"`` (QLinearConv/QLinearMatMul nodes), ``"qdq"`` (Quantize/Dequantize pairs
            that ORT fuses), or ``"auto"`` (measure both).
        per_channel: Per-channel weight scales; None = measure both.
        exclude: Module paths kept in fp32 (e.g. a sensitive first or last layer).
        threads: ORT intra-op threads for the latency comparison.
        min_run_time: Seconds of timing per candidate.

    Returns:
        QuantizeResult describing the kept file.

    Raises:
        DataError: Empty or mis-shaped calibration data.
        ConfigError: Unknown format, or an excluded layer not in the model.
        DistilError: onnxruntime is missing or quantization fails.
    """
    from distil.compress.export import _require_onnx
    from distil.measure import measure_onnx_latency

    _require_onnx("int8 quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if fmt not in _FORMATS:
        raise ConfigError(f"unknown quantization format {fmt!r}; valid: {', '.join(_FORMATS)}.")
    check_calibration(calibration, input_shape)
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise DistilError(f"fp32 ONNX file {str(fp32_path)!r} not found; export the model first.")
    formats = ["qoperator", "qdq"] if fmt == "auto" else [fmt]
    channels = [False, True] if per_channel is None else [per_channel]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    candidates: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the raw graph if it fails
            shutil.copyfile(fp32_path, pre)
        nodes = _node_names_for(pre, exclude) if exclude else []
        import onnx

        input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        best: tuple[float, Path, str, bool] | None = None
        for f in formats:
            for pc in channels:
                cand = Path(tmp) / f"{f}-{int(pc)}.onnx"
                try:
                    quantize_static(
                        str(pre),
                        str(cand),
                        _Reader(input_name, calibration),
                        quant_format=QuantFormat.QOperator if f == "qoperator" else QuantFormat.QDQ,
                        per_channel=pc,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=nodes,
                    )
                except Exception as exc:
                    raise DistilError(
                        f"ONNX Runtime could not quantize {fp32_path.name} ({f}, per_channel={pc}): "
                        f"{str(exc).splitlines()[0]}. Keep the failing layer in fp32 (quantize.exclude / "
                        "--exclude), or try another format."
                    ) from exc
                ms = measure_onnx_latency(
                    cand, tuple(input_shape), threads=threads, min_run_time=min_run_time
                )
                candidates.append({"format": f, "per_channel": pc, "latency_b1_ms": ms.median_ms})
                if best is None or ms.median_ms < best[0]:
                    best = (ms.median_ms, cand, f, pc)
        assert best is not None
        shutil.copyfile(best[1], out_path)
    return QuantizeResult(
        path=out_path,
        fmt=best[2],
        per_channel=best[3],
        candidates=candidates,
        float_nodes=_float_nodes(out_path),
    )


# --------------------------------------------------------------------------------------------
# quantization-aware training


def check_quantizable(model: nn.Module, exclude: Sequence[str] = ()) -> None:
    """Fail clearly on layers with parameters that int8 fake-quant cannot model.

    Raises:
        ConfigError: naming the module, its type, and the ways out.
    """
    names = {n for n, _ in model.named_modules()}
    for path in exclude:
        if path not in names:
            from distil.registry import closest

            hint = closest(path, [n for n in names if n])
            raise ConfigError(
                f"layer {path!r} to keep in fp32 is not in the model."
                + (f" Did you mean {hint!r}?" if hint else "")
            )
    skipped = {n for n, _ in model.named_modules() if any(n == p or n.startswith(p + ".") for p in exclude)}
    for name, module in model.named_modules():
        if name in skipped or isinstance(module, (*_QAT_WEIGHTED, *_QAT_PASSTHROUGH)):
            continue
        own = [p for p, _ in module.named_parameters(recurse=False)]
        if own:
            raise ConfigError(
                f"module {name or '<root>'!r} ({type(module).__name__}) holds parameters {own} that int8 "
                "quantization-aware training cannot model (only Conv and Linear weights are quantized). Fix: "
                f"keep it in fp32 (quantize.exclude: [{name!r}] / --exclude {name}), or use post-training "
                "quantization (quantize.mode: static), which leaves unsupported ops in fp32."
            )


def _weight_fq() -> nn.Module:
    import torch.ao.quantization as tq

    # Symmetric [-127, 127] per output channel: the scheme ORT uses for int8 weights.
    return tq.FakeQuantize(
        observer=tq.PerChannelMinMaxObserver,
        quant_min=-127,
        quant_max=127,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )


def _act_fq() -> nn.Module:
    import torch.ao.quantization as tq

    return tq.FakeQuantize(
        observer=tq.MovingAverageMinMaxObserver,
        quant_min=0,
        quant_max=255,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )


class FakeQuantHandle:
    """Undoes :func:`fake_quantize_`: removes observers and hooks, keeping the trained fp32 weights."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._hooks: list[Any] = []
        self._weighted: list[nn.Module] = []
        self._added: list[tuple[nn.Module, str]] = []

    def remove(self) -> nn.Module:
        """Strip fake-quant from the model and return it (a plain model with its trained weights)."""
        for hook in self._hooks:
            hook.remove()
        for module in self._weighted:
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for owner, attr in self._added:
            delattr(owner, attr)
        self._hooks, self._weighted, self._added = [], [], []
        return self._model


def fake_quantize_(model: nn.Module, exclude: Sequence[str] = ()) -> FakeQuantHandle:
    """Insert int8 fake-quantization into `model` in place, for quantization-aware training.

    Conv/Linear weights get a per-channel symmetric int8 fake-quant (a parametrization, so gradients
    pass straight through to the fp32 weights); the model input and the outputs of Conv, Linear and
    ReLU layers get a per-tensor uint8 fake-quant with moving-average ranges. The model class and its
    forward are unchanged, so it trains with any distil loss.

    Args:
        model: The model to prepare (in place).
        exclude: Module paths kept in fp32.

    Returns:
        A handle whose ``remove()`` strips the fake-quant again.

    Raises:
        ConfigError: A layer that cannot be quantized (named), or an unknown excluded path.
    """
    check_quantizable(model, exclude)
    handle = FakeQuantHandle(model)
    skipped = {n for n, _ in model.named_modules() if any(n == p or n.startswith(p + ".") for p in exclude)}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))

    def add(owner: nn.Module, attr: str, fq: nn.Module) -> nn.Module:
        owner.add_module(attr, fq.to(device))  # a submodule, so it follows .to(device) and train/eval
        handle._added.append((owner, attr))
        return fq

    input_fq = add(model, "input_fake_quant", _act_fq())
    handle._hooks.append(model.register_forward_pre_hook(lambda _m, args: (input_fq(args[0]), *args[1:])))
    for name, module in list(model.named_modules()):
        if name in skipped or not name:
            continue
        if isinstance(module, _QAT_WEIGHTED):
            parametrize.register_parametrization(module, "weight", _weight_fq().to(device))
            handle._weighted.append(module)
        if isinstance(module, (*_QAT_WEIGHTED, nn.ReLU)):
            fq = add(module, "output_fake_quant", _act_fq())
            handle._hooks.append(module.register_forward_hook(lambda _m, _a, out, fq=fq: fq(out)))
    return handle


def quantization_aware_distill(
    teacher: nn.Module,
    student: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    kd: KDConfig | None = None,
    *,
    quantize_cfg: QuantizeConfig | None = None,
    **fit_kwargs: Any,
) -> FitResult:
    """Quantization-aware training of `student` with the distillation loss from its fp32 `teacher`.

    The student is fake-quantized (:func:`fake_quantize_`, leaving ``quantize_cfg.exclude`` in fp32),
    trained with :func:`distil.api.distill`, and returned with the fake-quant stripped: fp32 weights
    adapted to int8 rounding, ready for :func:`quantize` with a ``mode="qat"`` config (which quantizes
    per channel, as trained, unless the config says otherwise).

    Returns:
        The :class:`distil.train.engine.FitResult` of the run; ``.model`` is the plain student.
    """
    from distil.api import distill

    handle = fake_quantize_(student, quantize_cfg.exclude if quantize_cfg is not None else ())
    try:
        result = distill(teacher, student, data, cfg, kd, **fit_kwargs)
    finally:
        handle.remove()
    result.model = student
    return result


def quantize(
    model: nn.Module | str | Path,
    cfg: QuantizeConfig,
    *,
    calibration: Tensor,
    out: str | Path,
    input_shape: Sequence[int] | None = None,
    opset: int | None = None,
    threads: int = 1,
    min_run_time: float = 0.3,
) -> QuantizeResult:
    """Int8 `model` (an fp32 module, or an fp32 ONNX file) as `cfg` says, written to `out`.

    A module is exported to ONNX first (next to `out`, removed afterwards). In ``cfg.mode == "qat"``
    `model` is expected to come from :func:`quantization_aware_distill`; its weights were trained with
    per-channel fake-quant, so ``cfg.per_channel=None`` means per channel there (and "measure both" in
    static mode). The first ``cfg.calibration_size`` samples of `calibration` calibrate the activations.

    Args:
        model: The fp32 model, or the path of its ONNX export.
        cfg: Mode, calibration size, graph format, weight scales and fp32 layers.
        calibration: Sample inputs ``(N, *input_shape)`` from the training data.
        out: The int8 ``.onnx`` file to write.
        input_shape: One sample's shape (default: ``calibration.shape[1:]``).
        opset: ONNX opset for exporting a module (default: the exporter's).
        threads: ONNX Runtime threads for the latency comparison of candidates.
        min_run_time: Seconds of timing per candidate.

    Returns:
        QuantizeResult describing the kept file.

    Raises:
        DataError, ConfigError, DistilError: as :func:`quantize_onnx`.
    """
    out = Path(out)
    shape = tuple(input_shape) if input_shape is not None else tuple(calibration.shape[1:])
    samples = calibration[: cfg.calibration_size]
    per_channel = cfg.per_channel
    if per_channel is None and cfg.mode == "qat":
        per_channel = True  # the fake-quant trained per-channel weights; quantize the same way
    exported: Path | None = None
    if isinstance(model, nn.Module):
        from distil.compress.export import DEFAULT_OPSET, export_onnx

        out.parent.mkdir(parents=True, exist_ok=True)
        source = out.with_name(f"{out.stem}_source.onnx")
        exported = export_onnx(model, source, shape, opset=DEFAULT_OPSET if opset is None else opset)
        fp32: str | Path = exported
    else:
        fp32 = model
    try:
        return quantize_onnx(
            fp32,
            out,
            samples,
            shape,
            fmt=cfg.format,
            per_channel=per_channel,
            exclude=cfg.exclude,
            threads=threads,
            min_run_time=min_run_time,
        )
    finally:
        if exported is not None:
            exported.unlink(missing_ok=True)
