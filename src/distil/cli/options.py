"""The options several commands share, defined once; each command imports the ones it takes.

The help of an option that a run/ entry point also takes is that setting's own documentation
(:func:`distil.run.options.help_of`), so ``--help`` and the Python API say the same thing.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer

from distil.run.checkpoint_data import DataOptions
from distil.run.options import help_of

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value, e.g. --set student_train.lr=0.1 (repeatable)."),
]
OutOption = Annotated[str, typer.Option("--out", help="Directory that receives the run directory.")]
LatencyOption = Annotated[
    bool,
    typer.Option("--latency/--no-latency", help="Measure latency and throughput (a few seconds per model)."),
]
ResumeOption = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="Continue an interrupted run from its last training state: give its partial directory "
        "(runs/.NAME.partial, printed when the run started) and the same recipe and --set options.",
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="The architecture of plain state_dict files (weights saved elsewhere, no distil sidecar): "
        "a registered name (distil models) or pkg.module:factory (then needs --data). Naming your "
        "pkg.module:factory also lets distil checkpoints whose sidecar names it load.",
    ),
]
TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Let checkpoint sidecars name Python code to import (a pkg.module:factory model or dataset "
        "function you did not name yourself), and a Hugging Face model folder with its own code run it "
        "(trust_remote_code: true in the model kwargs). Only for files whose author you trust: importing "
        "runs their code. Without it, name your own factory instead (--model, teacher.model, --data).",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress output at all (the final table is still printed).")
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="Progress output: rich (live bars with ETA, loss terms, accuracy), plain (one line per epoch, "
        "for logs), jsonl (one JSON object per epoch on stdout, tables on stderr, for scripts), quiet, or "
        "auto (rich on a terminal, plain otherwise).",
    ),
]

# The data of a command on an existing checkpoint (see distil.run.checkpoint_data.DataOptions).
DataOption = Annotated[str | None, typer.Option(help=help_of(DataOptions, "name"))]
DataRootOption = Annotated[str | None, typer.Option(help=help_of(DataOptions, "root"))]
LimitOption = Annotated[int | None, typer.Option(help=help_of(DataOptions, "limit"))]
ImageSizeOption = Annotated[int | None, typer.Option(help=help_of(DataOptions, "image_size"))]
ChannelsOption = Annotated[
    Literal["auto", "L", "RGB"] | None, typer.Option(help=help_of(DataOptions, "channels"))
]
OnBadSampleOption = Annotated[
    Literal["error", "skip"] | None, typer.Option(help=help_of(DataOptions, "on_bad_sample"))
]

MethodOption = Annotated[
    str | None,
    typer.Option(
        "--method",
        help="Distillation method by name (kd, dkd, rkl, js, tvd, logit_mse, fitnet, at, sp, rkd, pkt, crd, "
        "deit, deit_soft, scratch): "
        "sets kd.terms to its published weights; combine terms with --set kd.terms.NAME=WEIGHT.",
    ),
]
SelectionOption = Annotated[
    str | None,
    typer.Option(
        "--selection",
        help="Which teacher channels a thinner student keeps: uniform (evenly spaced), first, l1 (largest L1 norm).",
    ),
]
LayerMapOption = Annotated[
    str | None,
    typer.Option(
        "--layer-map",
        help="Student=teacher blocks for a shallower student, e.g. layer1.1=layer1.2,layer2.1=layer2.2 "
        "(default: evenly spaced).",
    ),
]


def method_overrides(method: str | None) -> list[str]:
    """The recipe override --method stands for (`kd.terms=...`, the method's terms), or none."""
    if not method:
        return []
    from distil.losses import method_terms

    return [f"kd.terms={json.dumps(method_terms(method))}"]


def transfer_overrides(
    selection: str | None,
    layer_map: str | None,
    reuse: str | None = None,
    share: bool = False,
    trainable: bool = False,
    unfreeze_epoch: int | None = None,
    partial: bool = False,
) -> list[str]:
    """The `--set transfer.*` overrides that the transfer options stand for."""
    from distil.transfer import parse_layer_map

    sets: list[str] = []
    if selection:
        sets.append(f"transfer.selection={selection}")
    if layer_map:
        pairs = parse_layer_map(layer_map)
        sets.append("transfer.layer_map={" + ", ".join(f"'{s}': '{t}'" for s, t in pairs.items()) + "}")
    if reuse:
        names = [n.strip() for n in reuse.split(",") if n.strip()]
        sets.append("transfer.reuse=[" + ", ".join(f"'{n}'" for n in names) + "]")
        sets.append(f"transfer.reuse_mode={'share' if share else 'copy'}")
        sets.append(f"transfer.freeze={str(not trainable).lower()}")
    if unfreeze_epoch is not None:
        sets.append(f"transfer.unfreeze_epoch={unfreeze_epoch}")
    if partial:
        sets.append("transfer.strict=false")
    return sets
