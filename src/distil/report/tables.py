"""Teacher and students side by side: the same rows as a Rich table (terminal) and Markdown (files)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from distil.measure import ModelMetrics, compare

COLUMNS = (
    "model",
    "accuracy",
    "agreement",
    "params",
    "size",
    "MACs/sample",
    "latency b1",
    "throughput b256",
    "compression",
    "speed-up b1",
    "Δ accuracy",
)


def human(n: float, unit: str = "") -> str:
    """A count with a k/M/G suffix, e.g. human(1234567, "B") == "1.23MB"."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _opt(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def compression_cell(ratios: dict[str, float | None]) -> str:
    """The stored-size ratio, e.g. "3.4x"; "3.4x (params 1.0x)" when the parameter ratio differs."""
    text = _opt(ratios["compression"], ".1f") + "x"
    params = ratios.get("params_ratio")
    if ratios.get("bytes_ratio") is not None and params is not None and f"{params:.1f}" != text[:-1]:
        text += f" (params {params:.1f}x)"
    return text


def metric_rows(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> list[list[str]]:
    """One row of formatted cells per model; ratios are against `reference` (the teacher)."""
    rows = []
    for m in metrics:
        r = compare(reference, m)
        is_ref = m is reference
        rows.append(
            [
                m.name,
                f"{m.accuracy:.2%}",
                _opt(m.agreement, ".2%"),
                human(m.params),
                human(m.bytes, "B"),
                human(m.macs),
                _opt(m.latency_b1_ms, ".3f") + (" ms" if m.latency_b1_ms is not None else ""),
                _opt(m.throughput_b256, ",.0f") + ("/s" if m.throughput_b256 is not None else ""),
                "1x" if is_ref else compression_cell(r),
                "1x" if is_ref else ("—" if r["speedup_b1"] is None else f"{r['speedup_b1']:.2f}x"),
                "" if is_ref else f"{r['accuracy_change']:+.2f} pt",
            ]
        )
    return rows


def metrics_table(metrics: Sequence[ModelMetrics], reference: ModelMetrics, title: str = "") -> Table:
    """A Rich table with one column per model (so it fits an 80-column terminal), ratios vs `reference`."""
    table = Table(title=title or None)
    table.add_column("metric")
    for m in metrics:
        table.add_column(m.name, justify="right")
    rows = metric_rows(metrics, reference)
    for i, label in enumerate(COLUMNS[1:], start=1):
        table.add_row(label, *(row[i] for row in rows))
    return table


def metrics_markdown(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> str:
    """The same table as GitHub-flavoured Markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in metric_rows(metrics, reference)]
    return "\n".join(lines) + "\n"
