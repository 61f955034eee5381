"""The figure of a federated comparison: server accuracy per round, one line per method."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from distil.fileio import atomic_write_bytes
from distil.report.plots import DPI

LABELS = {"fedavg": "FedAvg", "feddf": "FedDF"}


def plot_rounds(panels: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], path: str | Path) -> Path:
    """Accuracy per round: one panel per setting, per method the mean over runs with their range shaded.

    Args:
        panels: {panel title: {method: one accuracy curve (fractions, one per round) per run (seed)}}.
        path: the PNG to write (atomically).

    Returns:
        The path written.
    """
    fig, axes = plt.subplots(
        1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.8), layout="constrained", squeeze=False
    )
    for ax, (title, methods) in zip(axes[0], panels.items(), strict=False):
        for method, curves in methods.items():
            values = 100 * torch.tensor([list(c) for c in curves], dtype=torch.float64)
            rounds = list(range(1, values.shape[1] + 1))
            runs = f" (mean of {len(curves)})" if len(curves) > 1 else ""
            ax.plot(rounds, values.mean(0).tolist(), marker=".", label=LABELS.get(method, method) + runs)
            if len(curves) > 1:
                ax.fill_between(
                    rounds, values.min(0).values.tolist(), values.max(0).values.tolist(), alpha=0.2
                )
        ax.set(
            title=title,
            xlabel="round (the same bytes sent by every method)",
            ylabel="server test accuracy (%)",
        )
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
