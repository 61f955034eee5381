"""`distil demo`: the seed's whole pipeline on a dataset that needs no download."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from distil.cli.common import check_out, print_result, recipe_from, run_console, user_errors
from distil.cli.options import LatencyOption, LogFormatOption, OutOption, QuietOption, ResumeOption, SetOption
from distil.config import Recipe
from distil.run import run_pipeline
from distil.run.demo_teacher import cached_teacher, with_teacher

# `--task` -> the bundled recipe of its demo (classification's is chosen by --dataset).
LM_DEMO_RECIPE = "lm-demo"
DEFAULT_LABELS_PER_CLASS = 5
# The lm demo's teacher budget: 10x the students' 300 blocks (docs/lm.md#demo).
LM_TEACHER_BLOCKS = 3000


@user_errors
def demo(
    task: Annotated[
        str,
        typer.Option(
            help="classification (--dataset) or lm: a byte-level language model on the Python standard "
            "library's own sources (no download, whole modules held out), teacher -> 3x smaller students",
        ),
    ] = "classification",
    dataset: Annotated[
        str, typer.Option(help="digits (bundled with scikit-learn) or fashion-mnist (Debian package).")
    ] = "digits",
    labels_per_class: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="classification: labels the students keep per class (default 5); the distilled student also "
            "learns the teacher's outputs on the rest, the scratch student only the labelled ones (0 = all "
            "labels for everyone)",
        ),
    ] = None,
    teacher_blocks: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="lm: the teacher's training blocks (default 3000); the students get data.limit (300). "
            "The teacher is trained once and kept in $DISTIL_CACHE_DIR/demo (default ~/.cache/distil/demo)",
        ),
    ] = None,
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
             distil demo --task lm  (a language model on the standard library: a teacher trained once on
                                    10x the students' text, cached; 1-4 minutes the first time on 2 cores, then under one)
    """
    if task not in ("classification", "lm"):
        raise typer.BadParameter(f"--task must be classification or lm, got {task!r}.", param_hint="--task")
    if task == "lm" and dataset != "digits":
        raise typer.BadParameter(
            "--dataset chooses the classification demo's data; the lm demo reads the Python standard library "
            "(change it with --set data.name=text --set data.root=DIR).",
            param_hint="--dataset",
        )
    if task != "lm" and teacher_blocks is not None:
        raise typer.BadParameter(
            "--teacher-blocks is the lm demo's teacher budget; the classification demo's teacher trains on "
            "every label (choose the students' with --labels-per-class).",
            param_hint="--teacher-blocks",
        )
    if task == "lm" and labels_per_class is not None:
        raise typer.BadParameter(
            "--labels-per-class is the classification demo's label budget; the lm demo's students get less "
            "text instead (--set data.limit=N blocks; the teacher's with --teacher-blocks).",
            param_hint="--labels-per-class",
        )
    if labels_per_class is None:
        labels_per_class = DEFAULT_LABELS_PER_CLASS
    if resume is None:  # a resumed run writes where it started
        check_out(out)
    console = run_console(log_format)
    if task == "lm":
        recipe = lm_recipe(overrides or [], teacher_blocks or LM_TEACHER_BLOCKS, console, log_format)
    else:
        # The demo's story (docs/methods.md#when-distillation-pays): a trained teacher, few labels for the
        # student, plenty of unlabelled in-domain images. Put first so --set can change it.
        few = [f"data.unlabeled.keep_per_class={labels_per_class}"] if labels_per_class else []
        recipe = recipe_from(dataset, [*few, *(overrides or [])])
    result = run_pipeline(
        recipe,
        out,
        console=console,
        show_progress=not quiet,
        log_format=log_format,
        measure_latency=latency,
        resume=resume,
    )
    print_result(result, log_format)


def lm_recipe(overrides: list[str], teacher_blocks: int, console: Console, log_format: str) -> Recipe:
    """The lm demo's recipe with its teacher: trained once on `teacher_blocks` blocks and cached.

    Every block is labelled (its next tokens), so this story has no hidden labels: the students' budget
    is less text (`data.limit`), the teacher's more. A `--set teacher.checkpoint=...` is used as given.
    """
    recipe = recipe_from(LM_DEMO_RECIPE, overrides)
    if recipe.teacher.checkpoint is not None:
        return recipe
    students = recipe.data.limit
    if students is not None and teacher_blocks < students:
        raise typer.BadParameter(
            f"the teacher's budget ({teacher_blocks} blocks) is below the students' (data.limit={students}); "
            "the demo's teacher is the one trained on more text. Raise --teacher-blocks or lower data.limit.",
            param_hint="--teacher-blocks",
        )
    teacher = cached_teacher(recipe, teacher_blocks, console=console, log_format=log_format)
    how = "trained now and kept" if teacher.trained else "from the cache"
    console.print(
        f"teacher: {how} in {teacher.run_dir} (its own run: {teacher_blocks} blocks x "
        f"{recipe.teacher_train.epochs} epochs; later demos reuse it, remove the folder to retrain); "
        f"the students get {students if students is not None else 'all the'} blocks x "
        f"{recipe.student_train.epochs} epochs",
        highlight=False,
        soft_wrap=True,
    )
    return with_teacher(recipe, teacher.checkpoint)
