"""Read a finished run directory back into plain data that reports, plots and comparisons use.

A run directory holds summary.json (final test metrics of every model, in stage order, the first being
the reference teacher), metrics.jsonl (one record per epoch), recipe.yaml (the resolved recipe) and one
checkpoint sidecar NAME.json per model (with per-class test accuracy when the pipeline measured it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.data.npz import test_split_title
from distil.errors import ConfigError
from distil.measure import ModelMetrics

_METRIC_FIELDS = {f.name for f in dataclasses.fields(ModelMetrics)}


@dataclass
class RunData:
    """Everything a report shows about one run.

    Attributes:
        path: the run directory.
        name: its directory name (unique per run, e.g. "digits-demo-20261127-183000").
        recipe_name: the recipe's `name`.
        data: the dataset description (name, sizes, class names, ...).
        metrics: final test metrics per model; `metrics[0]` is the reference (the teacher).
        records: per-epoch training records, each with a "stage".
        per_class: model name -> test accuracy per class (models without it are absent).
        recipe_yaml: the fully resolved recipe, as saved in the run directory ("" if missing).
        training: stage -> mean training throughput (``samples_per_s``, ``tokens_per_s``), if recorded.
        generation: language models: the prompts, greedy samples and decode latency per model
            (``distil.run.lm_report.lm_section``); empty otherwise.
    """

    path: Path
    name: str
    recipe_name: str
    data: dict[str, Any]
    metrics: list[ModelMetrics]
    records: list[dict[str, Any]] = field(default_factory=list)
    per_class: dict[str, list[float]] = field(default_factory=dict)
    recipe_yaml: str = ""
    training: dict[str, dict[str, float]] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        names = self.data.get("class_names")
        if names:
            return [str(n) for n in names]
        k = int(self.data.get("num_classes", 0))
        return [str(i) for i in range(k)]

    @property
    def reference(self) -> ModelMetrics:
        return self.metrics[0]

    @property
    def test_title(self) -> str:
        """What the test metrics measure: "NAME test set", or what a synthetic set's carved split measures
        (agreement with the teacher, `distil.data.npz`)."""
        extra = self.data.get("extra")
        return test_split_title(str(self.data.get("name", "?")), extra if isinstance(extra, dict) else {})


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what} {str(path)!r} is not valid JSON ({exc}); was the run interrupted?"
        ) from None


def load_run(run_dir: str | Path, name: str | None = None) -> RunData:
    """Read a run directory written by `distil run`, `demo`, `train` or `distill`.

    Args:
        run_dir: the run directory (the one holding summary.json).
        name: the run's name in reports (default: the directory name).

    Returns:
        The run's data.

    Raises:
        ConfigError: the path is not a finished run directory (no summary.json), or a file is corrupt.
    """
    path = Path(run_dir)
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        hint = ""
        if path.is_dir():
            runs = sorted(p.name for p in path.iterdir() if (p / "summary.json").is_file())
            if runs:
                hint = f" It contains run directories: {', '.join(runs[:5])}; pass one of them."
        elif not path.exists():
            hint = " It does not exist."
        raise ConfigError(
            f"{str(path)!r} is not a finished run directory (no summary.json).{hint} "
            "Run directories are made by `distil run`, `distil demo`, `distil train` and `distil distill`."
        )
    summary = _read_json(summary_path, "summary")
    metrics = [
        ModelMetrics(**{k: v for k, v in m.items() if k in _METRIC_FIELDS})
        for m in summary.get("metrics", [])
    ]
    if not metrics:
        raise ConfigError(f"{str(summary_path)!r} lists no models; the run did not finish measuring")
    records: list[dict[str, Any]] = []
    jsonl = path / "metrics.jsonl"
    if jsonl.is_file():
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: the others are still good
    per_class: dict[str, list[float]] = {}
    for m in metrics:
        # Model names come from summary.json: only a plain file name is looked up, inside the run directory.
        if not isinstance(m.name, str) or Path(m.name).name != m.name or m.name.startswith("."):
            continue
        sidecar = path / f"{m.name}.json"
        if sidecar.is_file():
            values = _read_json(sidecar, "checkpoint sidecar").get("per_class_accuracy")
            if values:
                per_class[m.name] = [float("nan") if v is None else float(v) for v in values]
    recipe_file = path / "recipe.yaml"
    return RunData(
        path=path,
        name=name or path.resolve().name,
        recipe_name=str(summary.get("recipe", path.name)),
        data=dict(summary.get("data", {})),
        metrics=metrics,
        records=records,
        per_class=per_class,
        recipe_yaml=recipe_file.read_text(encoding="utf-8") if recipe_file.is_file() else "",
        training=dict(summary.get("training", {})),
        generation=dict(summary.get("generation", {})),
    )
