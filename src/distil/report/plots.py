"""The figures of a report, as PNG files: training curves, accuracy-vs-cost Pareto charts, per-class bars.

Every function takes plain data (records, metric dicts) rather than models, so a report can be
rebuilt from a run directory alone. matplotlib runs with the non-interactive Agg backend: no display
is needed (servers, CI).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from distil.fileio import atomic_write_bytes

DPI = 110


@dataclass(frozen=True)
class Point:
    """One model in an accuracy-vs-cost chart.

    Attributes:
        label: what the chart writes next to the point (e.g. "student_kd").
        group: the run it belongs to (one colour per group).
        cost: bytes, latency in ms, MACs...: smaller is better.
        accuracy: top-1 accuracy in [0, 1]: larger is better.
        reliable: False for a cost not to be trusted (a noisy latency): drawn as a hollow marker.
        spread: the cost's relative p10-p90 range (a latency's), drawn as a horizontal error bar.
    """

    label: str
    group: str
    cost: float
    accuracy: float
    reliable: bool = True
    spread: float | None = None


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both cost (lower) and accuracy (higher), sorted by cost.

    A point is dominated when another one costs no more and is at least as accurate, and is strictly
    better on one of the two. Ties (same cost and accuracy) keep the first point.
    """
    front: list[Point] = []
    best = -math.inf
    # Sorted by cost, then by accuracy descending: a point is on the front iff it beats every cheaper one.
    for p in sorted(points, key=lambda p: (p.cost, -p.accuracy)):
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


def _save(fig: Figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_training_curves(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training loss and evaluation accuracy per epoch, one line per stage (teacher, students).

    Args:
        records: per-epoch records as in metrics.jsonl (keys "stage", "epoch", "train_loss",
            "eval_accuracy"); records without a stage or epoch are ignored.
        path: the PNG to write.

    Returns:
        The path written.
    """
    stages: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if "stage" in r and "epoch" in r:
            stages.setdefault(str(r["stage"]), []).append(r)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for stage, rows in stages.items():
        rows = sorted(rows, key=lambda r: r["epoch"])
        epochs = [r["epoch"] for r in rows]
        if any("train_loss" in r for r in rows):
            ax_loss.plot(epochs, [r.get("train_loss", math.nan) for r in rows], marker=".", label=stage)
        if any("eval_accuracy" in r for r in rows):
            acc = [100 * r["eval_accuracy"] if "eval_accuracy" in r else math.nan for r in rows]
            ax_acc.plot(epochs, acc, marker=".", label=stage)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss (mean over the epoch)")
    ax_acc.set(title="evaluation accuracy", xlabel="epoch", ylabel="top-1 accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if stages:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no training records", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, Path(path))


UNRELIABLE_NOTE = "hollow: unreliable (noisy) latency, see the report's notes; bars: p10-p90 across rounds"


def draw_points(ax: Any, points: Sequence[Point], colour: Any, label: str) -> None:
    """One group's points: filled when reliable, hollow when not, with their spread as horizontal bars.

    Args:
        ax: the matplotlib Axes.
        points: the group's points.
        colour: the group's colour.
        label: the legend entry (given once, to the first kind of marker drawn).
    """
    for reliable in (True, False):
        kind = [p for p in points if p.reliable is reliable]
        if not kind:
            continue
        ax.scatter(
            [p.cost for p in kind],
            [100 * p.accuracy for p in kind],
            facecolors=colour if reliable else "none",
            edgecolors=colour,
            label=label,
            zorder=3,
        )
        label = "_nolegend_"
    spread = [p for p in points if p.spread]
    if spread:
        # The bar's width is the p10-p90 range; centred on the median (the range's sides are not stored).
        ax.errorbar(
            [p.cost for p in spread],
            [100 * p.accuracy for p in spread],
            xerr=[[p.cost * (p.spread or 0.0) / 2 for p in spread]] * 2,
            fmt="none",
            ecolor=colour,
            alpha=0.6,
            capsize=2,
            zorder=2,
        )


def plot_pareto(points: Sequence[Point], path: str | Path, *, xlabel: str, title: str) -> Path:
    """Accuracy against a cost (log scale), one colour per run, with the Pareto front drawn as a line.

    Args:
        points: the models to place; points with a non-positive or missing cost are skipped.
        path: the PNG to write.
        xlabel: the cost axis label (e.g. "weights size (bytes)").
        title: the chart title.

    Returns:
        The path written.
    """
    usable = [p for p in points if p.cost is not None and p.cost > 0 and math.isfinite(p.cost)]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    groups = list(dict.fromkeys(p.group for p in usable))
    colours = plt.get_cmap("tab10")
    for i, group in enumerate(groups):
        members = [p for p in usable if p.group == group]
        draw_points(ax, members, colours(i % 10), group)
        # Models at the same spot (e.g. two students of one architecture) share one joined label.
        labels: dict[tuple[float, float], list[str]] = {}
        for p in members:
            labels.setdefault((p.cost, 100 * p.accuracy), []).append(p.label)
        # Alternate labels above and below the points so that neighbours do not overprint each other.
        for k, (xy, names) in enumerate(sorted(labels.items())):
            offset = (4, 4) if k % 2 == 0 else (4, -11)
            ax.annotate(", ".join(names), xy, fontsize=7, xytext=offset, textcoords="offset points")
    front = pareto_front(usable)
    if len(front) > 1:
        ax.step(
            [p.cost for p in front],
            [100 * p.accuracy for p in front],
            where="post",
            color="grey",
            linestyle="--",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )
    if usable:
        ax.set_xscale("log")
        ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
        ax.legend(fontsize=8)
    if any(not p.reliable for p in usable):
        ax.text(0.01, 0.01, UNRELIABLE_NOTE, fontsize=7, color="dimgrey", transform=ax.transAxes)
    else:
        ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=title, xlabel=xlabel + " (log scale, lower is better)", ylabel="top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_per_class(
    class_names: Sequence[str], per_class: Mapping[str, Sequence[float]], path: str | Path
) -> Path:
    """Per-class accuracy of each model as grouped bars (teacher next to its students).

    Args:
        class_names: one label per class.
        per_class: model name -> accuracy per class in [0, 1] (nan for a class without test samples).
        path: the PNG to write.

    Returns:
        The path written.
    """
    n = len(class_names)
    models = list(per_class)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.7 * n + 2), 4), layout="constrained")
    for i, name in enumerate(models):
        values = [100 * v for v in per_class[name]]
        offsets = [c - 0.4 + width * (i + 0.5) for c in range(n)]
        ax.bar(offsets, values, width=width, label=name)
    ax.set_xticks(range(n))
    ax.set_xticklabels(
        class_names, rotation=30 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8
    )
    # Headroom above 100% keeps the legend clear of the bars.
    ax.set(title="per-class test accuracy", ylabel="top-1 accuracy (%)", ylim=(0, 122))
    ax.set_yticks(range(0, 101, 20))
    ax.grid(alpha=0.3, axis="y")
    if models:
        ax.legend(fontsize=8, loc="upper center", ncol=min(len(models), 4))
    return _save(fig, Path(path))
