"""`export_checkpoint`: a checkpoint to ONNX (dynamic batch), verified with ONNX Runtime against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from distil.run.checkpoint_data import DataOptions, load_checkpoint_and_data
from distil.run.options import setting

if TYPE_CHECKING:
    from distil.compress.export import OnnxVerification


@dataclass(frozen=True)
class ExportOptions:
    """What `distil export` does: which checkpoint, which opset, where the .onnx file goes."""

    checkpoint: str = setting("", "A distil checkpoint (NAME.safetensors + NAME.json).")
    out: str | None = setting(None, "The .onnx file (default: next to the checkpoint).")
    opset: int = setting(17, "ONNX opset version.")
    data: DataOptions = field(
        default_factory=DataOptions,
        metadata={"doc": "The dataset read and its reader options (default: the checkpoint's)."},
    )
    model_name: str | None = setting(
        None, "The architecture of a plain state_dict (a registered name or pkg.module:factory)."
    )
    trust_code: bool = setting(False, "Let the checkpoint's sidecar name Python code to import.")

    @property
    def path(self) -> Path:
        """The .onnx file written: `out`, or the checkpoint's name with the .onnx suffix."""
        return Path(self.out) if self.out is not None else Path(self.checkpoint).with_suffix(".onnx")


@dataclass(frozen=True)
class ExportOutcome:
    """What `export_checkpoint` wrote and checked.

    Attributes:
        path: the .onnx file.
        opset: its opset version.
        check: ONNX Runtime vs PyTorch on the validation split (the test split when there is none).
    """

    path: Path
    opset: int
    check: OnnxVerification

    @property
    def size_bytes(self) -> int:
        """The file's size on disk."""
        return self.path.stat().st_size


def export_checkpoint(options: ExportOptions) -> ExportOutcome:
    """Export a checkpoint to ONNX with a dynamic batch axis and verify it on the validation data.

    Args:
        options: the checkpoint, opset and output file.

    Returns:
        The file written and the verification's numbers.

    Raises:
        ConfigError: an unwritable output directory (checked before anything is loaded).
        CheckpointError: a checkpoint that cannot be loaded.
    """
    import torch

    from distil.compress import export_onnx, verify_onnx
    from distil.resources import check_writable

    path = options.path
    check_writable(path.parent)
    net, _, bundle = load_checkpoint_and_data(
        options.checkpoint, options.data, options.model_name, trust_code=options.trust_code
    )
    check_split = bundle.val if len(bundle.val) else bundle.test
    inputs = check_split.head(len(check_split))
    # Token ids (text) export as int64 with a symbolic sequence axis; images and features as float.
    tokens = bundle.vocab_size is not None
    export_onnx(
        net,
        path,
        tuple(inputs.shape[1:]) if tokens else tuple(bundle.input_shape),
        opset=options.opset,
        input_dtype=torch.long if tokens else torch.float32,
        dynamic_sequence=tokens,
    )
    check = verify_onnx(path, net, inputs)
    return ExportOutcome(path, options.opset, check)
