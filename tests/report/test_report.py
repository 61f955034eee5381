"""report.md / report.html of a run and comparisons of runs, built from hand-written run directories."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from distil.errors import ConfigError
from distil.report.compare import compare_rows, write_comparison
from distil.report.rundata import load_run
from distil.report.writer import write_report
from tests.report.fake_run import CLASS_NAMES, make_run


def test_load_run_reads_every_file(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path))
    assert [m.name for m in run.metrics] == ["teacher", "student_scratch", "student_kd"]
    assert run.reference.name == "teacher"
    assert run.class_names == CLASS_NAMES
    assert len(run.records) == 9
    assert run.per_class["student_kd"][:2] == [0.9, 0.7]
    assert run.per_class["student_kd"][2] != run.per_class["student_kd"][2]  # null -> nan
    assert "temperature" in run.recipe_yaml


def test_load_run_on_a_parent_directory_names_the_runs_inside(tmp_path: Path) -> None:
    make_run(tmp_path, "run-a")
    with pytest.raises(ConfigError, match="run-a"):
        load_run(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "missing")


def test_a_line_cut_by_a_crash_does_not_break_the_report(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"stage": "teacher", "ep')
    assert len(load_run(run_dir).records) == 9


def test_report_files(tmp_path: Path) -> None:
    files = write_report(make_run(tmp_path))
    assert set(files.figures) == {
        "training_curves",
        "accuracy_vs_size",
        "accuracy_vs_latency",
        "per_class_accuracy",
    }
    md = files.markdown.read_text()
    # The side-by-side table with the numbers of summary.json and ratios against the teacher.
    assert "| student_kd | 80.00% | 85.00% | 10.00k | 40.00kB | 200.00k | 0.500 ms |" in md
    assert "| 10.0x | 4.00x | -10.00 pt |" in md
    # Every linked image exists next to the report.
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(links) == 4 and all((files.markdown.parent / link).is_file() for link in links)
    assert "| bird | — | — | — |" in md  # a class absent from the test set
    html = files.html.read_text()
    assert '<table id="metrics">' in html and '<table id="per-class">' in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 4
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert 'src="plots/' not in html and "http" not in html.split("</style>")[1]  # self-contained


def test_report_without_latency_leaves_that_chart_out(tmp_path: Path) -> None:
    files = write_report(make_run(tmp_path, latency=False), tmp_path / "elsewhere")
    assert "accuracy_vs_latency" not in files.figures
    assert files.html.parent == tmp_path / "elsewhere"


def test_html_escapes_names(tmp_path: Path) -> None:
    run = make_run(tmp_path, "x")
    (run / "recipe.yaml").write_text("name: <script>alert(1)</script>\n")
    html = write_report(run).html.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_compare_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", accuracy_shift=-0.1)
    runs, files = write_comparison([a, b], tmp_path / "cmp")
    rows = compare_rows(runs)
    assert [(r[0], r[1]) for r in rows][:4] == [
        ("a", "teacher"),
        ("a", "student_scratch"),
        ("a", "student_kd"),
        ("b", "teacher"),
    ]
    assert rows[5][3] == "70.00%" and rows[5][4] == "-10.00 pt"  # b's KD student vs b's own teacher
    md = files.markdown.read_text()
    assert "| b | student_kd | toyset | 70.00% |" in md
    html = files.html.read_text()
    assert html.count("data:image/png;base64,") == 2 and '<table id="compare">' in html
    with pytest.raises(ConfigError, match="at least one"):
        write_comparison([], tmp_path / "none")


def _lm_metrics(bpb: tuple[float, float], student_tokenizer: str | None) -> list[dict]:
    """A teacher and a student language model with bits per byte (the student maybe on another tokenizer)."""
    rows = []
    for name, acc, b, tok in (
        ("teacher", 0.6, bpb[0], None),
        ("student_alm", 0.5, bpb[1], student_tokenizer),
    ):
        extra = {"perplexity": 4.0, "bits_per_byte": b, "byte_perplexity": 2**b}
        rows.append(
            {"name": name, "accuracy": acc, "agreement": None, "params": 1000, "bytes": 4000, "macs": 10,
             "latency_b1_ms": 1.0, "throughput_b256": 10.0, "task": "language-modeling", "extra": extra,
             "tokenizer": tok}
        )  # fmt: skip
    return rows


def test_compare_shows_and_compares_language_models_by_bits_per_byte(tmp_path: Path) -> None:
    """LM runs (students of other tokenizers included, whose next-token accuracy counts other tokens) are
    compared by bits per byte; the table has bits/byte and byte-perplexity columns."""
    from distil.report.compare import COMPARE_COLUMNS, compare_table

    run = make_run(tmp_path, "lm", metrics=_lm_metrics((2.0, 2.5), "hf-other"))
    other = make_run(tmp_path, "cls")
    runs, files = write_comparison([run, other], tmp_path / "cmp")
    rows = compare_rows(runs)
    col = {name: i for i, name in enumerate(COMPARE_COLUMNS)}
    student = rows[1]
    assert student[col["bits/byte"]] == "2.500" and student[col["byte ppl"]] == f"{2**2.5:.3f}"
    assert student[col["Δ vs teacher"]] == "+0.500 bits/B"
    assert rows[3][col["bits/byte"]] == "—" and rows[3][col["Δ vs teacher"]] == "-20.00 pt"  # classifiers
    assert "bits/byte" in files.markdown.read_text()
    assert "bits/B" in [c.header for c in compare_table(runs).columns]
