"""`distil demo`: the seed's whole pipeline on a dataset that needs no download."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import check_out, print_result, recipe_from, run_console, user_errors
from distil.cli.options import LatencyOption, LogFormatOption, OutOption, QuietOption, ResumeOption, SetOption
from distil.run import run_pipeline

# `--task` -> the bundled recipe of its demo (classification's is chosen by --dataset).
LM_DEMO_RECIPE = "lm-demo"


@user_errors
def demo(
    task: Annotated[
        str,
        typer.Option(
            help="classification (--dataset) or lm: a byte-level language model on the Python standard "
            "library's own sources (no download, whole modules held out), teacher -> 4x smaller student",
        ),
    ] = "classification",
    dataset: Annotated[
        str, typer.Option(help="digits (bundled with scikit-learn) or fashion-mnist (Debian package).")
    ] = "digits",
    labels_per_class: Annotated[
        int,
        typer.Option(
            min=0,
            help="labels the students keep per class; the distilled student also learns the teacher's outputs "
            "on the rest, the scratch student only the labelled ones (0 = all labels for everyone)",
        ),
    ] = 5,
    overrides: SetOption = None,
    out: OutOption = "runs",
    quiet: QuietOption = False,
    log_format: LogFormatOption = "auto",
    latency: LatencyOption = True,
    resume: ResumeOption = None,
) -> None:
    """Train a teacher on every label, then two students that keep 5 labels per class: one trained on those
    alone, one distilled from the teacher on all the training images (the rest unlabelled). Compare them.

    Example: distil demo            (digits, under a minute on 2 CPU cores)
             distil demo --labels-per-class 0       (every label for everyone: KD gains little there)
             distil demo --dataset fashion-mnist --set teacher_train.epochs=2
             distil demo --task lm  (a language model on the standard library; a few minutes on 2 cores)
    """
    if task not in ("classification", "lm"):
        raise typer.BadParameter(f"--task must be classification or lm, got {task!r}.", param_hint="--task")
    if task == "lm" and dataset != "digits":
        raise typer.BadParameter(
            "--dataset chooses the classification demo's data; the lm demo reads the Python standard library "
            "(change it with --set data.name=text --set data.root=DIR).",
            param_hint="--dataset",
        )
    if resume is None:  # a resumed run writes where it started
        check_out(out)
    # The demo's story (docs/methods.md#when-distillation-pays): a trained teacher, few labels for the
    # student, plenty of unlabelled in-domain images. Put first so --set can change it.
    if task == "lm":  # every block is labelled (its next tokens): no hidden labels in this story
        recipe = recipe_from(LM_DEMO_RECIPE, overrides or [])
    else:
        few = [f"data.unlabeled.keep_per_class={labels_per_class}"] if labels_per_class else []
        recipe = recipe_from(dataset, [*few, *(overrides or [])])
    result = run_pipeline(
        recipe,
        out,
        console=run_console(log_format),
        show_progress=not quiet,
        log_format=log_format,
        measure_latency=latency,
        resume=resume,
    )
    print_result(result, log_format)
