"""Rich progress bars for long work; a disabled Progress draws nothing (quiet mode, CI logs)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(console: Console | None = None, enabled: bool = True) -> Progress:
    """A progress display with ETA and a free-text status (loss, accuracy) per task."""
    return Progress(
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )
