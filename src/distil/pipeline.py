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
from distil.fileio import atomic_write_json
from distil.losses.compose import ComposedLoss
from distil.measure import ModelMetrics, compare, measure_model, per_class_accuracy, predict
from distil.report import metrics_table
from distil.report.progress import make_progress
from distil.resources import oom_hint, preflight
from distil.train.build import build_model
from distil.train.checkpoint import save_checkpoint
from distil.train.distributed import rank_run_root
from distil.train.engine import make_accelerator
from distil.train.ensemble import recipe_teachers
from distil.train.runs import RunDir, resolve_resume
from distil.train.state import checkpointing
from distil.train.trackers import end_trackers, start_trackers
from distil.transfer import PreparedStudent, fit_in_phases, prepare_student, teacher_recipe


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
    d = recipe.data
    return load_dataset(
        d.name, d.root, val_fraction=d.val_fraction, seed=recipe.teacher_train.seed, limit=d.limit
    )


def _meta(
    recipe: Recipe, data: DataBundle, train_cfg: Any, history: list[dict[str, Any]], role: str
) -> dict[str, Any]:
    return {
        "role": role,
        "recipe": train_cfg.model_dump(mode="json"),
        "kd": recipe.kd.model_dump(mode="json") if role == "kd_student" else None,
        "data": data.describe(),
        "metrics": history[-1] if history else {},
    }


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
    console = console or Console()
    # Everything that can fail on bad input happens before the run directory exists.
    data = load_data(recipe)
    teacher, teacher_spec = build_model(recipe.teacher, data, seed=recipe.teacher_train.seed)
    scratch, student_spec = build_model(recipe.student, data, seed=recipe.student_train.seed)
    kd_student, _ = build_model(recipe.student, data, seed=recipe.student_train.seed)
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
                    description="teacher",
                )
                teacher, histories["teacher"] = result.model, result.history
            result = train_model(
                scratch,
                data,
                recipe.student_train,
                accelerator=accelerator,
                progress=progress,
                on_epoch_end=run.log,
                description="student_scratch",
            )
            scratch, histories["student_scratch"] = result.model, result.history
            prepared = _prepare_student(recipe, teacher, kd_student, data, recipe.teacher.checkpoint)
            teachers, teacher_weights = recipe_teachers(recipe.kd, teacher, data)  # kd.teachers: an ensemble

            with _distiller(
                teachers, teacher_weights, data, recipe, prepared.train_cfg, accelerator, progress, run
            ) as _distill:
                kd_student, histories["student_kd"] = fit_in_phases(
                    _distill, kd_student, prepared.train_cfg, prepared.schedule, "student_kd"
                )

        models: list[tuple[str, nn.Module, dict[str, Any], Any]] = [
            ("teacher", teacher, teacher_spec, recipe.teacher_train),
            ("student_scratch", scratch, student_spec, recipe.student_train),
            ("student_kd", kd_student, student_spec, prepared.train_cfg),
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
    x_test, y_test = data.test.x, data.test.y
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
        )
        logits = predict(model, x_test)
        if teacher_logits is None:
            teacher_logits = logits
        metrics.append(m)
        # Record the final test metrics in the sidecar too, so a checkpoint carries its own numbers.
        sidecar = run.file(f"{name}.json")
        meta = json.loads(sidecar.read_text())
        meta["test_metrics"] = m.to_dict()
        # None (not NaN, which is not JSON) for a class with no test samples.
        per_class = per_class_accuracy(logits, y_test, data.num_classes)
        meta["per_class_accuracy"] = [None if v != v else v for v in per_class]
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
    console = console or Console()
    data = load_data(recipe)
    teacher, spec = build_model(recipe.teacher, data, seed=recipe.teacher_train.seed)
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
                description="teacher",
            )
        histories = {"teacher": result.history}
        metrics = _measure_all(
            [("teacher", result.model, spec, recipe.teacher_train)],
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

    console = console or Console()
    if not recipe.teacher.checkpoint:
        raise ConfigError(
            "distillation needs a trained teacher: pass --teacher PATH (a distil checkpoint, or a state_dict "
            "with --set teacher.model=NAME), or train one with `distil train`."
        )
    data = load_data(recipe)
    teacher, teacher_spec = build_model(recipe.teacher, data)
    teachers, teacher_weights = recipe_teachers(recipe.kd, teacher, data)  # kd.teachers: an ensemble
    student, student_spec = build_model(recipe.student, data, seed=recipe.student_train.seed)
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
                teachers, teacher_weights, data, recipe, train_cfg, accelerator, progress, run
            ) as _distill,
        ):
            trained, history = fit_in_phases(_distill, student, train_cfg, prepared.schedule, "student_kd")
        histories = {"student_kd": history}
        models = [
            ("teacher", teacher, teacher_spec, recipe.teacher_train),
            ("student_kd", trained, student_spec, train_cfg),
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

    console = console or Console()
    if not recipe.teacher.checkpoint:
        raise ConfigError("transfer needs a trained teacher: pass --teacher PATH (a distil checkpoint).")
    if recipe.transfer.init == "random" and not recipe.transfer.reuse and not recipe.transfer.inherit_recipe:
        recipe = recipe.model_copy(
            update={"transfer": recipe.transfer.model_copy(update={"init": "teacher"})}
        )
    data = load_data(recipe)
    teacher, teacher_spec = build_model(recipe.teacher, data)
    student, student_spec = build_model(recipe.student, data, seed=recipe.student_train.seed)
    prepared = _prepare_student(recipe, teacher, student, data, recipe.teacher.checkpoint)
    with RunDir(out_root, run_name or f"{recipe.name}-transfer", exact=run_name is not None) as run:
        run.write_text("recipe.yaml", recipe_to_yaml(recipe))
        models = [
            ("teacher", teacher, teacher_spec, recipe.teacher_train),
            ("student", prepared.student, student_spec, prepared.train_cfg),
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
        example_inputs=data.train.x[:2],
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


def evaluate_checkpoints(
    paths: list[str], data: DataBundle, *, measure_latency: bool = True, model_name: str | None = None
) -> list[ModelMetrics]:
    """Measure checkpoints on `data.test`; the first one is the reference (teacher) for agreement.

    A path with a distil sidecar brings its own architecture; any other weights file (a plain state_dict
    saved elsewhere, .pt/.pth/.safetensors) is loaded into `model_name` (a registered name or
    `pkg.module:factory`) built for `data`.
    """
    from distil.api import check_classes
    from distil.config import ModelConfig
    from distil.errors import CheckpointError
    from distil.train.checkpoint import _paths, load_checkpoint

    metrics: list[ModelMetrics] = []
    reference_logits: torch.Tensor | None = None
    for path in paths:
        weights, sidecar = _paths(path)
        if sidecar.is_file() or Path(path).is_dir():
            model, _ = load_checkpoint(path)
        elif model_name is not None:
            model, _ = build_model(ModelConfig(model=model_name, checkpoint=path), data)
            weights = Path(path)
        else:
            raise CheckpointError(
                f"{path!r} has no distil sidecar ({sidecar.name}), so its architecture is unknown. If it is a "
                "plain state_dict, name its model: --model NAME or --model pkg.module:factory."
            )
        check_classes(model, data, f"model in {path!r}")
        m = measure_model(
            Path(path).stem,
            model.eval(),
            data.test.x,
            data.test.y,
            input_shape=data.input_shape,
            teacher_logits=reference_logits,
            weights_path=weights,
            latency=measure_latency,
        )
        if reference_logits is None:
            reference_logits = predict(model, data.test.x)
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
    out_root, resume = rank_run_root(accelerator, out_root, resume)
    with RunDir(out_root, name, exact=exact, resume=resume) as run:
        run.write_text("recipe.yaml", recipe_to_yaml(recipe))
        _announce(console, run)
        start_trackers(accelerator, run.path, recipe.name, recipe.model_dump(mode="json"))
        yield run
    end_trackers(accelerator)


@contextmanager
def _guarded(run: RunDir, sections: dict[str, Any]) -> Iterator[None]:
    """Resumable training states in the run directory, and out-of-memory errors that name the fix."""
    with checkpointing(run.path / "state"), oom_hint(sections):
        yield
