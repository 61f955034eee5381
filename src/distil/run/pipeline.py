"""The entry points: the seed document's pipeline and its parts, each a list of stages over one runner.

`run_pipeline` trains the teacher, a scratch student and a distilled student (then, with
`recipe.compress`, the compress chain), measures them side by side and writes the run directory;
`train_teacher`, `distill_student` and `transfer_student` run parts of it. Each builds its models and
checks its inputs before any run directory exists, then hands its stages to `Runner.execute`
(`distil.run.runner`), which opens, guards, measures and summarises the same way for all of them.
"""

from __future__ import annotations

import copy
from pathlib import Path

from rich.console import Console
from torch import nn

from distil.config import Recipe, TransferConfig
from distil.data import DataBundle, load_dataset
from distil.data.npz import test_split_title
from distil.data.unlabeled import labeled_part, transfer_set, what_students_saw
from distil.errors import ConfigError
from distil.measure import count_parameters
from distil.models import loads_trained_weights
from distil.run.runner import PipelineResult, Runner, teacher_train_record
from distil.run.stages import compress_stage, distill_stage, scratch_stage, teacher_stage, transfer_into
from distil.teachers.crosstok import cross_tokenizer_teacher, teacher_view
from distil.teachers.ensemble import recipe_teachers
from distil.train.build import build_model
from distil.train.distributed import rank_zero_console
from distil.train.onpolicy import check_on_policy
from distil.train.stages import Stage
from distil.transfer import PreparedStudent


def load_data(recipe: Recipe) -> DataBundle:
    """The recipe's dataset, checked against the recipe before any run directory exists."""
    d = recipe.data
    data = load_dataset(
        d.name,
        d.root,
        val_fraction=d.val_fraction,
        seed=recipe.teacher_train.seed,
        limit=d.limit,
        options={
            "image_size": d.image_size,
            "channels": d.channels,
            "on_bad_sample": d.on_bad_sample,
            "normalize": d.normalize,
            "block_size": d.block_size,
            "tokenizer": d.tokenizer,
            "split_by": d.split_by,
            "errors": d.errors,
            "newlines": d.newlines,
            "chat_template": d.chat_template,
            "on_long": d.on_long,
            "text_field": d.text_field,
            "label_field": d.label_field,
            "digits": d.digits,
            "operations": d.operations,
            "train_size": d.train_size,
            "test_size": d.test_size,
            "problem_seed": d.problem_seed,
            "answer_order": d.answer_order,
            "pad_operands": d.pad_operands,
        },
        trust_code=recipe.trust_code,
        task=d.task,
    )
    if data.is_tabular:
        sections = {"teacher_train": recipe.teacher_train, "student_train": recipe.student_train}
        if recipe.compress is not None:
            sections["compress.finetune"] = recipe.compress.finetune
        bad = [
            f"{k}.augment={cfg.augment.ops}"
            for k, cfg in sections.items()
            if cfg.augment.ops not in ("auto", "none")
        ]
        if bad:
            raise ConfigError(
                f"{', '.join(bad)}: crops and flips are for images, but dataset {data.name!r} holds feature "
                f"vectors of shape {data.input_shape}; set augment to none (or auto)."
            )
    return data


def warn_if_student_larger(console: Console, teacher: nn.Module, student: nn.Module) -> None:
    """Say so, before training, when the student has at least as many parameters as its teacher.

    Distillation is meant to make a model smaller; a larger student (e.g. the default smallnet under a
    small user teacher) is almost always a recipe left at its defaults.
    """
    t, s = count_parameters(teacher), count_parameters(student)
    if s < t:
        return
    console.print(
        f"[bold yellow]warning:[/] the student ({type(student).__name__}, {s:,} parameters) is not smaller "
        f"than its teacher ({type(teacher).__name__}, {t:,} parameters): compression {t / max(s, 1):.1f}x. "
        "Choose a smaller student (--set student.model=NAME, or a smaller student.kwargs.width), or a "
        "larger teacher.",
        highlight=False,
        soft_wrap=True,
    )


