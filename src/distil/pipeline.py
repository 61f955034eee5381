"""The seed document's pipeline as stages: train the teacher, a scratch student, a distilled student,
then measure all three side by side and write the run directory.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from distil.api import distill, distill_loss, train_model
from distil.config import Recipe, TransferConfig, recipe_to_yaml
from distil.data import DataBundle, load_dataset
from distil.data.unlabeled import labeled_part, transfer_set, what_students_saw
from distil.errors import ConfigError
from distil.fileio import atomic_write_json
from distil.losses.compose import ComposedLoss
from distil.measure import (
    MetricInputs,
    ModelMetrics,
    compare,
    count_parameters,
    measure_model,
    predict,
    task_details,
)
from distil.report import metrics_table
from distil.report.progress import make_progress
from distil.resources import oom_hint, preflight
from distil.train.build import build_model
from distil.train.checkpoint import save_checkpoint
from distil.train.distributed import rank_run_root, rank_zero_console
from distil.train.engine import make_accelerator
from distil.train.ensemble import recipe_teachers
from distil.train.runs import RunDir, resolve_resume
from distil.train.stages import Stage
from distil.train.state import checkpointing
from distil.train.trackers import end_trackers, start_trackers
from distil.transfer import PreparedStudent, fit_in_phases, prepare_student, teacher_recipe, transferred_kd


@dataclass
class PipelineResult:
    """The outcome of a pipeline run."""

    run_dir: Path
    metrics: list[ModelMetrics]
    ratios: dict[str, dict[str, float | None]]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def by_name(self, name: str) -> ModelMetrics:
        return next(m for m in self.metrics if m.name == name)


def load_data(recipe: Recipe) -> DataBundle:
    """The recipe's dataset, checked against the recipe before any run directory exists."""
    d = recipe.data
    data = load_dataset(
        d.name, d.root, val_fraction=d.val_fraction, seed=recipe.teacher_train.seed, limit=d.limit
    )
    if data.is_tabular:
        sections = {"teacher_train": recipe.teacher_train, "student_train": recipe.student_train}
        if recipe.compress is not None:
            sections["compress.finetune"] = recipe.compress.finetune
        bad = [
            f"{k}.augment={cfg.augment}" for k, cfg in sections.items() if cfg.augment not in ("auto", "none")
        ]
        if bad:
            raise ConfigError(
                f"{', '.join(bad)}: crops and flips are for images, but dataset {data.name!r} holds feature "
                f"vectors of shape {data.input_shape}; set augment to none (or auto)."
            )
    return data


# What a sidecar says when a model's training recipe is not known (a teacher loaded from weights
# trained elsewhere): never the run's own settings, which did not train it.
UNKNOWN_RECIPE = "unknown"
KD_ROLE = Stage.STUDENT_KD


def transferred(recipe: Recipe) -> Recipe:
    """`recipe` with the KD settings of its (possibly transferred) student (`transfer.kd_temperature`)."""
    return recipe.model_copy(update={"kd": transferred_kd(recipe.transfer, recipe.kd)})


def _teacher_train_record(recipe: Recipe) -> Any:
    """The teacher's training recipe as far as it is known: this run's, or its checkpoint's sidecar's.

    A teacher loaded from a distil checkpoint keeps the recipe (and the KD settings, for a distilled
    teacher) its sidecar records; a plain state_dict's are unknown (None).
    """
    path = recipe.teacher.checkpoint
    if path is None:
        return recipe.teacher_train
    from distil.train.checkpoint import _paths, read_sidecar

    if not _paths(path)[1].is_file():
        return None
    raw = read_sidecar(path).get("recipe")
    return raw if isinstance(raw, dict) else None


