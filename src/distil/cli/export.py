"""`distil export`: a checkpoint to ONNX (dynamic batch), verified with ONNX Runtime against PyTorch."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import console, user_errors
from distil.cli.options import (
    ChannelsOption,
    DataOption,
    DataRootOption,
    ImageSizeOption,
    ModelOption,
    OnBadSampleOption,
    TrustCodeOption,
)
from distil.run.checkpoint_data import DataOptions
from distil.run.export import ExportOptions, export_checkpoint
from distil.run.options import help_of


@user_errors
def export(
    checkpoint: Annotated[str, typer.Argument(help=help_of(ExportOptions, "checkpoint"))],
    out: Annotated[str | None, typer.Option(help=help_of(ExportOptions, "out"))] = None,
    opset: Annotated[int, typer.Option(help=help_of(ExportOptions, "opset"))] = 17,
    data: DataOption = None,
    data_root: DataRootOption = None,
    model: ModelOption = None,
    trust_code: TrustCodeOption = False,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    on_bad_sample: OnBadSampleOption = None,
) -> None:
    """Export to ONNX with a dynamic batch axis and verify it on the validation data with ONNX Runtime.

    Example: distil export runs/fm/student_kd.json --out student.onnx
    """
    options = ExportOptions(
        checkpoint=checkpoint,
        out=out,
        opset=opset,
        data=DataOptions(data, data_root, None, image_size, channels, on_bad_sample),
        model_name=model,
        trust_code=trust_code,
    )
    result = export_checkpoint(options)
    check = result.check
    console.print(f"wrote {result.path} ({result.size_bytes:,} bytes, opset {opset}, dynamic batch)")
    console.print(
        f"ONNX Runtime vs PyTorch on {check.samples} samples: max abs logit difference "
        f"{check.max_abs_diff:.2e}, top-1 agreement {check.top1_agreement:.2%}"
    )
