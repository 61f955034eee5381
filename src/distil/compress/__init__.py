"""Compression beyond distillation: structured and unstructured pruning, int8 quantization, ONNX export.

One module per job:

* :mod:`distil.compress.prune` -- structured pruning with Torch-Pruning, saved as a rebuildable spec
  (:mod:`distil.models.pruned`, so loading needs nothing from here).
* :mod:`distil.compress.sparsity` -- unstructured magnitude pruning and an honest sparsity report.
* :mod:`distil.compress.quantize` -- ONNX Runtime static int8 (measured format choice) and QAT + KD.
* :mod:`distil.compress.export` -- ONNX export, verification against PyTorch, ONNX measurement.
* :mod:`distil.compress.chain` -- the stage chain: prune -> KD fine-tune -> int8 -> ONNX, one row each.

Each technique is a verb taking its config: ``prune(model, PruneConfig(...), spec=..., example_inputs=...)``,
``quantize(model_or_onnx, QuantizeConfig(...), calibration=..., out=...)``; ``compress_model`` chains them.

Torch-Pruning, onnx and onnxruntime are imported only when used (``pip install 'distil[compress]'``);
a saved pruned model loads without any of them.
"""

from distil.compress.chain import CompressResult, compress_model
from distil.compress.export import (
    OnnxVerification,
    export_onnx,
    is_onnx_available,
    measure_onnx,
    onnx_parameter_count,
    onnx_predict,
    verify_onnx,
)
from distil.compress.prune import (
    CRITERIA,
    PruneResult,
    finish_pruning_,
    is_torch_pruning_available,
    prune,
)
from distil.compress.quantize import (
    QuantizeResult,
    check_calibration,
    fake_quantize_,
    quantization_aware_distill,
    quantize,
)
from distil.compress.sparsity import SparsityReport, fold_masks_, magnitude_prune_, sparsity_report

__all__ = [
    "CRITERIA",
    "CompressResult",
    "OnnxVerification",
    "PruneResult",
    "QuantizeResult",
    "SparsityReport",
    "check_calibration",
    "compress_model",
    "export_onnx",
    "fake_quantize_",
    "finish_pruning_",
    "fold_masks_",
    "is_onnx_available",
    "is_torch_pruning_available",
    "magnitude_prune_",
    "measure_onnx",
    "onnx_parameter_count",
    "onnx_predict",
    "prune",
    "quantization_aware_distill",
    "quantize",
    "sparsity_report",
    "verify_onnx",
]