def _meta(
    recipe: Recipe, data: DataBundle, train_cfg: Any, history: list[dict[str, Any]], role: str
) -> dict[str, Any]:
    if train_cfg is None:
        trained_with: Any = UNKNOWN_RECIPE
    elif isinstance(train_cfg, dict):
        trained_with = train_cfg
    else:
        trained_with = train_cfg.model_dump(mode="json")
    return {
        "role": role,
        "recipe": trained_with,
        "kd": recipe.kd.model_dump(mode="json") if role == KD_ROLE else None,
        "data": data.describe(),
        "metrics": history[-1] if history else {},
    }


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
    data = load_data(recipe)
    kd_data = transfer_set(data, recipe.data.unlabeled)  # students: data.unlabeled hides labels, adds inputs
    scratch_data = labeled_part(kd_data)  # the scratch student: the labelled samples, as many steps
    teacher, teacher_spec = build_model(
        recipe.teacher, data, seed=recipe.teacher_train.seed, trust_code=recipe.trust_code
    )
    scratch, student_spec = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code
    )
    kd_student, _ = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code
    )
    warn_if_student_larger(console, teacher, kd_student)
    if recipe.transfer != TransferConfig():
        # A dry run on copies checks the transfer (shapes, names, maps) before anything is written; the
        # real one runs once the teacher is trained. Transfer applies to the KD student only, so the
        # scratch student stays the random-init, label-only baseline.
        checks = (copy.deepcopy(teacher), copy.deepcopy(kd_student))
        _prepare_student(recipe, *checks, data, recipe.teacher.checkpoint)
    accelerator = make_accelerator(recipe.device, recipe.mixed_precision, recipe.trackers)
    histories: dict[str, list[dict[str, Any]]] = {}

    teacher_cfg = None if recipe.teacher.checkpoint else recipe.teacher_train
    stages = [(teacher, teacher_cfg), (scratch, recipe.student_train), (kd_student, recipe.student_train)]
    with _open_run(
        recipe,
        accelerator,
        out_root,
        run_name or recipe.name,
        exact=run_name is not None,
        resume=resume,
        console=console,
        stages=stages,
    ) as run:
        with (
            _guarded(run, {"teacher_train": recipe.teacher_train, "student_train": recipe.student_train}),
            make_progress(console, enabled=show_progress, log_format=log_format) as progress,
        ):
            if recipe.teacher.checkpoint is None:
                result = train_model(
                    teacher,
                    data,
                    recipe.teacher_train,
                    accelerator=accelerator,
                    progress=progress,
                    on_epoch_end=run.log,
                    description=Stage.TEACHER,
                )
                teacher, histories[Stage.TEACHER] = result.model, result.history
            result = train_model(
                scratch,
                scratch_data,
                recipe.student_train,
                accelerator=accelerator,
                progress=progress,
                on_epoch_end=run.log,
                description=Stage.STUDENT_SCRATCH,
            )
            scratch, histories[Stage.STUDENT_SCRATCH] = result.model, result.history
            prepared = _prepare_student(recipe, teacher, kd_student, data, recipe.teacher.checkpoint)
            teachers, teacher_weights = recipe_teachers(
                recipe.kd, teacher, data, trust_code=recipe.trust_code
            )  # kd.teachers: an ensemble

            with _distiller(
                teachers,
                teacher_weights,
                kd_data,
                transferred(recipe),
                prepared.train_cfg,
                accelerator,
                progress,
                run,
            ) as _distill:
                kd_student, histories[Stage.STUDENT_KD] = fit_in_phases(
                    _distill, kd_student, prepared.train_cfg, prepared.schedule, Stage.STUDENT_KD
                )

        models: list[tuple[str, nn.Module, dict[str, Any], Any]] = [
            (Stage.TEACHER, teacher, teacher_spec, _teacher_train_record(recipe)),
            (Stage.STUDENT_SCRATCH, scratch, student_spec, recipe.student_train),
            (Stage.STUDENT_KD, kd_student, student_spec, prepared.train_cfg),
        ]
        with console.status("measuring accuracy, size, MACs and latency..."):
            metrics = _measure_all(models, data, run, recipe, histories, measure_latency)
        if recipe.compress is not None:
            # prune -> KD fine-tune -> int8 -> ONNX: one row per deployed artefact, timed in ONNX Runtime.
            from distil.compress import compress_model

            compressed = compress_model(
                teacher,
                kd_student,
                student_spec,
                data,
                recipe.compress,
                run.file("compress"),
                kd=recipe.kd,
                measure_latency=measure_latency,
                accelerator=accelerator,
                on_epoch_end=run.log,
                log=console.print,
            )
            metrics += compressed.metrics
            histories.update(compressed.histories)
        ratios = _write_summary(run, recipe, data, metrics)
        _write_transfer(run, prepared)
    console.print(metrics_table(metrics, metrics[0], title=f"{recipe.name}: {data.name} test set"))
    console.print(what_students_saw(data, kd_data), highlight=False)
    console.print(f"run directory: {run.path}")
    return PipelineResult(run_dir=run.path, metrics=metrics, ratios=ratios, histories=histories)