def refuse_in_run_cross_teacher(recipe: Recipe) -> None:
    """Refuse `kd.teacher_tokenizer` with a teacher the run would train: `distil run` trains it on the data's
    tokenization (`data.tokenizer`), not on the tokenizer it is named with.

    Raises:
        ConfigError: naming the commands that distil from a trained teacher instead.
    """
    if recipe.kd.teacher_tokenizer is None or recipe.teacher.checkpoint is not None:
        return
    raise ConfigError(
        f"kd.teacher_tokenizer={recipe.kd.teacher_tokenizer!r} needs a trained teacher: `distil run` would train "
        "its teacher on the data's tokenization (data.tokenizer), not on its own. Fix: set teacher.checkpoint "
        "(--set teacher.checkpoint=PATH), or `distil distill RECIPE --teacher PATH`; train that teacher first "
        f"with `distil train RECIPE --set data.tokenizer={recipe.kd.teacher_tokenizer}` (without "
        "kd.teacher_tokenizer)."
    )


def cross_tokenizer_view(recipe: Recipe, data: DataBundle, teacher: nn.Module | None) -> DataBundle | None:
    """The data as a teacher with its own tokenizer (`kd.teacher_tokenizer`) reads it, or None when unset.

    Without `teacher`: the view to build the teacher for (its vocabulary and tokenizer, no rows). With the
    built `teacher`: the distillation is checked as `distil.api.distill` will check it (terms, data, the
    teacher's output width: `cross_tokenizer_teacher`), before any run directory exists, and the view's
    test split is the test text in the teacher's tokens, where its row is measured.

    Raises:
        ConfigError, DataError: what `cross_tokenizer_teacher` refuses, a tokenizer that is not byte-level
            or does not reproduce the text.
    """
    if recipe.kd.teacher_tokenizer is None:
        return None
    if teacher is None:
        return teacher_view(data, recipe.kd, trust_code=recipe.trust_code, rows=False)
    kd = recipe.student_kd
    cross_tokenizer_teacher([teacher], data, kd, recipe.student_train, trust_code=recipe.trust_code)
    return teacher_view(data, kd, teacher, trust_code=recipe.trust_code)


def _title(recipe: Recipe, data: DataBundle) -> str:
    return f"{recipe.name}: {test_split_title(data.name, data.extra)}"


