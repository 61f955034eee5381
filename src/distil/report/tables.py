"""Teacher and students side by side: the same rows as a Rich table (terminal) and Markdown (files)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from distil.measure import MAX_LATENCY_SPREAD, ModelMetrics, compare, latency_conflicts
from distil.measure.tasks import LM_TASK, TASKS

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


# Language models (task "language-modeling"): perplexity is the quality column, with bits per byte and
# per-byte perplexity beside it (they do not depend on the tokenizer, so students with other vocabularies
# compare); costs are per block of T tokens, and generation latency per token (KV cache) is the speed that
# matters.
LM_COLUMNS = (
    "model",
    "perplexity",
    "bits/byte",
    "byte ppl",
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
# Data with checkable answers (distil.measure.generation) adds these after the per-byte columns.
CHECKED_COLUMNS = ("exact match", "answer agreement", "answer bits/byte")
# The checked answers' metrics as a row's extra keys: their bits per byte (of the gold answers given
# their prompts) is not the test split's ``bits_per_byte``.
CHECKED_EXTRA = {"bits_per_byte": "answer_bits_per_byte"}


def is_lm(metrics: Sequence[ModelMetrics]) -> bool:
    """Whether the rows are language models (their table has `LM_COLUMNS`)."""
    return bool(metrics) and all(m.task == LM_TASK for m in metrics)


def task_quality(metrics: Sequence[ModelMetrics]) -> tuple[str, tuple[str, ...]]:
    """(the name of the quality column, the task's other metrics shown beside agreement) of these rows.

    Rows of one registered task other than classification are named by it: its main metric (`Task.main`,
    e.g. multilabel's mAP, which ``ModelMetrics.accuracy`` holds) and its other scalar metrics (e.g.
    micro_f1, macro_f1); classification, or rows of mixed tasks, keep "accuracy" and nothing beside it.
    """
    tasks = {m.task for m in metrics}
    if len(tasks) != 1 or (name := tasks.pop()) not in TASKS.names():
        return "accuracy", ()
    task = TASKS.get(name)
    others = tuple(n for n in task.metrics if n not in ("accuracy", "agreement", task.main))
    return task.main, others


def _formats(metrics: Sequence[ModelMetrics]) -> dict[str, str]:
    """The format specs of the rows' task (`Task.formats`); none for mixed or unknown tasks."""
    tasks = {m.task for m in metrics}
    if len(tasks) != 1 or (name := tasks.pop()) not in TASKS.names():
        return {}
    return TASKS.get(name).formats


def quality_change_cell(change_pt: float | None, metrics: Sequence[ModelMetrics]) -> str:
    """The change of the task's main metric (`compare`'s ``accuracy_change``, x100): in points where the
    metric is a share (accuracy, mAP, mIoU), else as a plain difference in the metric's own format (a
    regression's R^2 going from 0.90 to 0.56 is -0.340, not "-34.00 pt"); "—" when none compares."""
    if change_pt is None:
        return "—"
    spec = _formats(metrics).get("accuracy", ".2%")
    if spec.endswith("%"):
        return f"{change_pt:+.2f} pt"
    return format(change_pt / 100, "+" + spec.lstrip("+"))


def columns_for(metrics: Sequence[ModelMetrics]) -> tuple[str, ...]:
    """The table's columns for these models: `COLUMNS` (the quality column and Δ named by the task, its
    other metrics after agreement: `task_quality`), or `LM_COLUMNS` for language models."""
    if not is_lm(metrics):
        main, others = task_quality(metrics)
        return (
            "model",
            main,
            "agreement",
            *others,
            *COLUMNS[3:-1],
            f"Δ {main}",
        )
    if not _checked(metrics):
        return LM_COLUMNS
    return (*LM_COLUMNS[:4], *CHECKED_COLUMNS, *LM_COLUMNS[4:])


def _checked(metrics: Sequence[ModelMetrics]) -> bool:
    """Whether some row has generation metrics of checkable answers (exact match)."""
    return any("exact_match" in m.extra for m in metrics)


def human(n: float, unit: str = "") -> str:
    """A count with a k/M/G suffix, e.g. human(1234567, "B") == "1.23MB"."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _opt(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


# Appended to a latency (and a speed-up derived from it) that is not to be trusted; `latency_notes` says why.
NOISY = "(noisy)"


def latency_cell(m: ModelMetrics) -> str:
    """The batch-1 latency, e.g. "0.606 ms ±3%" (± half its p10-p90 range across timing rounds), with
    `NOISY` appended when it is unreliable; "—" when not measured."""
    if m.latency_b1_ms is None:
        return "—"
    text = f"{m.latency_b1_ms:.3f} ms"
    if m.latency_b1_spread is not None:
        half = 50 * m.latency_b1_spread
        text += f" ±{half:.0f}%" if half >= 1 else " ±<1%"
    return text if m.latency_reliable else f"{text} {NOISY}"


def speedup_cell(reference: ModelMetrics, m: ModelMetrics, speedup: float | None) -> str:
    """The batch-1 speed-up over `reference`, marked `NOISY` when either latency is unreliable."""
    if speedup is None:
        return "—"
    noisy = not (reference.latency_reliable and m.latency_reliable)
    return f"{speedup:.2f}x" + (f" {NOISY}" if noisy else "")


def latency_notes(metrics: Sequence[ModelMetrics]) -> list[str]:
    """Why latencies are marked `NOISY`, one sentence each (none when every figure is reliable).

    Args:
        metrics: The rows of one run (or report).

    Returns:
        Identical architectures that measured differently, then models whose rounds varied too much, then
        what to do about it.
    """
    notes = [
        f"{a.name} and {b.name} have the same architecture (parameters, MACs and size) but measured "
        f"{a.latency_b1_ms:.3f} vs {b.latency_b1_ms:.3f} ms: the machine was busy while they were timed."
        for a, b in latency_conflicts(metrics)
    ]
    notes += [
        f"{m.name}: its latency varied by {100 * m.latency_b1_spread:.0f}% of its median across timing rounds "
        f"(p10 to p90; reliable up to {100 * MAX_LATENCY_SPREAD:.0f}%)."
        for m in metrics
        if m.latency_b1_spread is not None and m.latency_b1_spread > MAX_LATENCY_SPREAD
    ]
    if notes or any(not m.latency_reliable for m in metrics):
        notes.append(
            f"Latencies and speed-ups marked {NOISY} are unreliable: rerun on an idle machine (fewer parallel "
            "jobs) to measure them."
        )
    return notes


def tokenizer_notes(metrics: Sequence[ModelMetrics]) -> list[str]:
    """What a row measured on its own tokenization of the test text compares with, one sentence each."""
    return [
        f"{m.name} reads the text with its own tokenizer ({m.tokenizer}): it is measured on its own "
        "tokenization of the same test text. Bits per byte and byte perplexity compare with the other rows; "
        "its perplexity and next-token accuracy are per its own tokens (not comparable, no ratio); its latency "
        "per block is timed on a block of its own tokens (the same text as the others' block); agreement and "
        "generation are not measured for it (they would feed it the data's token ids)."
        for m in metrics
        if m.tokenizer is not None
    ]


def compression_cell(ratios: dict[str, float | None]) -> str:
    """The stored-size ratio, e.g. "3.4x"; "3.4x (params 1.0x)" when the parameter ratio differs."""
    text = _opt(ratios["compression"], ".1f") + "x"
    params = ratios.get("params_ratio")
    if ratios.get("bytes_ratio") is not None and params is not None and f"{params:.1f}" != text[:-1]:
        text += f" (params {params:.1f}x)"
    return text


def _per_byte(m: ModelMetrics) -> tuple[float | None, float | None]:
    """(the test split's bits per byte, the checked answers' bits per byte) of a row.

    A run written before the split's figure existed stored the answers' under ``bits_per_byte``: it is
    shown as the answers' then, not as the split's.
    """
    extra = m.extra
    if "exact_match" in extra and "answer_bits_per_byte" not in extra:
        return None, extra.get("bits_per_byte")
    return extra.get("bits_per_byte"), extra.get("answer_bits_per_byte")


def _perplexity_ratio(m: ModelMetrics, reference: ModelMetrics, is_ref: bool) -> str:
    """`m`'s perplexity over the reference's; "—" when they count different tokens (another tokenizer)."""
    ppl, ref_ppl = m.extra.get("perplexity"), reference.extra.get("perplexity")
    if is_ref or ppl is None or not ref_ppl:
        return "1x"
    return "—" if m.tokenizer != reference.tokenizer else f"{ppl / ref_ppl:.3f}x"


def _lm_rows(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> list[list[str]]:
    rows = []
    checked = _checked(metrics)
    for m in metrics:
        r = compare(reference, m)
        is_ref = m is reference
        ppl = m.extra.get("perplexity")
        gen = m.extra.get("generate_ms_per_token")
        split_bpb, answer_bpb = _per_byte(m)
        answers = (
            [
                _opt(m.extra.get("exact_match"), ".2%"),
                _opt(m.extra.get("answer_agreement"), ".2%"),
                _opt(answer_bpb, ".3f"),
            ]
            if checked
            else []
        )
        rows.append(
            [
                m.name,
                _opt(ppl, ".3f"),
                _opt(split_bpb, ".3f"),
                _opt(m.extra.get("byte_perplexity") if split_bpb is not None else None, ".3f"),
                *answers,
                f"{m.accuracy:.2%}",
                _opt(m.agreement, ".2%"),
                human(m.params),
                human(m.bytes, "B"),
                human(m.macs),
                latency_cell(m),
                _opt(gen, ".3f"),
                "1x" if is_ref else compression_cell(r),
                _perplexity_ratio(m, reference, is_ref),
            ]
        )
    return rows


def metric_rows(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> list[list[str]]:
    """One row of formatted cells per model (the cells of `columns_for(metrics)`); ratios are against
    `reference` (the teacher)."""
    if is_lm(metrics):
        return _lm_rows(metrics, reference)
    others = task_quality(metrics)[1]
    fmt = _formats(metrics)
    rows = []
    for m in metrics:
        r = compare(reference, m)
        is_ref = m is reference
        rows.append(
            [
                m.name,
                format(m.accuracy, fmt.get("accuracy", ".2%")),
                _opt(m.agreement, fmt.get("agreement", ".2%")),
                *(_opt(m.extra.get(name), fmt.get(name, ".2%")) for name in others),
                human(m.params),
                human(m.bytes, "B"),
                human(m.macs),
                latency_cell(m),
                _opt(m.throughput_b256, ",.0f") + ("/s" if m.throughput_b256 is not None else ""),
                "1x" if is_ref else compression_cell(r),
                "1x" if is_ref else speedup_cell(reference, m, r["speedup_b1"]),
                "" if is_ref else quality_change_cell(r["accuracy_change"], metrics),
            ]
        )
    return rows


def metrics_table(metrics: Sequence[ModelMetrics], reference: ModelMetrics, title: str = "") -> Table:
    """A Rich table with one column per model (so it fits an 80-column terminal), ratios vs `reference`;
    its caption says which latencies are unreliable and why."""
    notes = tokenizer_notes(metrics) + latency_notes(metrics)
    table = Table(title=title or None, caption="\n".join(notes) or None, caption_justify="left")
    table.add_column("metric")
    for m in metrics:
        table.add_column(m.name, justify="right")
    rows = metric_rows(metrics, reference)
    for i, label in enumerate(columns_for(metrics)[1:], start=1):
        table.add_row(label, *(row[i] for row in rows))
    return table


def metrics_markdown(metrics: Sequence[ModelMetrics], reference: ModelMetrics) -> str:
    """The same table as GitHub-flavoured Markdown, followed by the notes on unreliable latencies."""
    columns = columns_for(metrics)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in metric_rows(metrics, reference)]
    notes = tokenizer_notes(metrics) + latency_notes(metrics)
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"
