"""Training progress in four formats: Rich bars, plain lines, JSON lines, or nothing.

* ``rich``: live bars with ETA, the loss terms and the evaluation accuracy (interactive terminals).
* ``plain``: one line per finished epoch, for logs and pipes, where a live display would show nothing
  until the end (Rich draws nothing when stdout is not a terminal).
* ``jsonl``: one JSON object per finished epoch on stdout, for scripts and CI.
* ``quiet``: nothing.
* ``auto`` (the default): ``rich`` on a terminal, ``plain`` otherwise.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal, TextIO, get_args

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LogFormat = Literal["auto", "rich", "plain", "jsonl", "quiet"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)

# Record keys that are not loss terms or accuracies (shown separately or not at all).
_BOOKKEEPING = {
    "stage",
    "epoch",
    "lr",
    "seconds",
    "samples_per_s",
    "tokens_per_s",
    "eval_accuracy",
    "eval_perplexity",
}


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def epoch_summary(record: dict[str, Any], epochs: int | None = None) -> str:
    """One readable line for an epoch record: loss terms, accuracies, learning rate and time.

    Example: ``epoch 3/20  loss 0.412  kd 0.380  ce 0.310  val_accuracy 91.2%  lr 0.0412  1.2s``
    """
    epoch = record.get("epoch", "?")
    parts = [f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"]
    for key, value in record.items():
        if key.startswith("train_") and isinstance(value, int | float):
            parts.append(f"{key.removeprefix('train_')} {value:.4g}")
    for key, value in record.items():
        if key.endswith("_accuracy") and key not in _BOOKKEEPING and isinstance(value, int | float):
            parts.append(f"{key.removesuffix('_accuracy')} acc {value:.2%}")
    for key, value in record.items():  # language models
        if key.endswith("_perplexity") and key not in _BOOKKEEPING and isinstance(value, int | float):
            parts.append(f"{key.removesuffix('_perplexity')} ppl {value:.3f}")
    if isinstance(record.get("tokens_per_s"), int | float):
        parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    if isinstance(record.get("lr"), int | float):
        parts.append(f"lr {record['lr']:.3g}")
    if isinstance(record.get("seconds"), int | float):
        parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


class RunProgress(Progress):
    """A Rich Progress that also reports each finished epoch in the chosen log format.

    The training loop calls :meth:`epoch_end` with every epoch record; the bars themselves are drawn
    only in ``rich`` format.
    """

    def __init__(
        self, *columns: Any, log_format: LogFormat = "rich", stream: TextIO | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*columns, **kwargs)
        self.log_format = log_format
        self._stream = stream
        self._epoch_seconds: dict[TaskID, float] = {}

    def epoch_end(self, task_id: TaskID, record: dict[str, Any], epochs: int) -> None:
        """Report a finished epoch: a status line on the bar, a plain line, or a JSON line.

        Args:
            task_id: the progress task of this training stage.
            record: the epoch record (stage, epoch, train_* loss terms, accuracies, lr, seconds).
            epochs: the stage's number of epochs (for "epoch 3/20" and the ETA).
        """
        done = int(record.get("epoch", 0))
        spent = self._epoch_seconds.get(task_id, 0.0) + float(record.get("seconds", 0.0))
        self._epoch_seconds[task_id] = spent
        eta = spent / done * (epochs - done) if done else 0.0
        stage = str(record.get("stage", "train"))
        line = f"{stage:<16} {epoch_summary(record, epochs)}  eta {_duration(eta)}"
        if self.log_format == "rich":
            # The full line scrolls above the live bars (an epoch history, like a log); the bar keeps a
            # short status so that it still fits an 80-column terminal.
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            accuracy = record.get("eval_accuracy")
            short = f"loss {record.get('train_loss', float('nan')):.3g}"
            if isinstance(accuracy, int | float):
                short += f" acc {accuracy:.1%}"
            self.update(task_id, status=short)
        elif self.log_format == "plain":
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        elif self.log_format == "jsonl":
            stream = self._stream or sys.stdout
            stream.write(
                json.dumps({"event": "epoch", **record, "epochs": epochs, "eta_s": round(eta, 1)}) + "\n"
            )
            stream.flush()


def resolve_log_format(log_format: str, console: Console | None = None) -> LogFormat:
    """``auto`` becomes ``rich`` on an interactive terminal and ``plain`` otherwise.

    Raises:
        ConfigError: an unknown format (the message lists the valid ones and the closest).
    """
    from distil.errors import ConfigError
    from distil.registry import unknown_name_message

    if log_format not in LOG_FORMATS:
        raise ConfigError(unknown_name_message("log format", log_format, list(LOG_FORMATS)))
    if log_format == "auto":
        return "rich" if (console or Console()).is_terminal else "plain"
    return log_format  # type: ignore[return-value]


def make_progress(
    console: Console | None = None, enabled: bool = True, log_format: str = "auto"
) -> RunProgress:
    """A progress display with ETA, loss terms and accuracy per task, in the chosen log format.

    Args:
        console: where bars and plain lines go.
        enabled: False is the same as ``log_format="quiet"``.
        log_format: auto, rich, plain, jsonl or quiet (see the module docstring).

    Returns:
        A RunProgress to use as a context manager and to pass to the training loop.
    """
    fmt = resolve_log_format(log_format, console) if enabled else "quiet"
    return RunProgress(
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=fmt != "rich",
        transient=False,
        log_format=fmt,
    )
