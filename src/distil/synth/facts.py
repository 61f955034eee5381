"""A teacher without its data: the four facts synthesis needs, from its sidecar or the user's options.

`distil synthesize --no-data` never reads a dataset. What the data would have given comes instead from
a distil checkpoint's sidecar (``data``: input shape, class names, mean/std; `distil.train.checkpoint`)
or, for a plain state_dict, from ``--input-shape``, ``--classes``/``--class-names``, ``--mean`` and
``--std``; a fact given both ways must agree. The real test split is the user's own small labelled
``--test FILE.npz`` or absent (the transfer set then records that it has no real test data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distil.data.bundle import DataBundle, Split
from distil.data.npz import read_arrays
from distil.data.raw import to_float_inputs
from distil.data.targets import to_targets
from distil.errors import ConfigError, DataError
from distil.train.checkpoint import checkpoint_paths, read_sidecar

NO_DATA_NAME = "no-data"
"""The dataset name recorded when neither data nor a sidecar names one."""


@dataclass(frozen=True)
class GivenFacts:
    """What the user said about the teacher's inputs on the command line (None: not said).

    Attributes:
        input_shape: one input's shape, (C, H, W).
        classes: the number of classes the teacher predicts.
        class_names: one name per class (implies `classes`).
        mean, std: the input normalization the teacher was trained with: one value per channel, or one
            value for all channels.
    """

    input_shape: tuple[int, ...] | None = None
    classes: int | None = None
    class_names: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def any_given(self) -> bool:
        """Whether any fact was given (they only make sense without data)."""
        return any(v is not None for v in vars(self).values())


@dataclass(frozen=True)
class TeacherFacts:
    """The teacher's input space, complete: what a dataset would otherwise tell synthesis.

    Attributes:
        input_shape: (C, H, W) of one input.
        class_names: one name per class (their count is the teacher's output count).
        mean, std: one value per channel.
        name: the dataset the teacher was trained on, as its sidecar records it (or `NO_DATA_NAME`).
    """

    input_shape: tuple[int, ...]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = NO_DATA_NAME


def _parse_list(text: str | None, convert: Any, valid: Any, option: str, hint: str) -> tuple[Any, ...] | None:
    """``text`` split at commas and converted part by part; None stays None.

    Raises:
        ConfigError: an empty list, a part `convert` rejects, or values `valid` rejects; `hint` says what to give.
    """
    if text is None:
        return None
    try:
        values = tuple(convert(p) for p in text.split(","))
    except ValueError:
        values = ()
    if not values or not valid(values):
        raise ConfigError(f"{option} {text!r}: {hint}")
    return values


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    """``"1,28,28"`` as (1, 28, 28); None stays None.

    Raises:
        ConfigError: a part that is not a positive integer.
    """
    hint = "give positive integers separated by commas, e.g. 1,28,28."
    return _parse_list(text, int, lambda v: all(x >= 1 for x in v), option, hint)


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` as (0.5, 0.5, 0.5); None stays None.

    Raises:
        ConfigError: a part that is not a finite number.
    """
    hint = "give numbers separated by commas (one, or one per channel)."
    return _parse_list(text, float, lambda v: bool(np.isfinite(v).all()), option, hint)


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``"cat,dog"`` as ("cat", "dog"); None stays None.

    Raises:
        ConfigError: an empty name.
    """
    if text is None:
        return None
    names = tuple(p.strip() for p in text.split(","))
    if not all(names):
        raise ConfigError(f"--class-names {text!r}: give non-empty names separated by commas.")
    return names


def recorded_facts(checkpoint: str) -> dict[str, Any]:
    """The facts a distil checkpoint's sidecar records under ``data`` ({} for a plain state_dict).

    Keys present among: input_shape, class_names, mean, std, name (only those the sidecar holds).

    Raises:
        CheckpointError: a sidecar that exists but is not a distil checkpoint's.
    """
    _, sidecar = checkpoint_paths(checkpoint)
    if not sidecar.is_file():
        return {}
    data = read_sidecar(checkpoint).get("data")
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("input_shape", "class_names", "mean", "std", "name") if data.get(k)}


def resolve_facts(given: GivenFacts, recorded: dict[str, Any], checkpoint: str) -> TeacherFacts:
    """Merge what the user gave with what the checkpoint records; every fact must come from one of them.

    Args:
        given: the command-line facts.
        recorded: `recorded_facts(checkpoint)`.
        checkpoint: the teacher checkpoint, named in messages.

    Raises:
        ConfigError: a fact neither gives (naming the options to pass), a given fact the sidecar
            contradicts, or values that do not fit together (class names vs count, mean/std vs channels).
    """
    shape = _agreed("--input-shape", given.input_shape, recorded.get("input_shape"), checkpoint)
    recorded_names = recorded.get("class_names")
    names: tuple[Any, ...] | None
    if given.class_names is None and given.classes is not None and recorded_names is not None:
        # --classes K only counts: the sidecar's names stand when the count agrees.
        _agreed("--classes", (str(given.classes),), [str(len(recorded_names))], checkpoint)
        names = tuple(recorded_names)
    else:
        names = _agreed("--class-names", _class_names(given), recorded_names, checkpoint)
    mean = _agreed("--mean", given.mean, recorded.get("mean"), checkpoint)
    std = _agreed("--std", given.std, recorded.get("std"), checkpoint)
    missing = [
        option
        for option, value in (
            ("--input-shape C,H,W", shape),
            ("--classes K (or --class-names a,b,c)", names),
            ("--mean M", mean),
            ("--std S", std),
        )
        if value is None
    ]
    if missing:
        where = "its sidecar does not record them" if recorded else "it has no distil sidecar recording them"
        raise ConfigError(
            f"--no-data: nothing says what inputs the teacher {checkpoint} takes ({where}). Pass "
            f"{' '.join(missing)} (mean/std: one value, or one per channel, as the teacher was trained)."
        )
    assert shape is not None and names is not None and mean is not None and std is not None
    if len(shape) != 3:
        raise ConfigError(
            f"--input-shape {','.join(map(str, shape))}: data-free synthesis makes images; give C,H,W."
        )
    channels = shape[0]
    return TeacherFacts(
        input_shape=tuple(int(d) for d in shape),
        class_names=[str(n) for n in names],
        mean=_per_channel("--mean", mean, channels),
        std=_positive(_per_channel("--std", std, channels)),
        name=str(recorded.get("name") or NO_DATA_NAME),
    )


def _class_names(given: GivenFacts) -> tuple[str, ...] | None:
    if given.class_names is None:
        return None if given.classes is None else tuple(str(k) for k in range(given.classes))
    if given.classes is not None and given.classes != len(given.class_names):
        raise ConfigError(
            f"--classes {given.classes} but --class-names names {len(given.class_names)}; pass one of them."
        )
    return given.class_names


def _agreed(
    option: str, given: tuple[Any, ...] | None, recorded: list[Any] | None, checkpoint: str
) -> tuple[Any, ...] | None:
    """The given value, else the recorded one; both given must agree (a wrong option is no override)."""
    if recorded is None:
        return given
    if given is None:
        return tuple(recorded)
    if not _same(given, tuple(recorded)):
        raise ConfigError(
            f"{option.split('/')[0]} {','.join(map(str, given))} contradicts the teacher's sidecar "
            f"({checkpoint}), which records {','.join(map(str, recorded))}; drop the option (the sidecar "
            "records how the teacher was trained)."
        )
    return given


def _same(given: tuple[Any, ...], recorded: tuple[Any, ...]) -> bool:
    if len(given) == 1 and len(recorded) > 1 and isinstance(given[0], float):
        given = given * len(recorded)  # one mean/std for every channel
    if len(given) != len(recorded):
        return False
    return all(
        abs(a - float(b)) <= 1e-4 if isinstance(a, float) else str(a) == str(b)
        for a, b in zip(given, recorded, strict=True)
    )


def _per_channel(option: str, values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if len(values) == 1:
        return tuple(float(values[0]) for _ in range(channels))
    if len(values) != channels:
        raise ConfigError(
            f"{option} has {len(values)} values but the inputs have {channels} channel(s); give one value, "
            "or one per channel."
        )
    return tuple(float(v) for v in values)


def _positive(std: tuple[float, ...]) -> tuple[float, ...]:
    if any(s <= 0 for s in std):
        raise ConfigError(f"--std {','.join(map(str, std))}: every std must be > 0.")
    return std


def facts_bundle(facts: TeacherFacts, test: Split | None = None) -> DataBundle:
    """A data bundle with no samples (and `test` as its test split, if any): the facts, for model builders.

    A bundle with an empty test split is how `write_synthetic` learns there is no real test data.
    """
    empty = Split(torch.empty((0, *facts.input_shape)), torch.empty(0, dtype=torch.long))
    return DataBundle(
        name=facts.name,
        train=empty,
        val=empty,
        test=test if test is not None else empty,
        class_names=list(facts.class_names),
        mean=facts.mean,
        std=facts.std,
        source="",
    )


def read_test_npz(path: str | Path, facts: TeacherFacts) -> Split:
    """The user's real labelled test data: arrays x_test/y_test (or x/y) of `path`, normalized as the teacher's.

    The inputs must be in the teacher's pixel scale before normalization (uint8 images are scaled to
    [0, 1], as the npz reader does), with class indices of the teacher's classes.

    Raises:
        DataError: a missing or unreadable file, missing arrays, or inputs/labels that do not fit the
            teacher (shape, class range, counts).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--test {p} does not exist; give an .npz file with arrays x_test and y_test.")
    arrays = read_arrays(p)
    x_key, y_key = ("x_test", "y_test") if "x_test" in arrays else ("x", "y")
    if x_key not in arrays or y_key not in arrays:
        raise DataError(f"--test {p} needs arrays x_test and y_test (or x and y); found {sorted(arrays)}.")
    x = to_float_inputs(arrays[x_key], f"{x_key} in {p}")
    y = to_targets(arrays[y_key], f"{y_key} in {p}")
    _check_test_fits(p, x, y, facts)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = torch.tensor(facts.mean, dtype=torch.float32).view(shape)
    std = torch.tensor(facts.std, dtype=torch.float32).view(shape)
    return Split((x - mean) / std, y)