def _measure_all(
    models: list[tuple[str, nn.Module, dict[str, Any], Any]],
    data: DataBundle,
    run: RunDir,
    recipe: Recipe,
    histories: dict[str, list[dict[str, Any]]],
    measure_latency: bool,
) -> list[ModelMetrics]:
    # The test set is measured in memory (read once from disk for on-disk data).
    x_test, y_test = data.test.head(len(data.test)), data.test.labels
    metrics: list[ModelMetrics] = []
    teacher_logits: torch.Tensor | None = None
    for name, model, spec, train_cfg in models:
        model = model.cpu().eval()
        history = histories.get(name, [])
        weights = save_checkpoint(run.file(name), model, spec, _meta(recipe, data, train_cfg, history, name))
        m = measure_model(
            name,
            model,
            x_test,
            y_test,
            input_shape=data.input_shape,
            teacher_logits=teacher_logits,
            weights_path=weights,
            latency=measure_latency,
            task=data.task,
        )
        logits = predict(model, x_test)
        if teacher_logits is None:
            teacher_logits = logits
        metrics.append(m)
        # Record the final test metrics in the sidecar too, so a checkpoint carries its own numbers.
        sidecar = run.file(f"{name}.json")
        meta = json.loads(sidecar.read_text())
        meta["test_metrics"] = m.to_dict()
        # The task's breakdowns (classification: per-class accuracy); None (not NaN, which is not JSON)
        # for a class with no test samples.
        details = task_details(data.task, MetricInputs(logits, y_test, num_classes=data.num_classes))
        for key, values in details.items():
            if values is not None:
                meta[key] = [None if v != v else v for v in values]
        atomic_write_json(sidecar, meta)
    return metrics


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
    accelerator = make_accelerator(recipe.device, recipe.mixed_precision, recipe.trackers)
    with _open_run(
        recipe,
        accelerator,
        out_root,
        run_name or f"{recipe.name}-teacher",
        exact=run_name is not None,
        resume=resume,
        console=console,
        stages=[(teacher, recipe.teacher_train)],
    ) as run:
        with (
            _guarded(run, {"teacher_train": recipe.teacher_train}),
            make_progress(console, enabled=show_progress, log_format=log_format) as progress,
        ):
            result = train_model(
                teacher,
                data,
                recipe.teacher_train,
                accelerator=accelerator,
                progress=progress,
                on_epoch_end=run.log,
                description=Stage.TEACHER,
            )
        histories: dict[str, list[dict[str, Any]]] = {Stage.TEACHER: result.history}
        metrics = _measure_all(
            [(Stage.TEACHER, result.model, spec, recipe.teacher_train)],
            data,
            run,
            recipe,
            histories,
            measure_latency,
        )
        _write_summary(run, recipe, data, metrics)
    console.print(metrics_table(metrics, metrics[0], title=f"{recipe.name}: {data.name} test set"))
    console.print(f"teacher checkpoint: {run.path / 'teacher.safetensors'}")
    return PipelineResult(run_dir=run.path, metrics=metrics, ratios={}, histories=histories)


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
    from distil.errors import ConfigError

    console = rank_zero_console(console)
    if not recipe.teacher.checkpoint:
        raise ConfigError(
            "distillation needs a trained teacher: pass --teacher PATH (a distil checkpoint, or a state_dict "
            "with --set teacher.model=NAME), or train one with `distil train`."
        )
    data = load_data(recipe)
    kd_data = transfer_set(data, recipe.data.unlabeled)  # data.unlabeled: hidden labels, unlabelled inputs
    teacher, teacher_spec = build_model(recipe.teacher, data, trust_code=recipe.trust_code)
    teachers, teacher_weights = recipe_teachers(
        recipe.kd, teacher, data, trust_code=recipe.trust_code
    )  # kd.teachers: an ensemble
    student, student_spec = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code
    )
    warn_if_student_larger(console, teacher, student)
    # Knowledge transfer (init from teacher, reused modules, inherited recipe) happens before the run
    # directory exists, so a bad transfer writes nothing.
    prepared = _prepare_student(recipe, teacher, student, data, recipe.teacher.checkpoint)
    train_cfg = prepared.train_cfg
    accelerator = make_accelerator(recipe.device, recipe.mixed_precision, recipe.trackers)
    with _open_run(
        recipe,
        accelerator,
        out_root,
        run_name or f"{recipe.name}-kd",
        exact=run_name is not None,
        resume=resume,
        console=console,
        stages=[(teacher, None), (student, recipe.student_train)],
    ) as run:
        with (
            _guarded(run, {"student_train": recipe.student_train}),
            make_progress(console, enabled=show_progress, log_format=log_format) as progress,
            _distiller(
                teachers, teacher_weights, kd_data, transferred(recipe), train_cfg, accelerator, progress, run
            ) as _distill,
        ):
            trained, history = fit_in_phases(
                _distill, student, train_cfg, prepared.schedule, Stage.STUDENT_KD
            )
        histories: dict[str, list[dict[str, Any]]] = {Stage.STUDENT_KD: history}
        models: list[tuple[str, nn.Module, dict[str, Any], Any]] = [
            (Stage.TEACHER, teacher, teacher_spec, _teacher_train_record(recipe)),
            (Stage.STUDENT_KD, trained, student_spec, train_cfg),
        ]
        metrics = _measure_all(models, data, run, recipe, histories, measure_latency)
        ratios = _write_summary(run, recipe, data, metrics)
        _write_transfer(run, prepared)
    console.print(metrics_table(metrics, metrics[0], title=f"{recipe.name}: {data.name} test set"))
    console.print(f"run directory: {run.path}")
    return PipelineResult(run_dir=run.path, metrics=metrics, ratios=ratios, histories=histories)


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
    from distil.errors import ConfigError

    console = rank_zero_console(console)
    if not recipe.teacher.checkpoint:
        raise ConfigError("transfer needs a trained teacher: pass --teacher PATH (a distil checkpoint).")
    if recipe.transfer.init == "random" and not recipe.transfer.reuse and not recipe.transfer.inherit_recipe:
        recipe = recipe.model_copy(
            update={"transfer": recipe.transfer.model_copy(update={"init": "teacher"})}
        )
    data = load_data(recipe)
    teacher, teacher_spec = build_model(recipe.teacher, data, trust_code=recipe.trust_code)
    student, student_spec = build_model(
        recipe.student, data, seed=recipe.student_train.seed, trust_code=recipe.trust_code
    )
    prepared = _prepare_student(recipe, teacher, student, data, recipe.teacher.checkpoint)
    with RunDir(out_root, run_name or f"{recipe.name}-transfer", exact=run_name is not None) as run:
        run.write_text("recipe.yaml", recipe_to_yaml(recipe))
        models: list[tuple[str, nn.Module, dict[str, Any], Any]] = [
            (Stage.TEACHER, teacher, teacher_spec, _teacher_train_record(recipe)),
            (Stage.STUDENT, prepared.student, student_spec, prepared.train_cfg),
        ]
        metrics = _measure_all(models, data, run, recipe, {}, measure_latency)
        ratios = _write_summary(run, recipe, data, metrics)
        _write_transfer(run, prepared)
    console.print(metrics_table(metrics, metrics[0], title=f"{recipe.name}: transferred, before training"))
    counts = ", ".join(f"{n} {m}" for m, n in sorted(prepared.report.counts().items()))
    console.print(f"student tensors: {counts or 'none transferred'}; details in transfer_report.json")
    console.print(f"run directory: {run.path}")
    return PipelineResult(run_dir=run.path, metrics=metrics, ratios=ratios, histories={})


