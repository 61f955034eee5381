"""Several runs side by side: one table of every model of every run, and Pareto charts across runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from distil.errors import ConfigError
from distil.fileio import atomic_write_text
from distil.measure import compare
from distil.report.html import image_html, page_html, table_html
from distil.report.plots import plot_pareto
from distil.report.rundata import RunData, load_run
from distil.report.tables import compression_cell, human, latency_cell
from distil.report.writer import latency_points, size_points

COMPARE_COLUMNS = (
    "run",
    "model",
    "dataset",
    "accuracy",
    "Δ vs teacher",
    "params",
    "size",
    "MACs/sample",
    "latency b1",
    "compression",
)


def compare_rows(runs: Sequence[RunData]) -> list[list[str]]:
    """One row per model of every run; ratios are against each run's own reference (teacher)."""
    rows = []
    for run in runs:
        for m in run.metrics:
            is_ref = m is run.reference
            r = compare(run.reference, m)
            rows.append(
                [
                    run.name,
                    m.name,
                    str(run.data.get("name", "?")),
                    f"{m.accuracy:.2%}",
                    "" if is_ref else f"{r['accuracy_change']:+.2f} pt",
                    human(m.params),
                    human(m.bytes, "B"),
                    human(m.macs),
                    latency_cell(m),
                    "1x" if is_ref else compression_cell(r),
                ]
            )
    return rows


def compare_table(runs: Sequence[RunData]) -> Table:
    """The comparison as a Rich table that fits an 80-column terminal.

    Runs are numbered (the caption names them); MACs and the dataset are left to compare.md/.html.
    """
    caption = "\n".join(f"run {i}: {run.name} ({run.data.get('name', '?')})" for i, run in enumerate(runs, 1))
    table = Table(title=f"{len(runs)} runs side by side", caption=caption, box=None, pad_edge=False)
    for header in ("run", "model", "accuracy", "Δ acc", "params", "size", "latency b1", "compr."):
        table.add_column(header, justify="left" if header in ("run", "model") else "right", no_wrap=True)
    index = {run.name: i for i, run in enumerate(runs, 1)}
    for row in compare_rows(runs):
        run_name, model, _, acc, delta, params, size, _, latency, compression = row
        table.add_row(str(index[run_name]), model, acc, delta, params, size, latency, compression)
    return table


@dataclass
class ComparisonFiles:
    """The files a comparison wrote."""

    markdown: Path
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)


def write_comparison(
    run_dirs: Sequence[str | Path], out_dir: str | Path
) -> tuple[list[RunData], ComparisonFiles]:
    """Compare runs: write compare.md, compare.html and cross-run Pareto charts into `out_dir`.

    Args:
        run_dirs: finished run directories (at least one).
        out_dir: the directory to write into (created if needed).

    Returns:
        (the runs read, the files written).

    Raises:
        ConfigError: no run given, or one path is not a finished run directory.
    """
    if not run_dirs:
        raise ConfigError("compare needs at least one run directory, e.g. distil compare runs/a runs/b")
    runs = [load_run(p) for p in run_dirs]
    out = Path(out_dir)
    figures: dict[str, Path] = {
        "accuracy_vs_size": plot_pareto(
            [p for run in runs for p in size_points(run)],
            out / "plots" / "compare_accuracy_vs_size.png",
            xlabel="weights size (bytes)",
            title="accuracy vs size, all runs",
        )
    }
    latency = [p for run in runs for p in latency_points(run)]
    if latency:
        figures["accuracy_vs_latency"] = plot_pareto(
            latency,
            out / "plots" / "compare_accuracy_vs_latency.png",
            xlabel="latency at batch 1 (ms)",
            title="accuracy vs latency, all runs",
        )
    captions = {
        "accuracy_vs_size": "Accuracy vs weights size, every model of every run",
        "accuracy_vs_latency": "Accuracy vs latency at batch size 1, every model of every run",
    }
    rows = compare_rows(runs)
    datasets = sorted({str(r.data.get("name", "?")) for r in runs})
    note = (
        "Runs on different datasets are not comparable by accuracy."
        if len(datasets) > 1
        else f"All runs on {datasets[0]}; ratios are against each run's own teacher."
    )
    md = [f"# {len(runs)} runs side by side", "", note, ""]
    md += ["| " + " | ".join(COMPARE_COLUMNS) + " |", "|" + "---|" * len(COMPARE_COLUMNS)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    md.append("")
    for stem, path in figures.items():
        md += [f"## {captions[stem]}", "", f"![{captions[stem]}]({path.relative_to(out).as_posix()})", ""]
    md += ["## Runs", ""] + [f"- `{run.name}`: `{run.path}`" for run in runs]
    sections = [("Models of every run", table_html(COMPARE_COLUMNS, rows, "compare"))]
    sections += [
        (captions[stem], image_html(path.read_bytes(), captions[stem])) for stem, path in figures.items()
    ]
    markdown_path, html_path = out / "compare.md", out / "compare.html"
    atomic_write_text(markdown_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, page_html(f"{len(runs)} runs side by side", sections, note))
    return runs, ComparisonFiles(markdown=markdown_path, html=html_path, figures=figures)
