"""ONNX export with a dynamic batch axis, verified against PyTorch with ONNX Runtime.

The exported file is the artefact that gets deployed, so it is checked on real data: the largest
absolute logit difference and the top-1 agreement with the PyTorch model it came from.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distil.errors import DataError, DistilError
from distil.fileio import apply_umask
from distil.measure.onnxrt import INSTALL_HINT, onnx_session

__all__ = [
    "OnnxVerification",
    "export_onnx",
    "is_onnx_available",
    "measure_onnx",
    "onnx_parameter_count",
    "onnx_predict",
    "onnx_session",
    "verify_onnx",
]

_INSTALL_HINT = INSTALL_HINT
DEFAULT_OPSET = 17


def is_onnx_available() -> bool:
    """Whether onnx and onnxruntime can be imported (the ``compress`` extra)."""
    return all(importlib.util.find_spec(p) is not None for p in ("onnx", "onnxruntime"))


def _require_onnx(what: str) -> None:
    if not is_onnx_available():
        raise DistilError(f"{what} needs onnx and onnxruntime, which are not installed: {_INSTALL_HINT}")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...],
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    input_dtype: torch.dtype = torch.float32,
    dynamic_sequence: bool = False,
) -> Path:
    """Export `model` to ONNX (TorchScript exporter), written atomically.

    Args:
        model: The model; exported in eval mode on CPU (its own flags and device are not changed).
        path: Destination ``.onnx`` file.
        input_shape: One sample's shape, e.g. ``(1, 28, 28)``.
        opset: ONNX opset version.
        dynamic_batch: Make the batch axis symbolic so any batch size runs.
        input_dtype: The input's dtype: ``torch.long`` for token ids (a text model's input).
        dynamic_sequence: Make axis 1 (a token model's sequence) symbolic too, in the input and, when the
            model returns one output per position (a language model's (B, T, V)), in the logits.

    Returns:
        The path written.

    Raises:
        DistilError: onnx is missing, or the exporter rejects an operator (the message names it).
    """
    _require_onnx("ONNX export")
    import copy

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Export a CPU eval copy so the caller's model keeps its device and training flags.
    exportable = copy.deepcopy(model).cpu().eval()
    dummy = torch.zeros((1, *input_shape), dtype=input_dtype)
    axes = _dynamic_axes(exportable, dummy, dynamic_batch, dynamic_sequence)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    apply_umask(tmp)  # the exporter writes into this file, which keeps mkstemp's 0600 otherwise
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is chosen on purpose (stable for these nets, no onnxscript needed).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                exportable,
                (dummy,),
                tmp,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        os.replace(tmp, path)
    except Exception as exc:  # the exporter raises many types; name the failure and the way out
        Path(tmp).unlink(missing_ok=True)
        raise DistilError(
            f"ONNX export of {type(model).__name__} failed: {str(exc).splitlines()[0]}. If an operator is "
            f"unsupported at opset {opset}, try a newer opset (export.opset / --opset), or replace that layer."
        ) from exc
    return path


def _dynamic_axes(
    model: nn.Module, dummy: Tensor, batch: bool, sequence: bool
) -> dict[str, dict[int, str]] | None:
    """The exporter's ``dynamic_axes``: batch (axis 0) and/or sequence (axis 1, also of per-token logits)."""
    if not (batch or sequence):
        return None
    axes: dict[str, dict[int, str]] = {"input": {}, "logits": {}}
    if batch:
        axes["input"][0] = axes["logits"][0] = "batch"
    if sequence:
        axes["input"][1] = "sequence"
        with torch.no_grad():
            per_token = model(dummy).dim() == 3  # (B, T, V): one output per position
        if per_token:
            axes["logits"][1] = "sequence"
    return axes


def onnx_predict(path: str | Path, x: Tensor, batch_size: int = 512, threads: int | None = None) -> Tensor:
    """Logits of the ONNX model at `path` on `x`, computed in batches with ONNX Runtime.

    Raises:
        DataError: The model rejects inputs of this shape.
    """
    import numpy as np

    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    outputs: list[np.ndarray] = []
    for start in range(0, x.shape[0], batch_size):
        part = x[start : start + batch_size].detach().cpu()
        # Token ids stay integers (an embedding's input); anything else is the float the export traced.
        chunk = (part.float() if part.is_floating_point() else part.long()).numpy()
        try:
            outputs.append(session.run(None, {name: chunk})[0])
        except Exception as exc:  # onnxruntime's exception types are not importable
            raise DataError(
                f"{str(path)!r} rejected inputs of shape {tuple(chunk.shape)}: {str(exc).splitlines()[0]}. "
                "Use data with the shape the model was exported for."
            ) from exc
    return torch.from_numpy(np.concatenate(outputs)) if outputs else torch.empty(0)


def onnx_parameter_count(path: str | Path) -> int:
    """Weights stored in the ONNX file: elements of float and integer initializers of rank >= 1.

    Scalars (quantization scales, zero points, shape constants) are not counted.
    """
    _require_onnx("reading an ONNX model")
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    count = 0
    for init in model.graph.initializer:
        dims = list(init.dims)
        if len(dims) >= 1 and init.data_type != onnx.TensorProto.INT64:
            n = 1
            for d in dims:
                n *= d
            count += n
    return count


@dataclass(frozen=True)
class OnnxVerification:
    """How closely an ONNX file reproduces its PyTorch model on data.

    Attributes:
        samples: Inputs compared.
        max_abs_diff: Largest absolute logit difference.
        top1_agreement: Fraction of samples with the same predicted class.
    """

    samples: int
    max_abs_diff: float
    top1_agreement: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def verify_onnx(path: str | Path, model: nn.Module, x: Tensor, batch_size: int = 256) -> OnnxVerification:
    """Run ONNX Runtime and PyTorch on the same `x` and compare their logits.

    Args:
        path: The exported file.
        model: The PyTorch model it was exported from (or, for an int8 file, its fp32 source).
        x: Inputs, e.g. the validation set; batches of `batch_size` exercise the dynamic batch axis.

    Raises:
        DataError: `x` is empty, or the model rejects its shape.
    """
    from distil.measure import predict

    if x.shape[0] == 0:
        raise DataError("cannot verify an ONNX export on 0 samples; pass validation or test inputs.")
    ours = onnx_predict(path, x, batch_size)
    ref = predict(model, x, batch_size).cpu()
    return OnnxVerification(
        samples=int(x.shape[0]),
        max_abs_diff=float((ours - ref).abs().max()),
        # The last axis holds the classes: (B, K) of a classifier, (B, T, V) of a language model.
        top1_agreement=float((ours.argmax(-1) == ref.argmax(-1)).float().mean()),
    )


def measure_onnx(
    name: str,
    path: str | Path,
    x: Tensor,
    y: Tensor,
    input_shape: tuple[int, ...],
    *,
    macs: int,
    reference_logits: Tensor | None = None,
    threads: int | None = 1,
    latency: bool = True,
    min_run_time: float = 0.5,
    task: str = "classification",
) -> Any:
    """One report row for a deployed ONNX file: everything measured on the file with ONNX Runtime.

    Args:
        name: Row label.
        path: The ``.onnx`` file; its size is the row's bytes.
        x, y: Evaluation inputs and labels.
        input_shape: One sample's shape.
        macs: MACs per sample of the network (counted on its PyTorch form; int8 MACs for int8 files).
        reference_logits: The teacher's logits on `x`, for top-1 agreement.
        threads: ORT intra-op threads for the latency measurements (and the evaluation); give a run's
            PyTorch rows the same count so that one report's latencies compare.
        latency: Measure latency at batch 1 and throughput at batch 256.
        task: The data's task (``TASKS``): its metrics fill the row (multilabel: mAP, regression: R^2, ...).

    Returns:
        distil.measure.ModelMetrics.
    """
    from distil.measure import THROUGHPUT_BATCH_SIZE, ModelMetrics, measure_onnx_latency
    from distil.measure.latency import MAX_LATENCY_SPREAD
    from distil.measure.tasks import MetricInputs, task_metrics

    logits = onnx_predict(path, x, threads=threads)
    quality = task_metrics(task, MetricInputs(logits, y, reference_logits))
    row = ModelMetrics(
        name=name,
        accuracy=float(quality.pop("accuracy") or 0.0),
        agreement=quality.pop("agreement", None),
        params=onnx_parameter_count(path),
        bytes=Path(path).stat().st_size,
        macs=macs,
        task=task,
        extra=quality,
    )
    if latency:
        b1 = measure_onnx_latency(path, input_shape, threads=threads, min_run_time=min_run_time)
        big = measure_onnx_latency(
            path, input_shape, batch_size=THROUGHPUT_BATCH_SIZE, threads=threads, min_run_time=min_run_time
        )
        row.latency_b1_ms, row.latency_b1_spread = b1.median_ms, b1.spread
        row.latency_reliable = b1.spread <= MAX_LATENCY_SPREAD  # marked like a PyTorch row's
        row.throughput_b256 = big.throughput
    return row
