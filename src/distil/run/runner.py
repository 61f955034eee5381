"""The one runner every entry point uses: open the run directory, guard training, measure, summarise.

A run of a recipe is always the same skeleton; only the stages in its middle differ:

1. **open**: check resources (preflight), open the run directory (only rank 0 writes), save the recipe,
   say how to resume, start the experiment trackers;
2. **guard**: resumable training states in the run directory, out-of-memory errors that name the fix,
   and the progress display, around the training stages (`train`, a function of the runner);
3. **measure**: every model the stages kept, in order, saved as a checkpoint and measured on the test
   set (the first is the reference for agreement); then the stages that work on measured models
   (`after`, e.g. the compress chain) add their rows;
4. **summary**: summary.json, report.md/html with plots, the transfer report; the table is printed.

The entry points (`distil.run.pipeline`) build their models before the run exists, so everything
that can fail on bad input fails before anything is written, then call `Runner.execute`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from distil.config import Recipe, recipe_to_yaml
from distil.data import DataBundle
from distil.fileio import atomic_write_json
from distil.measure import ModelMetrics, compare, measure, time_models, weights_bytes
from distil.measure.model import PREDICT_BATCH_SIZE, TOKEN_BATCH_SIZE
from distil.report import metrics_table
from distil.report.progress import make_progress
from distil.report.tables import CHECKED_EXTRA
from distil.resources import oom_hint, preflight
from distil.train.checkpoint import save_checkpoint
from distil.train.distributed import rank_run_root
from distil.train.engine import make_accelerator
from distil.train.fsdp import check_fsdp
from distil.train.runs import RunDir, resolve_resume
from distil.train.stages import Stage
from distil.train.state import checkpointing
from distil.train.trackers import end_trackers, start_trackers
from distil.transfer import PreparedStudent

# What a sidecar says when a model's training recipe is not known (a teacher loaded from weights
# trained elsewhere): never the run's own settings, which did not train it.
UNKNOWN_RECIPE = "unknown"
KD_ROLE = Stage.STUDENT_KD


@dataclass
class PipelineResult:
    """The outcome of a pipeline run."""

    run_dir: Path
    metrics: list[ModelMetrics]
    ratios: dict[str, dict[str, float | None]]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def by_name(self, name: str) -> ModelMetrics:
        return next(m for m in self.metrics if m.name == name)


@dataclass
class Kept:
    """A model a stage produced, to be saved and measured: its stage name, spec and training recipe.

    `trained_with` is the recipe section that trained it, a sidecar's recipe dict (a teacher trained
    elsewhere), or None when it is not known. `data` is the data as this model reads it when that is not
    the run's (a teacher with its own tokenizer: `distil.teachers.crosstok.teacher_view`): it is measured
    on that test split and saved with that tokenizer, and never fed the run's token ids.
    """

    name: str
    model: nn.Module
    spec: dict[str, Any]
    trained_with: Any
    data: DataBundle | None = None


StageFn = Callable[["Runner"], None]


class Runner:
    """One run of `recipe` on `data`: the run directory, the accelerator, and what the stages produced.

    Stages are functions of the runner (`distil.run.stages`): they train with `runner.accelerator`
    and `runner.progress`, log every epoch with `runner.log`, record histories with `runner.record`
    and hand their models over with `runner.keep`.

    Args:
        recipe: The run's recipe (saved as recipe.yaml; its name titles the report).
        data: The dataset, already checked against the recipe.
        console: Where progress and results are printed (rank 0's).
        train: Whether the run trains: False (e.g. `distil transfer`) opens a plain run directory with
            no accelerator, resource check, resumable states or trackers.
        measure_latency: Time every model in the measurement.
    """

    def __init__(
        self,
        recipe: Recipe,
        data: DataBundle,
        *,
        console: Console,
        train: bool = True,
        measure_latency: bool = True,
    ) -> None:
        self.recipe = recipe
        self.data = data
        self.console = console
        self.measure_latency = measure_latency
        self.accelerator: Any = (
            make_accelerator(recipe.device, recipe.mixed_precision, recipe.trackers) if train else None
        )
        if self.accelerator is not None:  # before any training: a sharded stage needs several processes
            for section in ("teacher_train", "student_train"):
                if getattr(recipe, section).fsdp.enabled:
                    check_fsdp(self.accelerator, what=f"{section}.fsdp")
        self.progress: Any = None
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.kept: list[Kept] = []
        self.metrics: list[ModelMetrics] = []
        self.transfer: PreparedStudent | None = None
        self.generation: dict[str, Any] = {}  # language models: samples and decode latency
        self._dir: RunDir | None = None

    @property
    def dir(self) -> RunDir:
        """The open run directory (only while `execute` runs)."""
        if self._dir is None:
            raise RuntimeError("the run directory is open only inside Runner.execute")
        return self._dir

    def log(self, record: dict[str, Any]) -> None:
        """One epoch's record, into the run directory's log (the trainers' `on_epoch_end`)."""
        self.dir.log(record)

    def record(self, name: str, history: list[dict[str, Any]]) -> None:
        """The epoch records of stage `name`."""
        self.histories[name] = history

    def keep(
        self,
        name: str,
        model: nn.Module,
        spec: dict[str, Any],
        trained_with: Any,
        *,
        data: DataBundle | None = None,
    ) -> None:
        """Save and measure `model` as `name` once training ends (in the order kept); `data`: the data as
        it reads it, when that is not the run's (`Kept.data`)."""
        self.kept.append(Kept(name, model, spec, trained_with, data))

    def kept_model(self, name: str) -> Kept:
        """The model a stage kept as `name`."""
        return next(k for k in self.kept if k.name == name)

    def execute(
        self,
        out_root: str | Path,
        name: str,
        *,
        exact: bool,
        train: StageFn,
        after: Sequence[StageFn] = (),
        resume: str | Path | None = None,
        preflight_stages: list[tuple[nn.Module, Any]] | None = None,
        guard: dict[str, Any] | None = None,
        show_progress: bool = True,
        log_format: str = "auto",
        title: str = "",
        footer: Callable[[Path], list[str]] = lambda path: [f"run directory: {path}"],
    ) -> PipelineResult:
        """Open the run, run `train` guarded, measure what it kept, run `after`, write the summary.

        Args:
            out_root: Where run directories are created (a resumed run stays where it is).
            name: The run directory's name; with `exact`, exactly that name (else made unique).
            train: The training stages: kept models are measured after it returns.
            after: Stages on the measured models (they may append to `runner.metrics`).
            resume: A partial run directory to continue.
            preflight_stages: (model, training config) per model trained, for the resource check.
            guard: Recipe sections named by the out-of-memory advice (e.g. ``{"teacher_train": cfg}``).
            show_progress, log_format: The progress display.
            title: The printed table's title.
            footer: Lines printed after the table, given the final run directory.

        Returns:
            PipelineResult with the metrics in the order the stages kept their models.
        """
        with self._open(out_root, name, exact=exact, resume=resume, stages=preflight_stages or []) as run:
            self._dir = run
            try:
                if self.accelerator is None:
                    train(self)
                else:
                    with (
                        self._guarded(guard or {}),
                        make_progress(self.console, enabled=show_progress, log_format=log_format) as progress,
                    ):
                        self.progress = progress
                        train(self)
                    self.progress = None
                with self.console.status("measuring accuracy, size, MACs and latency..."):
                    self.metrics = self._measure_all()
                for stage in after:
                    stage(self)
                ratios = self._write_summary()
                self._write_transfer()
            finally:
                self._dir = None
        self.console.print(metrics_table(self.metrics, self.metrics[0], title=title))
        for line in footer(run.path):
            self.console.print(line)
        return PipelineResult(run_dir=run.path, metrics=self.metrics, ratios=ratios, histories=self.histories)

    # ------------------------------------------------------------------------------------ open

    @contextmanager
    def _open(
        self,
        out_root: str | Path,
        name: str,
        *,
        exact: bool,
        resume: str | Path | None,
        stages: list[tuple[nn.Module, Any]],
    ) -> Iterator[RunDir]:
        """Check resources, open the run directory (rank 0 only writes), save the recipe, start trackers.

        Trackers are ended only when the run finishes: a failed run keeps its partial directory as it is.
        """
        if self.accelerator is None:
            with RunDir(out_root, name, exact=exact) as run:
                run.write_text("recipe.yaml", recipe_to_yaml(self.recipe))
                yield run
            return
        preflight(_run_root(out_root, resume), stages)
        out_root, resume, states = rank_run_root(self.accelerator, out_root, resume)
        with RunDir(out_root, name, exact=exact, resume=resume, states=states) as run:
            run.write_text("recipe.yaml", recipe_to_yaml(self.recipe))
            _announce(self.console, run)
            recipe = self.recipe
            start_trackers(self.accelerator, run.path, recipe.name, recipe.model_dump(mode="json"))
            yield run
        end_trackers(self.accelerator)

    @contextmanager
    def _guarded(self, sections: dict[str, Any]) -> Iterator[None]:
        """Resumable training states in the run directory, and out-of-memory errors that name the fix."""
        with checkpointing(self.dir.state_root), oom_hint(sections):
            yield

    # --------------------------------------------------------------------------------- measure

    def _measure_all(self) -> list[ModelMetrics]:
        """Every kept model measured on the test set, one streamed pass each (`distil.measure.measure`; the
        first model's predictions are the reference for agreement), all timed together, then saved: its
        weights, and its sidecar written once with the final test metrics and the task's breakdowns.

        A model that reads the text with its own tokenizer (`Kept.data`) is measured on its own tokenization
        of the test text (bits per byte compare; its per-token figures are its own, `ModelMetrics.tokenizer`
        says whose), timed on a block of its own tokens, and left out of what would feed it the run's ids:
        agreement (as either side) and generation."""
        tokens = self.data.is_tokens
        metrics: list[ModelMetrics] = []
        details: list[dict[str, Any]] = []
        reference: torch.Tensor | None = None
        for i, kept in enumerate(self.kept):
            data = kept.data or self.data
            measured = measure(
                kept.model.cpu().eval(),
                data.test,
                data.task,
                name=kept.name,
                input_shape=_input_shape(data),
                reference=reference if kept.data is None else None,
                latency=False,  # timed below, every model interleaved with the others
                batch_size=TOKEN_BATCH_SIZE if tokens else PREDICT_BATCH_SIZE,
                vocab_size=_vocab_size(data),
                num_classes=None if tokens else data.num_classes,
                token_bytes=self._token_bytes if kept.data is None else _token_bytes(data, self.recipe),
            )
            if kept.data is not None:
                measured.metrics.tokenizer = data.extra.get("tokenizer_name") or data.extra.get("tokenizer")
            if i == 0 and kept.data is None:  # the reference is the first model's, on the run's tokens
                reference = measured.predictions
            metrics.append(measured.metrics)
            # None (not NaN, which is not JSON) for a class with no test samples.
            details.append({k: [None if v != v else v for v in vs] for k, vs in measured.details.items()})
        # Token models: generation latency is their speed figure.
        self._time(metrics, throughput=not tokens)
        if tokens:
            self._generation(metrics)
        for kept, m, extra in zip(self.kept, metrics, details, strict=True):
            self._save(kept, m, extra)
        return metrics

    @property
    def _input_shape(self) -> tuple[int, ...]:
        """One sample's shape, for MACs and latency (a token model's: one block of T ids)."""
        return _input_shape(self.data)

    @property
    def _vocab_size(self) -> int | None:
        """The range of a token model's input ids (a language model's vocabulary is its classes)."""
        return _vocab_size(self.data)

    def _time(self, metrics: list[ModelMetrics], *, throughput: bool) -> None:
        """Latency of every kept model (`metrics`, in the order kept) in one interleaved measurement, so one
        burst of load cannot make one of them look slow (`distil.measure.time_models`); a model with its
        own tokenizer (`Kept.data`) on a block of its own tokens (its test rows' width: the same text as a
        block of the run's). A run that compresses times its PyTorch rows with the thread count of its ONNX
        rows (`compress.latency_threads`), so one report's latencies compare."""
        if self.measure_latency and metrics:
            compress = self.recipe.compress
            threads = compress.latency_threads if compress is not None else None
            time_models(
                metrics,
                [k.model for k in self.kept],
                self._input_shape,
                throughput=throughput,
                threads=threads,
                vocab_size=self._vocab_size,
                per_model=[_timed_input(k.data or self.data) for k in self.kept],
            )

    def _generation(self, metrics: list[ModelMetrics]) -> None:
        """Language models: greedy samples and decoding latency per token (`distil.run.lm_report`)."""
        from distil.data.verifiable import verifiable_task
        from distil.run.lm_report import lm_section

        # A model with its own tokenizer would read the run's prompt ids: it does not generate here.
        own = [k for k in self.kept if k.data is None]
        self.generation = lm_section(
            [(k.name, k.model) for k in own],
            self.data.test,
            self.data.extra,
            latency=self.measure_latency,
            trust_code=self.recipe.trust_code,
            task=verifiable_task(self.data),
            first_is_reference=bool(own) and own[0] is self.kept[0],
        )
        for m in metrics:
            timed = self.generation["latency"].get(m.name)
            if timed is not None:
                m.extra["generate_ms_per_token"] = timed["ms_per_token"]
            # Checkable answers: exact match, and the answers' bits per byte beside the test split's.
            checked = self.generation.get("checked", {}).get(m.name, {})
            m.extra.update({CHECKED_EXTRA.get(k, k): v for k, v in checked.items()})

    def _save(self, kept: Kept, m: ModelMetrics, details: dict[str, Any]) -> None:
        """The checkpoint of a measured model: weights, and a sidecar that carries its own final numbers
        (written once; the row's size is the weights file's)."""
        data = kept.data or self.data
        meta = _meta(self.recipe, data, kept.trained_with, self.histories.get(kept.name, []), kept.name)
        tokenizer = self._tokenizer if kept.data is None else tokenizer_of_data(data, self.recipe)

        def sidecar(weights: Path) -> dict[str, Any]:
            m.bytes = weights_bytes(weights)
            return {**meta, "test_metrics": m.to_dict(), **details}

        save_checkpoint(self.dir.file(kept.name), kept.model, kept.spec, sidecar, tokenizer=tokenizer)

    @functools.cached_property
    def _token_bytes(self) -> torch.Tensor | None:
        """A language model's bytes per token id, for bits per byte in every row (None: not measurable)."""
        return _token_bytes(self.data, self.recipe, self._tokenizer)

    @functools.cached_property
    def _tokenizer(self) -> Any:
        """The data's tokenizer (None: data that is not text): its special ids go into NAME-hf/'s
        config beside an HF model, and a Hugging Face one's files too."""
        return tokenizer_of_data(self.data, self.recipe)

    # --------------------------------------------------------------------------------- summary

    def _write_summary(self) -> dict[str, dict[str, float | None]]:
        run, metrics = self.dir, self.metrics
        ratios = {m.name: compare(metrics[0], m) for m in metrics[1:]}
        summary = {
            "recipe": self.recipe.name,
            "data": self.data.describe(),
            "metrics": [m.to_dict() for m in metrics],
            "ratios": ratios,
        }
        throughput = _training_throughput(self.histories)
        if throughput:
            summary["training"] = throughput
        if self.generation:
            summary["generation"] = self.generation
        atomic_write_json(run.file("summary.json"), summary)
        # Imported here: matplotlib is slow to import and only needed once a run has finished.
        from distil.report.writer import write_report

        write_report(run.path, name=run.final.name)  # report.md, report.html and plots/*.png
        return ratios

    def _write_transfer(self) -> None:
        """transfer_report.json, plus a "Knowledge transfer" section at the end of report.md."""
        prepared, run = self.transfer, self.dir
        if prepared is None or not prepared.active:
            return
        atomic_write_json(run.file("transfer_report.json"), prepared.report.to_dict())
        report = run.file("report.md")
        before = report.read_text(encoding="utf-8") if report.is_file() else ""
        run.write_text("report.md", f"{before.rstrip()}\n\n{prepared.report.to_markdown()}\n")


def _input_shape(data: DataBundle) -> tuple[int, ...]:
    """One sample's shape, for MACs and latency (a token model's: one block of T ids)."""
    return tuple(data.test.sample_shape) if data.is_tokens else data.input_shape


def _timed_input(data: DataBundle) -> tuple[tuple[int, ...], int | None]:
    """(one sample's shape, the range of its random ids) a model reading `data` is timed on; a teacher's
    own view of the text names its tokenizer's vocabulary in `extra` (its ids, not the run's)."""
    own = data.extra.get("vocab_size") if data.extra.get("retokenized_from") is not None else None
    return _input_shape(data), int(own) if own is not None else _vocab_size(data)


def _vocab_size(data: DataBundle) -> int | None:
    """The range of a token model's input ids (a language model's vocabulary is its classes)."""
    return data.num_classes if data.is_tokens else data.vocab_size


def tokenizer_of_data(data: DataBundle, recipe: Recipe) -> Any:
    """The tokenizer `data` names (None: data that is not text, or one that cannot be rebuilt)."""
    from distil.run.lm_report import tokenizer_of

    return tokenizer_of(data.extra, trust_code=recipe.trust_code)


def _token_bytes(data: DataBundle, recipe: Recipe, tokenizer: Any = None) -> torch.Tensor | None:
    """A language model's bytes per token id of `data`'s tokenizer, for bits per byte (None: not
    measurable)."""
    from distil.run.lm_report import lm_token_bytes

    return lm_token_bytes(data.task, tokenizer if tokenizer is not None else tokenizer_of_data(data, recipe))


def _training_throughput(histories: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per trained stage: mean samples/s and (token data) tokens/s over its epochs."""
    out: dict[str, dict[str, float]] = {}
    for stage, history in histories.items():
        entry: dict[str, float] = {}
        for key in ("samples_per_s", "tokens_per_s"):
            values = [float(r[key]) for r in history if key in r]
            if values:
                entry[key] = round(sum(values) / len(values), 1)
        if entry:
            out[stage] = entry
    return out


def teacher_train_record(recipe: Recipe) -> Any:
    """The teacher's training recipe as far as it is known: this run's, or its checkpoint's sidecar's.

    A teacher loaded from a distil checkpoint keeps the recipe (and the KD settings, for a distilled
    teacher) its sidecar records; a plain state_dict's are unknown (None).
    """
    path = recipe.teacher.checkpoint
    if path is None:
        return recipe.teacher_train
    from distil.train.checkpoint import checkpoint_paths, read_sidecar

    if not checkpoint_paths(path)[1].is_file():
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
        # The KD settings the student was distilled with (a transferred student's own temperature).
        "kd": recipe.student_kd.model_dump(mode="json") if role == KD_ROLE else None,
        "data": data.describe(),
        "metrics": history[-1] if history else {},
    }


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
