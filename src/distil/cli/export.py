"""`distil export`: a checkpoint to ONNX (dynamic batch), verified with ONNX Runtime against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from torch import nn

from distil.cli.common import ModelOption, TrustCodeOption, check_out, console, user_errors
from distil.data import DataBundle, load_dataset
from distil.train.checkpoint import read_sidecar, trained_dataset

DataOption = Annotated[
    str | None, typer.Option(help="Dataset name (default: the one the checkpoint was trained on).")
]
DataRootOption = Annotated[str | None, typer.Option(help="Dataset directory or file.")]
LimitOption = Annotated[
    int | None, typer.Option(help="Use at most this many training samples (fine-tuning, calibration).")
]


def checkpoint_and_data(
    checkpoint: str,
    data: str | None,
    data_root: str | None,
    limit: int | None = None,
    model_name: str | None = None,
    *,
    trust_code: bool = False,
) -> tuple[nn.Module, dict[str, Any], DataBundle]:
    """Load a checkpoint and the dataset it was trained on (or `data`), with a validation split.

    A distil checkpoint brings its architecture and dataset; a plain state_dict needs `model_name` (--model)
    and `data` (--data). The sidecar chooses no code: a factory or dataset function it names is refused
    unless it is `model_name` or `trust_code` is set.
    """
    from distil.run import load_any, require_data_for_model

    require_data_for_model(model_name, data, checkpoint)
    name = data or trained_dataset(read_sidecar(checkpoint), trust_code=trust_code)
    bundle = load_dataset(name, data_root, val_fraction=0.1, limit=limit)
    model, meta, _ = load_any(checkpoint, bundle, model_name, trust_code=trust_code)
    return model.eval(), meta, bundle


@user_errors
def export(
    checkpoint: Annotated[str, typer.Argument(help="A distil checkpoint (NAME.safetensors + NAME.json).")],
    out: Annotated[str | None, typer.Option(help="The .onnx file (default: next to the checkpoint).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
    data: DataOption = None,
    data_root: DataRootOption = None,
    model: ModelOption = None,
    trust_code: TrustCodeOption = False,
) -> None:
    """Export to ONNX with a dynamic batch axis and verify it on the validation data with ONNX Runtime.

    Example: distil export runs/fm/student_kd.json --out student.onnx
    """
    from distil.compress import export_onnx, verify_onnx

    path = check_out(out or Path(checkpoint).with_suffix(".onnx"), is_file=True)
    net, _, bundle = checkpoint_and_data(checkpoint, data, data_root, model_name=model, trust_code=trust_code)
    export_onnx(net, path, tuple(bundle.input_shape), opset=opset)
    check_split = bundle.val if len(bundle.val) else bundle.test
    x = check_split.head(len(check_split))
    check = verify_onnx(path, net, x)
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes, opset {opset}, dynamic batch)")
    console.print(
        f"ONNX Runtime vs PyTorch on {check.samples} samples: max abs logit difference "
        f"{check.max_abs_diff:.2e}, top-1 agreement {check.top1_agreement:.2%}"
    )
