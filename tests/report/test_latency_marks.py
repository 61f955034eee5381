"""Unreliable latencies are marked as such in the table, the notes, the plots and the HTML report; reliable
ones are not."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from distil.measure import ModelMetrics
from distil.report.plots import Point, draw_points
from distil.report.rundata import load_run
from distil.report.tables import NOISY, metric_rows, metrics_table
from distil.report.writer import latency_points, write_report
from tests.report.fake_run import BUSY, STEADY, make_run


def _cells(md: str, model: str) -> list[str]:
    row = next(line for line in md.splitlines() if line.startswith(f"| {model} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_an_unreliable_latency_is_marked_in_markdown_and_html(tmp_path: Path) -> None:
    files = write_report(make_run(tmp_path, timing=BUSY))
    md = files.markdown.read_text()
    # The latency, its spread (± half the p10-p90 range) and the mark; the speed-up derived from it too.
    assert _cells(md, "student_scratch")[6] == f"71.950 ms ±2% {NOISY}"
    assert _cells(md, "student_kd")[6] == f"0.606 ms ±45% {NOISY}"
    assert _cells(md, "student_scratch")[9] == f"0.03x {NOISY}"
    assert _cells(md, "teacher")[6] == "2.000 ms ±1%"  # a reliable figure carries no mark
    assert (
        "student_scratch and student_kd have the same architecture (parameters, MACs and size) but measured "
        "71.950 vs 0.606 ms: the machine was busy" in md
    )
    assert "student_kd: its latency varied by 90% of its median" in md
    assert "rerun on an idle machine" in md
    html = files.html.read_text()
    assert f"71.950 ms ±2% {NOISY}</td>" in html and f"0.03x {NOISY}</td>" in html
    assert '<ul class="note" id="latency-notes">' in html and "the machine was busy" in html
    # The latency plot draws what the table says: the two students' points as unreliable.
    points = {p.label: p for p in latency_points(load_run(files.markdown.parent))}
    assert [points[n].reliable for n in ("teacher", "student_scratch", "student_kd")] == [True, False, False]
    assert points["student_kd"].spread == 0.9


def test_reliable_latencies_carry_no_mark(tmp_path: Path) -> None:
    files = write_report(make_run(tmp_path, timing=STEADY))
    md, html = files.markdown.read_text(), files.html.read_text()
    assert _cells(md, "student_kd")[6] == "0.500 ms ±2%" and _cells(md, "student_kd")[9] == "4.00x"
    assert NOISY not in md and NOISY not in html
    assert "latency-notes" not in html and "machine was busy" not in md


def test_the_terminal_table_says_why_in_its_caption() -> None:
    def row(name: str, ms: float, spread: float, reliable: bool) -> ModelMetrics:
        return ModelMetrics(name, 0.9, None, params=10, bytes=40, macs=10, latency_b1_ms=ms,
                            latency_b1_spread=spread, latency_reliable=reliable)  # fmt: skip

    rows = [row("a", 71.95, 0.04, False), row("b", 0.606, 0.04, False)]
    assert "same architecture" in str(metrics_table(rows, rows[0]).caption)
    assert metric_rows(rows, rows[0])[1][9] == f"118.73x {NOISY}"  # a speed-up that is only noise
    steady = [row("a", 1.0, 0.04, True), row("b", 1.01, 0.04, True)]
    assert metrics_table(steady, steady[0]).caption is None


def test_unreliable_points_are_hollow_with_spread_bars() -> None:
    fig, ax = plt.subplots()
    try:
        draw_points(
            ax,
            [Point("kd", "run", 0.5, 0.8, True, 0.04), Point("scratch", "run", 72.0, 0.7, False, 0.04)],
            "tab:blue",
            "run",
        )
        filled, hollow = ax.collections[:2]
        assert filled.get_facecolor()[0][3] == 1.0  # opaque face
        assert len(hollow.get_facecolor()) == 0 or hollow.get_facecolor()[0][3] == 0.0  # no face: hollow
        assert len(ax.collections) == 3  # plus the error bars' line collection
        assert ax.get_legend_handles_labels()[1] == ["run"]  # one legend entry per run, not per kind
    finally:
        plt.close(fig)