def run_pipeline(
    recipe: Recipe,
    out_root: str | Path = "runs",
    *,
    run_name: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    log_format: str = "auto",
    measure_latency: bool = True,
    resume: str | Path | None = None,
) -> PipelineResult:
    """Teacher -> scratch student -> distilled student -> measurements, in one run directory.

    The teacher is trained with `recipe.teacher_train` unless `recipe.teacher.checkpoint` is set. Both
    students start from the same random weights and use the same `student_train` recipe, so the only
    difference between them is the distillation loss.

    Returns:
        PipelineResult with metrics in the order teacher, student_scratch, student_kd.
    """
    console = rank_zero_console(console)
    # Everything that can fail on bad input happens before the run directory exists.
    refuse_in_run_cross_teacher(recipe)
    data = load_data(recipe)
    kd_data = transfer_set(data, recipe.data.unlabeled)  # students: data.unlabeled hides labels, adds inputs
    scratch_data = labeled_part(kd_data)  # the scratch student: the labelled samples, as many steps
    teacher, teacher_spec = build_model(
        recipe.teacher,
        cross_tokenizer_view(recipe, data, None) or data,
        seed=recipe.teacher_train.seed,
        trust_code=recipe.trust_code,
    )
    teacher_data = cross_tokenizer_view(recipe, data, teacher)  # None: the teacher reads the data's tokens
    scratch, student_spec = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code, teacher=teacher
    )
    kd_student, _ = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code, teacher=teacher
    )
    warn_if_student_larger(console, teacher, kd_student)
    check_on_policy(recipe.student_train.generation, recipe.student_train, kd_data, kd_student, recipe.kd)
    if recipe.transfer != TransferConfig():
        # A dry run on copies checks the transfer (shapes, names, maps) before anything is written; the
        # real one runs once the teacher is trained. Transfer applies to the KD student only, so the
        # scratch student stays the random-init, label-only baseline.
        transfer_into(recipe, copy.deepcopy(teacher), copy.deepcopy(kd_student), data)
    runner = Runner(recipe, data, console=console, measure_latency=measure_latency)

    def train(r: Runner) -> None:
        t = teacher if recipe.teacher.checkpoint is not None else teacher_stage(r, teacher)
        s = scratch_stage(r, scratch, scratch_data)
        prepared = transfer_into(recipe, t, kd_student, data)
        teachers, weights = recipe_teachers(recipe.kd, t, data, trust_code=recipe.trust_code)
        kd = distill_stage(r, teachers, weights, kd_student, prepared, kd_data)
        r.keep(Stage.TEACHER, t, teacher_spec, teacher_train_record(recipe), data=teacher_data)
        r.keep(Stage.STUDENT_SCRATCH, s, student_spec, recipe.student_train)
        r.keep(Stage.STUDENT_KD, kd, student_spec, prepared.train_cfg)

    teacher_cfg = None if recipe.teacher.checkpoint else recipe.teacher_train
    return runner.execute(
        out_root,
        run_name or recipe.name,
        exact=run_name is not None,
        resume=resume,
        preflight_stages=[
            (teacher, teacher_cfg),
            (scratch, recipe.student_train),
            (kd_student, recipe.student_train),
        ],
        guard={"teacher_train": recipe.teacher_train, "student_train": recipe.student_train},
        train=train,
        after=[compress_stage] if recipe.compress is not None else [],
        show_progress=show_progress,
        log_format=log_format,
        title=_title(recipe, data),
        footer=lambda path: [
            what_students_saw(data, kd_data, recipe.teacher.checkpoint),
            f"run directory: {path}",
        ],
    )


def train_teacher(
    recipe: Recipe,
    out_root: str | Path = "runs",
    *,
    run_name: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    log_format: str = "auto",
    measure_latency: bool = True,
    resume: str | Path | None = None,
) -> PipelineResult:
    """Train `recipe.teacher` on labels with `recipe.teacher_train`; save and measure it."""
    console = rank_zero_console(console)
    data = load_data(recipe)
    teacher, spec = build_model(
        recipe.teacher, data, seed=recipe.teacher_train.seed, trust_code=recipe.trust_code
    )

    def train(r: Runner) -> None:
        r.keep(Stage.TEACHER, teacher_stage(r, teacher), spec, recipe.teacher_train)

    result = Runner(recipe, data, console=console, measure_latency=measure_latency).execute(
        out_root,
        run_name or f"{recipe.name}-teacher",
        exact=run_name is not None,
        resume=resume,
        preflight_stages=[(teacher, recipe.teacher_train)],
        guard={"teacher_train": recipe.teacher_train},
        train=train,
        show_progress=show_progress,
        log_format=log_format,
        title=_title(recipe, data),
        footer=lambda path: [f"teacher checkpoint: {path / 'teacher.safetensors'}"],
    )
    result.ratios = {}  # one model: nothing to compare it with
    return result


def _require_teacher(recipe: Recipe, message: str) -> None:
    # A model whose factory reads trained weights (a Hugging Face save_pretrained folder) is one too.
    pretrained = loads_trained_weights(recipe.teacher.model, recipe.teacher.kwargs)
    if not recipe.teacher.checkpoint and not pretrained:
        raise ConfigError(message)


