"""The one ONNX Runtime session factory: every ONNX file distil runs or times is opened here.

Verification, prediction, in-process latency (``measure_onnx_latency``, ``distil compress``) and the
separate latency probe of ``distil shrink`` all open their sessions with :func:`onnx_session`, so the
thread settings, provider and graph optimisation behind every ONNX figure are the same:

* ``intra_op_num_threads = threads`` (``None``: ONNX Runtime's default, one per physical core), the
  count that reports compare with torch's ``torch.set_num_threads``;
* ``inter_op_num_threads = 1`` and sequential execution: these nets are chains of operators, so
  parallel branches gain nothing, and a second pool would only take cores from the intra-op one;
* graph optimisation ``ORT_ENABLE_ALL`` (ONNX Runtime's default, said here so it cannot drift);
* the CPU execution provider.

Like :mod:`distil.measure.timing`, this module imports nothing from distil or torch at module level:
the latency probe loads it by path.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

PROVIDERS = ("CPUExecutionProvider",)
INSTALL_HINT = "pip install 'distil[compress]' (or pip install onnx onnxruntime)"


def onnx_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for the ONNX file at `path`, with distil's one set of options.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads; ``None`` lets ONNX Runtime choose (one per physical core).

    Returns:
        An ``onnxruntime.InferenceSession``.

    Raises:
        DistilError: onnxruntime is not installed, the file is missing, or `threads` is not positive.
    """
    if threads is not None and threads < 1:
        _fail(f"ONNX Runtime threads must be positive, got {threads!r}.")
    try:
        import onnxruntime as ort
    except ImportError:
        _fail(f"running an ONNX model needs onnxruntime, which is not installed: {INSTALL_HINT}")
    if not os.path.isfile(path):
        _fail(f"ONNX file not found: {str(path)!r}; export the model first (distil export).")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(os.fspath(path), options, providers=list(PROVIDERS))


def _fail(message: str) -> NoReturn:
    """Raise distil's DistilError (imported only here: the probe process never imports distil unless
    it is about to fail, and then it reports the same message)."""
    try:
        from distil.errors import DistilError
    except ImportError:  # loaded by path where distil is not importable
        raise SystemExit(message) from None
    raise DistilError(message)