def _check_test_fits(path: Path, x: torch.Tensor, y: torch.Tensor, facts: TeacherFacts) -> None:
    k = len(facts.class_names)
    problems = []
    if tuple(x.shape[1:]) != facts.input_shape:
        problems.append(f"inputs of shape {tuple(x.shape[1:])}, but the teacher takes {facts.input_shape}")
    if len(x) != len(y) or len(y) == 0:
        problems.append(f"{len(x)} input(s) and {len(y)} label(s) (need the same number, at least one)")
    if y.is_floating_point() or y.dim() != 1:
        problems.append("labels that are not (N,) class indices")
    elif len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        problems.append(
            f"labels from {int(y.min())} to {int(y.max())}, but the teacher has classes 0..{k - 1}"
        )
    if problems:
        raise DataError(f"--test {path} does not fit the teacher: {'; '.join(problems)}.")


def check_teacher_fits(
    teacher: nn.Module, input_shape: tuple[int, ...], num_classes: int, source: str
) -> None:
    """Run the teacher on one zero input before any synthesis: it must accept the shape and give the classes.

    Args:
        teacher: the built teacher (its mode is restored).
        input_shape: (C, H, W) synthesis will make.
        num_classes: the class count synthesis will target.
        source: where those facts came from, named in the message (options, sidecar, data).

    Raises:
        ConfigError: the forward fails, or gives another number of outputs than `num_classes`.
    """
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            device = next(iter(teacher.parameters()), torch.empty(0)).device
            out = teacher(torch.zeros((1, *input_shape), device=device))
    except (RuntimeError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"the teacher cannot run on inputs of shape {tuple(input_shape)} ({source}): {first}. "
            "Fix: give the shape it was trained on (--input-shape C,H,W with --no-data)."
        ) from None
    finally:
        teacher.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"the teacher gives outputs {got} for one input, but {num_classes} classes were given "
            f"({source}). Fix: give the class count it predicts (--classes K or --class-names with --no-data)."
        )


def describe_source(given: GivenFacts, recorded: dict[str, Any]) -> str:
    """Where the facts came from, for messages and synthetic.json."""
    parts = []
    if recorded:
        parts.append("the checkpoint's sidecar")
    if given.any_given:
        parts.append("the command-line options")
    return " and ".join(parts) or "nothing"
