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


# Language models (task "language-modeling"): perplexity is the quality column, costs are per block of T
# tokens, and generation latency per token (KV cache) is the speed that matters.
LM_COLUMNS = (
    "model",
    "perplexity",
    "next-token acc",
    "agreement",
    "params",
    "size",
    "MACs/block",
    "latency/block b1",
    "generate ms/token",
    "compression",
    "perplexity ratio",
)
LM_TASK = "language-modeling"


def is_lm(metrics: Sequence[ModelMetrics]) -> bool:
    """Whether the rows are language models (their table has `LM_COLUMNS`)."""
    return bool(metrics) and all(m.task == LM_TASK for m in metrics)


def columns_for(metrics: Sequence[ModelMetrics]) -> tuple[str, ...]:
    """The table's columns for these models: `COLUMNS`, or `LM_COLUMNS` for language models."""
    return LM_COLUMNS if is_lm(metrics) else COLUMNS


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


def _lm_rows(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> list[list[str]]:
    rows = []
    ref_ppl = reference.extra.get("perplexity")
    for m in metrics:
        r = compare(reference, m)
        is_ref = m is reference
        ppl = m.extra.get("perplexity")
        gen = m.extra.get("generate_ms_per_token")
        rows.append(
            [
                m.name,
                _opt(ppl, ".3f"),
                f"{m.accuracy:.2%}",
                _opt(m.agreement, ".2%"),
                human(m.params),
                human(m.bytes, "B"),
                human(m.macs),
                _opt(m.latency_b1_ms, ".3f") + (" ms" if m.latency_b1_ms is not None else ""),
                _opt(gen, ".3f"),
                "1x" if is_ref else compression_cell(r),
                "1x" if is_ref or ppl is None or not ref_ppl else f"{ppl / ref_ppl:.3f}x",
            ]
        )
    return rows


def metric_rows(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> list[list[str]]:
    """One row of formatted cells per model (the cells of `columns_for(metrics)`); ratios are against
    `reference` (the teacher)."""
    if is_lm(metrics):
        return _lm_rows(metrics, reference)
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
    for i, label in enumerate(columns_for(metrics)[1:], start=1):
        table.add_row(label, *(row[i] for row in rows))
    return table


def metrics_markdown(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> str:
    """The same table as GitHub-flavoured Markdown."""
    columns = columns_for(metrics)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in metric_rows(metrics, reference)]
    return "\n".join(lines) + "\n"