def _prepare_student(
    recipe: Recipe, teacher: nn.Module, student: nn.Module, data: DataBundle, teacher_path: str | None
) -> PreparedStudent:
    """Apply `recipe.transfer` to `student`; the teacher's recipe comes from its checkpoint sidecar."""
    cfg = recipe.transfer
    teacher_train = None
    if cfg.inherit_recipe:
        teacher_train = teacher_recipe(teacher_path) if teacher_path else recipe.teacher_train
    return prepare_student(
        cfg,
        teacher,
        student,
        recipe.student_train,
        example_inputs=data.train.head(2),
        teacher_train=teacher_train,
    )


def _write_transfer(run: RunDir, prepared: PreparedStudent) -> None:
    """transfer_report.json, plus a "Knowledge transfer" section at the end of report.md."""
    if not prepared.active:
        return
    atomic_write_json(run.file("transfer_report.json"), prepared.report.to_dict())
    report = run.file("report.md")
    before = report.read_text(encoding="utf-8") if report.is_file() else ""
    run.write_text("report.md", f"{before.rstrip()}\n\n{prepared.report.to_markdown()}\n")


def _write_summary(
    run: RunDir, recipe: Recipe, data: DataBundle, metrics: list[ModelMetrics]
) -> dict[str, dict[str, float | None]]:
    ratios = {m.name: compare(metrics[0], m) for m in metrics[1:]}
    summary = {
        "recipe": recipe.name,
        "data": data.describe(),
        "metrics": [m.to_dict() for m in metrics],
        "ratios": ratios,
    }
    atomic_write_json(run.file("summary.json"), summary)
    # Imported here: matplotlib is slow to import and only needed once a run has finished.
    from distil.report.writer import write_report

    write_report(run.path, name=run.final.name)  # report.md, report.html and plots/*.png
    return ratios


