"""Several runs side by side: one table of every model of every run, and Pareto charts across runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from distil.errors import ConfigError
from distil.fileio import atomic_write_text
from distil.measure import ModelMetrics, compare
from distil.report.html import image_html, page_html, table_html
from distil.report.plots import plot_pareto
from distil.report.rundata import RunData, load_run
from distil.report.tables import _opt, _per_byte, compression_cell, human, latency_cell, quality_change_cell
from distil.report.writer import latency_points, size_points

COMPARE_COLUMNS = (
    "run",
    "model",
    "dataset",
    "accuracy",
    "Δ vs teacher",
    "bits/byte",
    "byte ppl",
    "params",
    "size",
    "MACs/sample",
    "latency b1",
    "compression",
)


def _delta(m: ModelMetrics, reference: ModelMetrics, accuracy_change: float | None) -> str:
    """A model against its run's reference: in bits per byte when both have it (language models: it does
    not depend on the tokenizer), else in accuracy points; "—" when neither compares (next-token accuracy
    of two tokenizers counts different tokens)."""
    bpb, ref_bpb = _per_byte(m)[0], _per_byte(reference)[0]
    if bpb is not None and ref_bpb is not None:
        return f"{bpb - ref_bpb:+.3f} bits/B"
    return quality_change_cell(accuracy_change, [m])


def compare_rows(runs: Sequence[RunData]) -> list[list[str]]:
    """One row per model of every run; ratios are against each run's own reference (teacher).

    Language models with bits per byte are compared by it (``Δ vs teacher`` in bits per byte, lower is
    better), other models by accuracy; ``bits/byte`` and ``byte ppl`` are "—" where a model has none.
    """
    rows = []
    for run in runs:
        for m in run.metrics:
            is_ref = m is run.reference
            r = compare(run.reference, m)
            bpb = _per_byte(m)[0]
            rows.append(
                [
                    run.name,
                    m.name,
                    str(run.data.get("name", "?")),
                    f"{m.accuracy:.2%}",
                    "" if is_ref else _delta(m, run.reference, r["accuracy_change"]),
                    _opt(bpb, ".3f"),
                    _opt(m.extra.get("byte_perplexity") if bpb is not None else None, ".3f"),
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
    rows = compare_rows(runs)
    per_byte = any(row[5] != "—" for row in rows)  # language models with bits per byte: show it
    headers = ["run", "model", "accuracy", "Δ", "params", "size", "latency b1", "compr."]
    if per_byte:
        headers.insert(3, "bits/B")
    for header in headers:
        table.add_column(header, justify="left" if header in ("run", "model") else "right", no_wrap=True)
    index = {run.name: i for i, run in enumerate(runs, 1)}
    for row in rows:
        run_name, model, _, acc, delta, bpb, _, params, size, _, latency, compression = row
        cells = [str(index[run_name]), model, acc, delta, params, size, latency, compression]
        if per_byte:
            cells.insert(3, bpb)
        table.add_row(*cells)
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