def distill_student(
    recipe: Recipe,
    out_root: str | Path = "runs",
    *,
    run_name: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    log_format: str = "auto",
    measure_latency: bool = True,
    resume: str | Path | None = None,
) -> PipelineResult:
    """Distill `recipe.student` from the trained teacher at `recipe.teacher.checkpoint`."""
    console = rank_zero_console(console)
    _require_teacher(
        recipe,
        "distillation needs a trained teacher: pass --teacher PATH (a distil checkpoint, or a state_dict "
        "with --set teacher.model=NAME; a Hugging Face folder: --set teacher.model=hf-causal-lm "
        "--set 'teacher.kwargs={path: DIR}'), or train one with `distil train`.",
    )
    data = load_data(recipe)
    kd_data = transfer_set(data, recipe.data.unlabeled)  # data.unlabeled: hidden labels, unlabelled inputs
    teacher, teacher_spec = build_model(
        recipe.teacher, cross_tokenizer_view(recipe, data, None) or data, trust_code=recipe.trust_code
    )
    teacher_data = cross_tokenizer_view(recipe, data, teacher)  # None: the teacher reads the data's tokens
    # kd.teachers: an ensemble
    teachers, weights = recipe_teachers(recipe.kd, teacher, data, trust_code=recipe.trust_code)
    student, student_spec = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code, teacher=teacher
    )
    warn_if_student_larger(console, teacher, student)
    check_on_policy(recipe.student_train.generation, recipe.student_train, kd_data, student, recipe.kd)
    # Knowledge transfer (init from teacher, reused modules, inherited recipe) happens before the run
    # directory exists, so a bad transfer writes nothing.
    prepared = transfer_into(recipe, teacher, student, data)

    def train(r: Runner) -> None:
        trained = distill_stage(r, teachers, weights, student, prepared, kd_data)
        r.keep(Stage.TEACHER, teacher, teacher_spec, teacher_train_record(recipe), data=teacher_data)
        r.keep(Stage.STUDENT_KD, trained, student_spec, prepared.train_cfg)

    return Runner(recipe, data, console=console, measure_latency=measure_latency).execute(
        out_root,
        run_name or f"{recipe.name}-kd",
        exact=run_name is not None,
        resume=resume,
        preflight_stages=[(teacher, None), (student, recipe.student_train)],
        guard={"student_train": recipe.student_train},
        train=train,
        show_progress=show_progress,
        log_format=log_format,
        title=_title(recipe, data),
    )


def transfer_student(
    recipe: Recipe,
    out_root: str | Path = "runs",
    *,
    run_name: str | None = None,
    console: Console | None = None,
    measure_latency: bool = True,
) -> PipelineResult:
    """Initialise `recipe.student` from the teacher checkpoint by `recipe.transfer`, without training.

    Writes the transferred student (a checkpoint other commands can start from), transfer_report.json
    and report.md with the test accuracy of the teacher and of the student as transferred.
    """
    console = rank_zero_console(console)
    _require_teacher(recipe, "transfer needs a trained teacher: pass --teacher PATH (a distil checkpoint).")
    if recipe.transfer.init == "random" and not recipe.transfer.reuse and not recipe.transfer.inherit_recipe:
        # Validated, not copied: the temperature override of init: teacher is resolved like a read recipe's.
        transfer = TransferConfig.model_validate({**recipe.transfer.model_dump(), "init": "teacher"})
        recipe = recipe.model_copy(update={"transfer": transfer})
    data = load_data(recipe)
    teacher, teacher_spec = build_model(recipe.teacher, data, trust_code=recipe.trust_code)
    student, student_spec = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code, teacher=teacher
    )
    prepared = transfer_into(recipe, teacher, student, data)

    def keep(r: Runner) -> None:  # nothing trains: the models are measured as they are
        r.transfer = prepared
        r.keep(Stage.TEACHER, teacher, teacher_spec, teacher_train_record(recipe))
        r.keep(Stage.STUDENT, prepared.student, student_spec, prepared.train_cfg)

    return Runner(recipe, data, console=console, train=False, measure_latency=measure_latency).execute(
        out_root,
        run_name or f"{recipe.name}-transfer",
        exact=run_name is not None,
        train=keep,
        title=f"{recipe.name}: transferred, before training",
        footer=lambda path: [*_transfer_counts(prepared), f"run directory: {path}"],
    )


def _transfer_counts(prepared: PreparedStudent) -> list[str]:
    counts = ", ".join(f"{n} {m}" for m, n in sorted(prepared.report.counts().items()))
    return [f"student tensors: {counts or 'none transferred'}; details in transfer_report.json"]