def require_data_for_model(model_name: str | None, data: str | None, checkpoint: str) -> None:
    """A plain state_dict (given with --model) records no dataset: --data must name it.

    A distil checkpoint records its dataset, so `--model` there (naming the factory its sidecar may
    use) needs no --data.

    Raises:
        ConfigError: --model without --data for a file without a distil sidecar.
    """
    from distil.errors import ConfigError
    from distil.train.checkpoint import _paths

    has_sidecar = _paths(checkpoint)[1].is_file() or Path(checkpoint).is_dir()
    if model_name is not None and data is None and not has_sidecar:
        raise ConfigError(
            "--model loads plain state_dict files, which do not record their dataset: add --data NAME"
        )


def load_any(
    path: str, data: DataBundle, model_name: str | None = None, *, trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any], Path]:
    """A model from a distil checkpoint, or from a plain state_dict loaded into `model_name`.

    A path with a distil sidecar brings its own architecture; any other weights file (a plain state_dict
    saved elsewhere, .pt/.pth/.safetensors) is loaded into `model_name` (a registered name or
    `pkg.module:factory`) built for `data`. A sidecar may name `model_name` as its factory, and no other
    ``pkg.module:factory`` unless `trust_code`.

    Returns:
        (model, its sidecar metadata (for a plain state_dict: its spec and `data`), the weights file).

    Raises:
        CheckpointError: a plain state_dict without `model_name`, or weights that do not fit.
    """
    from distil.api import check_classes
    from distil.config import ModelConfig
    from distil.errors import CheckpointError
    from distil.train.checkpoint import _paths, load_checkpoint

    weights, sidecar = _paths(path)
    if sidecar.is_file() or Path(path).is_dir():
        model, meta = load_checkpoint(
            path, trust_code=trust_code, trusted_models=[model_name] if model_name else []
        )
    elif model_name is not None:
        model, spec = build_model(ModelConfig(model=model_name, checkpoint=path), data, trust_code=trust_code)
        meta, weights = {"spec": spec, "data": data.describe()}, Path(path)
    else:
        raise CheckpointError(
            f"{path!r} has no distil sidecar ({sidecar.name}), so its architecture is unknown. If it is a "
            "plain state_dict, name its model: --model NAME or --model pkg.module:factory."
        )
    check_classes(model, data, f"model in {path!r}")
    return model, meta, weights


