"""Figures: the Pareto front against a brute-force definition, and PNGs that decode to real images."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
from hypothesis import given, settings
from hypothesis import strategies as st

from distil.report.plots import Point, pareto_front, plot_pareto, plot_per_class, plot_training_curves


def _dominated(p: Point, others: list[Point]) -> bool:
    """Brute force: some other point is no worse on both axes and strictly better on one."""
    return any(
        q is not p
        and q.cost <= p.cost
        and q.accuracy >= p.accuracy
        and (q.cost < p.cost or q.accuracy > p.accuracy)
        for q in others
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 20), st.integers(0, 10)).map(
            lambda t: Point("m", "g", float(t[0]), t[1] / 10)
        ),
        min_size=1,
        max_size=12,
    )
)
def test_pareto_front_is_exactly_the_non_dominated_points(points: list[Point]) -> None:
    front = pareto_front(points)
    expected = {(p.cost, p.accuracy) for p in points if not _dominated(p, points)}
    assert {(p.cost, p.accuracy) for p in front} == expected
    assert len(front) == len(expected)  # duplicates of one spot appear once
    costs = [p.cost for p in front]
    accs = [p.accuracy for p in front]
    assert costs == sorted(costs) and accs == sorted(accs)  # cheaper is less accurate along the front


def test_pareto_front_example() -> None:
    teacher = Point("teacher", "r", 400.0, 0.9)
    kd = Point("kd", "r", 40.0, 0.8)
    scratch = Point("scratch", "r", 40.0, 0.7)
    pruned = Point("pruned", "r", 100.0, 0.75)  # bigger than kd and less accurate: dominated
    assert pareto_front([teacher, scratch, pruned, kd]) == [kd, teacher]


def _image(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_training_curves_png(tmp_path: Path) -> None:
    records = [
        {"stage": s, "epoch": e, "train_loss": 1 / e, "eval_accuracy": 0.5} for s in "ab" for e in (1, 2)
    ]
    records.append({"note": "no stage: ignored"})
    img = _image(plot_training_curves(records, tmp_path / "curves.png"))
    h, w = img.shape[:2]
    assert w > 2 * h > 400  # two panels side by side


def test_pareto_png_skips_unmeasured_costs(tmp_path: Path) -> None:
    points = [Point("a", "r1", 10.0, 0.5), Point("b", "r2", 100.0, 0.9), Point("c", "r2", math.nan, 0.7)]
    img = _image(plot_pareto(points, tmp_path / "p.png", xlabel="bytes", title="t"))
    assert img.shape[0] > 200
    # An empty chart still renders (e.g. no latency measured) rather than failing the report.
    _image(plot_pareto([], tmp_path / "empty.png", xlabel="ms", title="t"))


def test_per_class_png(tmp_path: Path) -> None:
    per_class = {"teacher": [1.0, 0.5, math.nan], "student": [0.8, 0.4, math.nan]}
    img = _image(plot_per_class(["x", "y", "z"], per_class, tmp_path / "pc.png"))
    assert img.shape[1] > 400
