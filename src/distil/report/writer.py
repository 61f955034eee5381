"""Write a run's report: PNG figures under plots/, report.md (linking them) and report.html (embedding them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distil.fileio import atomic_write_text
from distil.report.html import run_html
from distil.report.markdown import run_markdown
from distil.report.plots import Point, plot_pareto, plot_per_class, plot_training_curves
from distil.report.rundata import RunData, load_run
from distil.report.synthetic import copy_synthetic_grids


@dataclass
class ReportFiles:
    """The files a report wrote."""

    markdown: Path
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)


def size_points(run: RunData, group: str | None = None) -> list[Point]:
    """Every model of a run as (weights bytes, accuracy) points."""
    return [Point(m.name, group or run.name, float(m.bytes), m.accuracy) for m in run.metrics]


def latency_points(run: RunData, group: str | None = None) -> list[Point]:
    """Every model with a measured latency as (batch-1 latency ms, accuracy) points, with its spread and
    whether it is reliable."""
    return [
        Point(m.name, group or run.name, m.latency_b1_ms, m.accuracy, m.latency_reliable, m.latency_b1_spread)
        for m in run.metrics
        if m.latency_b1_ms is not None
    ]


def write_figures(run: RunData, plots_dir: Path) -> dict[str, Path]:
    """Draw the run's figures into `plots_dir`; a figure without data (no latency measured) is skipped."""
    figures: dict[str, Path] = {}
    if run.records:
        figures["training_curves"] = plot_training_curves(run.records, plots_dir / "training_curves.png")
    figures["accuracy_vs_size"] = plot_pareto(
        size_points(run),
        plots_dir / "accuracy_vs_size.png",
        xlabel="weights size (bytes)",
        title="accuracy vs size",
    )
    latency = latency_points(run)
    if latency:
        figures["accuracy_vs_latency"] = plot_pareto(
            latency,
            plots_dir / "accuracy_vs_latency.png",
            xlabel="latency at batch 1 (ms)",
            title="accuracy vs latency",
        )
    if run.per_class:
        figures["per_class_accuracy"] = plot_per_class(
            run.class_names, run.per_class, plots_dir / "per_class_accuracy.png"
        )
    return figures


def write_report(
    run_dir: str | Path, out_dir: str | Path | None = None, *, name: str | None = None
) -> ReportFiles:
    """Write report.md, report.html and the figures of a run.

    A run whose students trained on a `distil synthesize` set also gets its grids, one per class, under
    plots/synthetic/ and a "Synthetic transfer set" section (`distil.report.synthetic`).

    Args:
        run_dir: a finished run directory.
        out_dir: where to write (default: the run directory itself); figures go to `out_dir/plots/`.
        name: the run's name in the report (default: the directory name).

    Returns:
        The paths written.

    Raises:
        ConfigError: `run_dir` is not a finished run directory.
    """
    run = load_run(run_dir, name)
    out = Path(out_dir) if out_dir is not None else run.path
    figures = write_figures(run, out / "plots")
    synthetic = copy_synthetic_grids(run, out / "plots")  # a `distil synthesize` set's grids, if any
    relative = {stem: path.relative_to(out).as_posix() for stem, path in figures.items()}
    md = out / "report.md"
    html = out / "report.html"
    atomic_write_text(md, run_markdown(run, relative, synthetic.relative_to(out) if synthetic else None))
    atomic_write_text(html, run_html(run, figures, synthetic))
    return ReportFiles(markdown=md, html=html, figures=figures)