def evaluate_checkpoints(
    paths: list[str],
    data: DataBundle,
    *,
    measure_latency: bool = True,
    model_name: str | None = None,
    trust_code: bool = False,
) -> list[ModelMetrics]:
    """Measure checkpoints on `data.test`; the first one is the reference (teacher) for agreement.

    A path with a distil sidecar brings its own architecture; any other weights file (a plain state_dict
    saved elsewhere, .pt/.pth/.safetensors) is loaded into `model_name` (a registered name or
    `pkg.module:factory`) built for `data`. A sidecar may name `model_name` as its factory, and no other
    ``pkg.module:factory`` unless `trust_code`.
    """
    metrics: list[ModelMetrics] = []
    reference_logits: torch.Tensor | None = None
    x_test, y_test = data.test.head(len(data.test)), data.test.labels
    for path in paths:
        model, _, weights = load_any(path, data, model_name, trust_code=trust_code)
        m = measure_model(
            Path(path).stem,
            model.eval(),
            x_test,
            y_test,
            input_shape=data.input_shape,
            teacher_logits=reference_logits,
            weights_path=weights,
            latency=measure_latency,
            task=data.task,
        )
        if reference_logits is None:
            reference_logits = predict(model, x_test)
        metrics.append(m)
    return metrics


def _run_root(out_root: str | Path, resume: str | Path | None) -> Path:
    """The directory a run is written in: `out_root`, or the parent of the partial run being resumed."""
    return resolve_resume(resume).parent if resume is not None else Path(out_root)


def _announce(console: Console, run: RunDir) -> None:
    """Say where the run lives while it is unfinished, and how to continue it if it is interrupted."""
    verb = "resuming" if run.resuming else "run directory (until it finishes)"
    console.print(
        f"{verb}: {run.path}; if interrupted, continue with the same command plus --resume {run.path}",
        highlight=False,
        soft_wrap=True,
    )


@contextmanager
def _distiller(
    teachers: Any,
    teacher_weights: Any,
    data: DataBundle,
    recipe: Recipe,
    cfg: Any,
    accelerator: Any,
    progress: Any,
    run: RunDir,
) -> Iterator[Callable[[nn.Module, Any, str], Any]]:
    """`distill(model, cfg, description)` with everything else of this run bound (for fit_in_phases).

    The loss is built once, for the whole run (`cfg`, all its epochs), at the first call and carried
    across the phases of an unfreeze schedule: FitNets regressors, CRD heads and memory banks keep what
    they learned, and each phase continues the warm-ups and temperature schedule at the run's epoch
    instead of restarting them. Its feature hooks are removed when the block ends.
    """
    loss: ComposedLoss | None = None
    epochs_done = 0

    def run_distill(model: nn.Module, phase: Any, description: str) -> Any:
        nonlocal loss, epochs_done
        if loss is None:
            first = teachers[0] if isinstance(teachers, list | tuple) else teachers
            loss = distill_loss(recipe.kd, teacher=first, student=model, data=data, cfg=cfg)
        result = distill(
            teachers,
            model,
            data,
            phase,
            recipe.kd,
            loss=loss,
            first_epoch=epochs_done,
            teacher_weights=teacher_weights,
            accelerator=accelerator,
            progress=progress,
            on_epoch_end=run.log,
            description=description,
        )
        epochs_done += phase.epochs
        return result

    try:
        yield run_distill
    finally:
        if loss is not None:
            loss.close()


@contextmanager
def _open_run(
    recipe: Recipe,
    accelerator: Any,
    out_root: str | Path,
    name: str,
    *,
    exact: bool,
    resume: str | Path | None,
    console: Console,
    stages: list[tuple[nn.Module, Any]],
) -> Iterator[RunDir]:
    """Check resources, open the run directory (rank 0 only writes), save the recipe, start trackers.

    Trackers are ended only when the run finishes: a failed run keeps its partial directory as it is.
    """
    preflight(_run_root(out_root, resume), stages)
    out_root, resume, states = rank_run_root(accelerator, out_root, resume)
    with RunDir(out_root, name, exact=exact, resume=resume, states=states) as run:
        run.write_text("recipe.yaml", recipe_to_yaml(recipe))
        _announce(console, run)
        start_trackers(accelerator, run.path, recipe.name, recipe.model_dump(mode="json"))
        yield run
    end_trackers(accelerator)


@contextmanager
def _guarded(run: RunDir, sections: dict[str, Any]) -> Iterator[None]:
    """Resumable training states in the run directory, and out-of-memory errors that name the fix."""
    with checkpointing(run.state_root), oom_hint(sections):
        yield
