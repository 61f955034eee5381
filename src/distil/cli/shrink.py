"""`distil shrink`: the most accurate student of the teacher that meets a latency/size budget, measured."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import (
    LogFormatOption,
    ModelOption,
    QuietOption,
    SetOption,
    TrustCodeOption,
    check_out,
    command_progress,
    recipe_from,
    run_console,
    user_errors,
)
from distil.cli.export import DataRootOption, LimitOption, recipe_image_options


@user_errors
def shrink(
    teacher: Annotated[
        str, typer.Argument(help="The trained teacher checkpoint (or a state_dict with --model).")
    ],
    target_latency: Annotated[
        str | None, typer.Option(help="Latency budget (median on the target backend), e.g. 0.3ms or 300us.")
    ] = None,
    target_size: Annotated[
        str | None, typer.Option(help="Budget on the deployed file, e.g. 200kB, 1.5MB.")
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(help="Accuracy points below the teacher you accept (reported as met/missed)."),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Target backend: onnxruntime (CPU) is the one measured.")
    ] = "onnxruntime",
    threads: Annotated[
        int | None,
        typer.Option(help="Backend intra-op threads, as on the target (default: the recipe's, 1)."),
    ] = None,
    batch: Annotated[
        int | None, typer.Option(help="Batch size the budget is for (default: the recipe's, 1).")
    ] = None,
    budget_hours: Annotated[
        float | None, typer.Option(help="Wall-clock cap on the search's ranking.")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="Recipe (file or bundled name): its data, student_train, kd and shrink apply."),
    ] = None,
    overrides: SetOption = None,
    out: Annotated[
        str, typer.Option(help="Search directory; an existing one with state.json is resumed.")
    ] = "shrink",
    data: Annotated[
        str | None, typer.Option(help="Dataset (default: the recipe's, else the teacher's).")
    ] = None,
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
    from distil.config import ShrinkConfig, checked_config
    from distil.errors import ConfigError
    from distil.run.evaluate import load_any, load_checkpoint_data, require_data_for_model
    from distil.shrink import parse_latency, parse_size, shrink_model
    from distil.train.checkpoint import read_sidecar, trained_dataset

    if backend != "onnxruntime":
        raise ConfigError(f"unknown backend {backend!r}; valid: onnxruntime (CPU execution provider).")
    cfg = recipe_from(recipe, overrides, trust_code=trust_code)
    settings = (cfg.shrink or ShrinkConfig()).model_copy(
        update={
            k: v
            for k, v in {
                "target_latency_ms": parse_latency(target_latency) if target_latency else None,
                "target_size_bytes": parse_size(target_size) if target_size else None,
                "max_drop": max_drop,
                "budget_hours": budget_hours,
                "threads": threads,
                "batch": batch,
            }.items()
            if v is not None
        }
    )
    # Checks the merged values: a bad option is a clear error (exit 2), not a pydantic traceback.
    settings = checked_config(ShrinkConfig, "distil shrink options", **settings.model_dump())
    if settings.target_latency_ms is None and settings.target_size_bytes is None:
        raise ConfigError("give a budget: --target-latency 0.3ms and/or --target-size 200kB.")
    check_out(out)
    console = run_console(log_format)
    # The user names the factory (--model or the recipe's teacher.model): sidecars naming it may load.
    user_model = model_name or (cfg.teacher.model if ":" in cfg.teacher.model else None)
    require_data_for_model(model_name, data, teacher)
    if data is not None:
        name, root = data, data_root
    elif recipe is not None:
        name, root = cfg.data.name, data_root or cfg.data.root
    else:
        name, root = trained_dataset(read_sidecar(teacher), trust_code=cfg.trust_code), data_root
    val = cfg.data.val_fraction if recipe is not None else 0.1
    bundle = load_checkpoint_data(
        teacher,
        name,
        root,
        val_fraction=val,
        limit=limit or (cfg.data.limit if recipe else None),
        options=recipe_image_options(cfg),
    )
    teacher_model, meta, _ = load_any(teacher, bundle, user_model, trust_code=cfg.trust_code)
    console.print(
        f"shrink: {meta['spec'].get('name')} teacher on {bundle.name} ({len(bundle.train):,} training samples); "
        f"state and artefacts in {out}"
    )
    with command_progress(log_format, quiet) as progress:
        result = shrink_model(
            teacher_model,
            meta["spec"],
            bundle,
            settings,
            out,
            train_cfg=cfg.student_train,
            kd=cfg.kd,
            log=console.print,
            progress=progress,
        )
    fin = result.final
    rm = fin["remeasured"]
    console.print(
        f"winner {fin['name']} ({fin['format']}): test accuracy {100 * fin['test_accuracy']:.2f}%, "
        f"{fin['bytes']:,} B, {rm['median_ms']:.3f} ms (IQR {rm['iqr_ms']:.3f}) re-measured from {fin['path']}: "
        f"{'meets' if fin['meets_latency'] and fin['meets_size'] else 'MISSES'} the budget"
    )
    console.print(f"report: {out}/report.md; search cost {fin['cost_ratio']:.2f}x the winner's distillation")
    if log_format == "jsonl":
        import json

        print(json.dumps({"event": "result", "out": out, "final": fin}), flush=True)
