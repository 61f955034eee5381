"""The language-model table: bits per byte and per-byte perplexity beside perplexity, and a checked task's
answer figure kept apart from the test split's (also in run directories written before the split's)."""

from __future__ import annotations

from distil.measure import ModelMetrics
from distil.report.tables import columns_for, metric_rows


def _row(name: str, **extra: float | None) -> ModelMetrics:
    return ModelMetrics(name, 0.5, None, 10, 40, 100, task="language-modeling", extra=dict(extra))


def _cells(rows: list[ModelMetrics]) -> list[dict[str, str]]:
    columns = columns_for(rows)
    return [dict(zip(columns, r, strict=True)) for r in metric_rows(rows, rows[0])]


def test_every_lm_row_shows_bits_per_byte_and_byte_perplexity_beside_perplexity() -> None:
    rows = [
        _row("teacher", perplexity=3.0, bits_per_byte=1.25, byte_perplexity=2.378),
        _row("s", perplexity=4.0),
    ]
    first, second = _cells(rows)
    assert list(first)[:4] == ["model", "perplexity", "bits/byte", "byte ppl"]
    assert (first["bits/byte"], first["byte ppl"]) == ("1.250", "2.378")
    assert (second["bits/byte"], second["byte ppl"]) == ("—", "—")  # a tokenizer whose bytes are unknown


def test_a_checked_task_shows_the_answers_bits_per_byte_apart_from_the_splits() -> None:
    new = _row(
        "t",
        perplexity=2.0,
        exact_match=0.5,
        bits_per_byte=0.9,
        byte_perplexity=1.866,
        answer_bits_per_byte=0.4,
    )
    (cells,) = _cells([new])
    assert (cells["bits/byte"], cells["answer bits/byte"]) == ("0.900", "0.400")
    # A run written before: its bits_per_byte was the answers'; not shown as the split's.
    old = _row("t", perplexity=2.0, exact_match=0.5, bits_per_byte=0.4)
    (cells,) = _cells([old])
    assert (cells["bits/byte"], cells["answer bits/byte"]) == ("—", "0.400")
