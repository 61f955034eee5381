"""The compression chain: distilled student -> prune -> KD fine-tune -> int8 -> ONNX, one row per stage.

Every row is measured on the artefact that would be deployed: each stage is exported to ONNX and its
accuracy, size (the .onnx file), parameters and latency come from ONNX Runtime, all with the same
thread count, so the rows compare like with like. Each export is verified against PyTorch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.compress.export import export_onnx, measure_onnx, verify_onnx
from distil.compress.prune import finish_pruning_, prune
from distil.compress.quantize import quantization_aware_distill, quantize
from distil.config import CompressConfig, KDConfig
from distil.data import DataBundle
from distil.fileio import atomic_write_json
from distil.measure import ModelMetrics, count_macs, predict
from distil.train.checkpoint import save_checkpoint
from distil.train.stages import Stage

__all__ = ["CompressResult", "compress_model"]


@dataclass
class CompressResult:
    """What the chain produced.

    Attributes:
        metrics: One row per stage, measured on its ONNX file with ONNX Runtime.
        artefacts: Stage name -> file (``.onnx``, and ``.safetensors`` checkpoints of pruned models).
        verification: Stage name -> ONNX-vs-PyTorch comparison (max abs diff, top-1 agreement).
        details: Pruning/quantization facts (ratios, candidates, sparsity, notes).
        histories: Fine-tuning records per stage.
    """

    metrics: list[ModelMetrics]
    artefacts: dict[str, Path] = field(default_factory=dict)
    verification: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def by_name(self, name: str) -> ModelMetrics:
        return next(m for m in self.metrics if m.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": [m.to_dict() for m in self.metrics],
            "artefacts": {k: str(v) for k, v in self.artefacts.items()},
            "verification": self.verification,
            "details": self.details,
        }


def compress_model(
    teacher: nn.Module,
    student: nn.Module,
    student_spec: dict[str, Any],
    data: DataBundle,
    cfg: CompressConfig,
    out_dir: str | Path,
    *,
    kd: KDConfig | None = None,
    measure_latency: bool = True,
    include_teacher: bool = True,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> CompressResult:
    """Run the compression chain on a distilled `student`, with `teacher` teaching every fine-tune.

    Stages (rows, each named by its file): ``teacher.onnx`` and ``student.onnx`` (fp32 references),
    then if ``cfg.prune``: ``pruned.onnx`` (just pruned) and ``pruned+kd.onnx`` (after KD fine-tuning
    with ``cfg.finetune``; also saved as the checkpoint ``pruned_kd``), then if ``cfg.quantize``:
    ``int8.onnx`` (static PTQ), preceded by ``qat+kd.onnx`` (fp32 weights after QAT + KD) in QAT mode.

    Args:
        teacher: The fp32 teacher (frozen; it teaches the fine-tunes and is the agreement reference).
        student: The distilled student to compress (not modified).
        student_spec: Its architecture spec.
        data: The dataset; fine-tunes train on ``data.train``, rows are measured on ``data.test``,
            exports verified on ``data.val`` (or test when there is no validation split).
        cfg: What to do.
        out_dir: Where the artefacts go (created).
        kd: Distillation loss settings for the fine-tunes.
        measure_latency: Time every artefact at batch 1 and 256.
        include_teacher: Add the teacher's ONNX row.
        log: Called with one line per finished stage.
        **fit_kwargs: Passed to :func:`distil.api.distill` (accelerator, progress, on_epoch_end).

    Returns:
        CompressResult; ``compress.json`` with the same content is written to `out_dir`.
    """
    from distil.api import distill

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _line: None)
    shape = tuple(data.input_shape)
    # The test set is measured in memory (read once from disk for on-disk data).
    x_test, y_test = data.test.head(len(data.test)), data.test.labels
    x_check = data.val.head(len(data.val)) if len(data.val) else x_test
    teacher = teacher.cpu().eval()
    teacher_logits = predict(teacher, x_test)
    result = CompressResult(metrics=[])
    threads = cfg.latency_threads

    def stage(name: str, model: nn.Module, source: nn.Module | None = None, onnx: Path | None = None) -> None:
        """Export (unless given an ONNX file), verify against `source` (default: the model), measure."""
        model = model.cpu().eval()
        path = onnx or export_onnx(model, out / name.replace("+", "_"), shape, opset=cfg.opset)
        ref = source if source is not None else model
        result.verification[name] = verify_onnx(path, ref, x_check).to_dict()
        row = measure_onnx(
            name,
            path,
            x_test,
            y_test,
            shape,
            macs=count_macs(ref, shape),
            reference_logits=None if name == "teacher.onnx" else teacher_logits,
            threads=threads,
            latency=measure_latency,
            task=data.task,
        )
        result.metrics.append(row)
        result.artefacts[name] = path
        say(f"{name}: accuracy {row.accuracy:.2%}, {row.bytes:,} bytes, {row.macs:,} MACs")

    if include_teacher:
        stage("teacher.onnx", teacher)
    current = copy.deepcopy(student).cpu().eval()
    current_spec = student_spec
    stage("student.onnx", current)

    if cfg.prune is not None:
        p = cfg.prune
        pr = prune(
            current,
            p,
            spec=current_spec,
            example_inputs=torch.zeros((1, *shape)),
            calibration=(data.train.head(256), data.train.labels[:256]) if p.criterion == "taylor" else None,
        )
        current, current_spec = pr.model, pr.spec
        result.details["prune"] = pr.details
        stage("pruned.onnx", current)
        fit = distill(
            teacher, current, data, cfg.finetune, kd, description=Stage.PRUNE_FINETUNE, **fit_kwargs
        )
        current = fit.model.cpu().eval()
        result.histories["pruned+kd.onnx"] = fit.history
        finish_pruning_(current, pr)
        save_checkpoint(
            out / Stage.PRUNED_KD, current, current_spec, {"role": Stage.PRUNED_KD, "data": data.describe()}
        )
        result.artefacts["pruned+kd.safetensors"] = out / "pruned_kd.safetensors"
        stage("pruned+kd.onnx", current)

    if cfg.quantize is not None:
        q = cfg.quantize
        calibration = data.train.head(q.calibration_size)
        source = current
        if q.mode == "qat":
            qat_student = copy.deepcopy(current)
            fit = quantization_aware_distill(
                teacher,
                qat_student,
                data,
                cfg.finetune,
                kd,
                quantize_cfg=q,
                description=Stage.QAT_KD,
                **fit_kwargs,
            )
            source = fit.model.cpu().eval()
            result.histories["qat+kd.onnx"] = fit.history
            stage("qat+kd.onnx", source)
        qr = quantize(
            source, q, calibration=calibration, out=out / "int8.onnx", opset=cfg.opset, threads=threads
        )
        result.details["quantize"] = {
            "mode": q.mode,
            "backend": "onnxruntime static int8 (uint8 activations, int8 weights, MinMax calibration)",
            "format": qr.fmt,
            "per_channel": qr.per_channel,
            "calibration_samples": int(calibration.shape[0]),
            "candidates": qr.candidates,
            "float_nodes": qr.float_nodes,
        }
        stage("int8.onnx", source, source=source, onnx=qr.path)
    atomic_write_json(out / "compress.json", result.to_dict())
    return result
