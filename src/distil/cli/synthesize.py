"""`distil synthesize`: a data-free transfer set from a trained teacher (DeepInversion or adversarial)."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import command_progress, console, recipe_from, user_errors
from distil.cli.options import LogFormatOption, QuietOption, SetOption, TrustCodeOption
from distil.errors import ConfigError


@user_errors
def synthesize(
    recipe: Annotated[
        str | None, typer.Argument(help="Recipe file or bundled name (its data and student).")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Teacher checkpoint: a distil checkpoint (NAME.safetensors + NAME.json), or a .safetensors "
            "state_dict for the recipe's teacher.model (a registered name or pkg.module:factory)."
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="deepinversion (teachers with BatchNorm: match its running statistics) or adversarial "
            "(any teacher: a generator trained against the recipe's student)."
        ),
    ] = "deepinversion",
    count: Annotated[int, typer.Option(help="Synthetic inputs to make.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seeds targets, noise and initialisations.")] = 0,
    iterations: Annotated[int, typer.Option(help="deepinversion: Adam steps per batch.")] = 200,
    steps: Annotated[int, typer.Option(help="adversarial: generator updates.")] = 200,
    batch_size: Annotated[int, typer.Option(help="Inputs per batch (both methods).")] = 128,
    competition: Annotated[
        float,
        typer.Option(
            help="deepinversion: weight of the adaptive competition term with the recipe's student "
            "(student.checkpoint: a partly trained one; it is not updated)."
        ),
    ] = 0.0,
    balance: Annotated[
        float,
        typer.Option(
            help="adversarial: weight of the class-entropy term (DAFL) that keeps the generator from "
            "collapsing onto one teacher class; 0 = plain DFAD."
        ),
    ] = 0.0,
    out: Annotated[str, typer.Option("--out", help="Folder to create: transfer.npz, grids, report.html.")] = (
        "synthetic"
    ),
    no_data: Annotated[
        bool,
        typer.Option(
            "--no-data",
            help="Read no data (you have the teacher, not its data): its input shape, classes and "
            "normalization come from a distil checkpoint's sidecar, or from --input-shape, --classes "
            "(or --class-names), --mean and --std.",
        ),
    ] = False,
    input_shape: Annotated[
        str | None, typer.Option(help="--no-data: one input's shape C,H,W, e.g. 1,28,28.")
    ] = None,
    classes: Annotated[int | None, typer.Option(help="--no-data: the teacher's number of classes.")] = None,
    class_names: Annotated[
        str | None, typer.Option(help="--no-data: the class names a,b,c (instead of --classes).")
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            help="--no-data: the teacher's input normalization mean: one value, or one per channel."
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option(help="--no-data: the teacher's input normalization std: one value, or one per channel."),
    ] = None,
    test: Annotated[
        str | None,
        typer.Option(
            "--test",
            help="--no-data: an .npz of real labelled inputs you have (x_test/y_test, or x/y; pixel scale "
            "as the teacher was trained), written as the set's test split so distill measures accuracy.",
        ),
    ] = None,
    overrides: SetOption = None,
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    trust_code: TrustCodeOption = False,
) -> None:
    """Synthesise a transfer set from the teacher alone and write it as an npz dataset distil reads.

    Example: distil synthesize fashion-mnist --teacher runs/t/teacher --method deepinversion --out synth

    Then: distil distill fashion-mnist --teacher runs/t/teacher --set data.name=npz
    --set data.root=synth/transfer.npz --set data.val_fraction=0 --set kd.ce_weight=0

    Without the data: distil synthesize --no-data --teacher vendor.safetensors --set teacher.model=pkg.mod:make
    --input-shape 1,28,28 --classes 10 --mean 0.286 --std 0.353 --out synth
    """
    from distil.synth import AdversarialConfig, DeepInversionConfig, SynthesisConfig
    from distil.synth.facts import GivenFacts, parse_floats, parse_ints, parse_names
    from distil.synth.recipe import synthesize_for_recipe

    given = GivenFacts(
        input_shape=parse_ints(input_shape, "--input-shape"),
        classes=classes,
        class_names=parse_names(class_names),
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
    )
    if (given.any_given or test is not None) and not no_data:
        raise ConfigError(
            "--input-shape, --classes, --class-names, --mean, --std and --test describe a teacher whose data "
            "is not read: add --no-data (or drop them to read the recipe's data)."
        )
    if classes is not None and classes < 1:
        raise ConfigError(f"--classes {classes}: give the teacher's number of classes (>= 1).")
    extra = [f"teacher.checkpoint={teacher}"] if teacher else []
    cfg = recipe_from(recipe, [*(overrides or []), *extra], trust_code=trust_code)
    synth_cfg = SynthesisConfig(
        method=method,
        count=count,
        seed=seed,
        deepinversion=DeepInversionConfig(
            iterations=iterations, batch_size=batch_size, competition_weight=competition
        ),
        adversarial=AdversarialConfig(steps=steps, batch_size=batch_size, balance_weight=balance),
    )
    with command_progress(log_format, quiet) as progress:
        task = progress.add_task(method, total=None, status="")

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        path = synthesize_for_recipe(
            cfg, out, synth_cfg, progress=advance, no_data=given if no_data else None, test=test
        )
    if not quiet:
        console.print(f"synthetic transfer set: {path} (grids and report.html next to it)")
        if no_data and test is None:
            from distil.synth.store import NO_REAL_TEST

            console.print(NO_REAL_TEST)
