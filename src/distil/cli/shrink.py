"""`distil shrink`: the most accurate student of the teacher that meets a latency/size budget, measured."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from distil.cli.common import command_progress, recipe_from, run_console, user_errors
from distil.cli.options import (
    DataRootOption,
    LimitOption,
    LogFormatOption,
    ModelOption,
    QuietOption,
    SetOption,
    TrustCodeOption,
)
from distil.run.options import help_of
from distil.run.shrink import ShrinkOptions, shrink_checkpoint

H = ShrinkOptions


@user_errors
def shrink(
    teacher: Annotated[str, typer.Argument(help=help_of(H, "teacher"))],
    target_latency: Annotated[str | None, typer.Option(help=help_of(H, "target_latency"))] = None,
    target_size: Annotated[str | None, typer.Option(help=help_of(H, "target_size"))] = None,
    max_drop: Annotated[float | None, typer.Option(help=help_of(H, "max_drop"))] = None,
    backend: Annotated[str, typer.Option(help=help_of(H, "backend"))] = "onnxruntime",
    threads: Annotated[int | None, typer.Option(help=help_of(H, "threads"))] = None,
    batch: Annotated[int | None, typer.Option(help=help_of(H, "batch"))] = None,
    budget_hours: Annotated[float | None, typer.Option(help=help_of(H, "budget_hours"))] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="Recipe (file or bundled name): its data, student_train, kd and shrink apply."),
    ] = None,
    overrides: SetOption = None,
    out: Annotated[str, typer.Option(help=help_of(H, "out"))] = "shrink",
    data: Annotated[str | None, typer.Option(help=help_of(H, "data"))] = None,
    data_root: DataRootOption = None,
    limit: LimitOption = None,
    model_name: ModelOption = None,
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    trust_code: TrustCodeOption = False,
) -> None:
    """Search narrower/shallower/pruned versions of the teacher for the most accurate one under a budget.

    Latency is measured on ONNX Runtime (fp32 and int8, the faster kept) in a fresh process; candidates
    over budget are dropped before training; the rest are ranked by short distillations (successive
    halving); the winner is distilled fully, compressed, and its saved file re-measured.

    Example: distil shrink runs/fm/teacher.json --recipe fashion-mnist --target-latency 0.3ms --threads 1 --batch 1
    """
    options = ShrinkOptions(
        teacher=teacher,
        target_latency=target_latency,
        target_size=target_size,
        max_drop=max_drop,
        backend=backend,
        threads=threads,
        batch=batch,
        budget_hours=budget_hours,
        # --set and --trust-code apply without --recipe too; the recipe's data only with one.
        recipe=recipe_from(recipe, overrides, trust_code=trust_code),
        recipe_data=recipe is not None,
        out=out,
        data=data,
        data_root=data_root,
        limit=limit,
        model_name=model_name,
    )
    console = run_console(log_format)
    with command_progress(log_format, quiet) as progress:
        result = shrink_checkpoint(options, log=console.print, progress=progress)
    for line in winner_lines(result.final, out):
        console.print(line)
    if log_format == "jsonl":
        print(json.dumps({"event": "result", "out": out, "final": result.final}), flush=True)


def winner_lines(fin: dict[str, Any], out: str) -> list[str]:
    """The two lines about the search's winner: its numbers, re-measured, and where the report is."""
    rm = fin["remeasured"]
    meets = "meets" if fin["meets_latency"] and fin["meets_size"] else "MISSES"
    return [
        f"winner {fin['name']} ({fin['format']}): test accuracy {100 * fin['test_accuracy']:.2f}%, "
        f"{fin['bytes']:,} B, {rm['median_ms']:.3f} ms (IQR {rm['iqr_ms']:.3f}) re-measured from {fin['path']}: "
        f"{meets} the budget",
        f"report: {out}/report.md; search cost {fin['cost_ratio']:.2f}x the winner's distillation",
    ]
