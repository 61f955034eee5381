"""`distil export`: a checkpoint to ONNX (dynamic batch), verified with ONNX Runtime against PyTorch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from torch import nn

from distil.cli.common import ModelOption, TrustCodeOption, check_out, console, user_errors
from distil.data import DataBundle
from distil.train.checkpoint import read_sidecar, trained_dataset

DataOption = Annotated[
    str | None, typer.Option(help="Dataset name (default: the one the checkpoint was trained on).")
]
DataRootOption = Annotated[str | None, typer.Option(help="Dataset directory or file.")]
LimitOption = Annotated[
    int | None, typer.Option(help="Use at most this many training samples (fine-tuning, calibration).")
]
ImageSizeOption = Annotated[
    int | None,
    typer.Option(
        help="Image folders: resize + center-crop to N x N (default: what the checkpoint recorded)."
    ),
]
ChannelsOption = Annotated[
    Literal["auto", "L", "RGB"] | None,
    typer.Option(help="Image folders: L or RGB (default: what the checkpoint recorded)."),
]
OnBadSampleOption = Annotated[
    Literal["error", "skip"] | None,
    typer.Option(
        help="Image folders: skip (and count) corrupt images (default: what the checkpoint recorded)."
    ),
]


def recipe_image_options(recipe: Any) -> dict[str, Any]:
    """The image reader options a recipe's data section gives (None: not given)."""
    d = recipe.data
    return image_options(d.image_size, d.channels, d.on_bad_sample)


def image_options(image_size: int | None, channels: str | None, on_bad_sample: str | None) -> dict[str, Any]:
    """The image reader options given on the command line (None: not given)."""
    return {"image_size": image_size, "channels": channels, "on_bad_sample": on_bad_sample}


def checkpoint_and_data(
    checkpoint: str,
    data: str | None,
    data_root: str | None,
    limit: int | None = None,
    model_name: str | None = None,
    *,
    trust_code: bool = False,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any], DataBundle]:
    """Load a checkpoint and the dataset it was trained on (or `data`), with a validation split.

    A distil checkpoint brings its architecture, dataset and reader options (an image folder's
    image_size/channels; given `options` win, a contradicting one is an error); a plain state_dict needs `model_name` (--model)
    and `data` (--data). The sidecar chooses no code: a factory or dataset function it names is refused
    unless it is `model_name` or `trust_code` is set.
    """
    from distil.run import load_any, load_checkpoint_data, require_data_for_model

    require_data_for_model(model_name, data, checkpoint)
    name = data or trained_dataset(read_sidecar(checkpoint), trust_code=trust_code)
    bundle = load_checkpoint_data(checkpoint, name, data_root, val_fraction=0.1, limit=limit, options=options)
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
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    on_bad_sample: OnBadSampleOption = None,
) -> None:
    """Export to ONNX with a dynamic batch axis and verify it on the validation data with ONNX Runtime.

    Example: distil export runs/fm/student_kd.json --out student.onnx
    """
    from distil.compress import export_onnx, verify_onnx

    path = check_out(out or Path(checkpoint).with_suffix(".onnx"), is_file=True)
    net, _, bundle = checkpoint_and_data(
        checkpoint,
        data,
        data_root,
        model_name=model,
        trust_code=trust_code,
        options=image_options(image_size, channels, on_bad_sample),
    )
    export_onnx(net, path, tuple(bundle.input_shape), opset=opset)
    check_split = bundle.val if len(bundle.val) else bundle.test
    x = check_split.head(len(check_split))
    check = verify_onnx(path, net, x)
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes, opset {opset}, dynamic batch)")
    console.print(
        f"ONNX Runtime vs PyTorch on {check.samples} samples: max abs logit difference "
        f"{check.max_abs_diff:.2e}, top-1 agreement {check.top1_agreement:.2%}"
    )
