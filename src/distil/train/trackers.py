"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) through Accelerate.

A recipe lists them (`trackers: [tensorboard]`); `make_accelerator` checks they are installed,
`start_trackers` opens them in the run directory with the resolved recipe as hyper-parameters, the
training loop logs every epoch record under its stage (`student_kd/train_loss`, step = epoch), and
`end_trackers` closes them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from distil.errors import ConfigError
from distil.registry import unknown_name_message

# Tracker name -> (module that must be importable, pip requirement).
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}


def is_tracker_available(name: str) -> bool:
    """Whether the package behind tracker `name` is installed."""
    return importlib.util.find_spec(TRACKERS[name][0]) is not None


def check_trackers(trackers: Sequence[str]) -> list[str]:
    """Validate tracker names and that their packages are installed.

    Returns:
        The names, deduplicated, in order.

    Raises:
        ConfigError: an unknown tracker (with the closest name) or one that is not installed (with the
            pip command that installs it).
    """
    names = list(dict.fromkeys(trackers))
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(unknown_name_message("tracker", name, list(TRACKERS)))
        if not is_tracker_available(name):
            raise ConfigError(
                f"tracker {name!r} is not installed: pip install {TRACKERS[name][1]} "
                f"(or remove it from the recipe's trackers: --set trackers=[])"
            )
    return names


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested recipe -> flat `section.key` hyper-parameters (trackers take scalars only)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, int | float | str | bool):
            out[name] = value
        else:
            out[name] = str(value)  # lists, None: shown as text
    return out


def start_trackers(
    accelerator: Accelerator, run_dir: str | Path, project: str, config: Mapping[str, Any]
) -> None:
    """Open the accelerator's trackers, logging into `run_dir` (TensorBoard: `run_dir/PROJECT/`).

    Does nothing when the accelerator was made without trackers.
    """
    if not accelerator.log_with:
        return
    # make_accelerator set a placeholder directory (trackers must have one up front); point both at the run.
    accelerator.project_configuration.project_dir = str(run_dir)
    accelerator.project_configuration.logging_dir = str(run_dir)
    accelerator.init_trackers(project, config=_flat(config))


def log_to_trackers(accelerator: Accelerator, record: Mapping[str, Any]) -> None:
    """Log an epoch record's numbers under its stage, with the epoch as the step."""
    if not accelerator.trackers:
        return
    stage = str(record.get("stage", "train"))
    values = {
        f"{stage}/{k}": v
        for k, v in record.items()
        if k not in ("stage", "epoch") and isinstance(v, int | float) and not isinstance(v, bool)
    }
    accelerator.log(values, step=int(record.get("epoch", 0)))


def end_trackers(accelerator: Accelerator) -> None:
    """Flush and close the trackers (safe to call when there are none)."""
    if accelerator.trackers:
        accelerator.end_training()
