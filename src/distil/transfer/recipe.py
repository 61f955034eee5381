"""Training-strategy transfer: the teacher's saved training recipe becomes the student's default.

Every value the user sets explicitly wins. When the batch size changes but the learning rate is not set,
the learning rate follows the linear scaling rule (Goyal et al., 2017):
``lr_student = lr_teacher * batch_student / batch_teacher``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from distil.config import GROUP_WORDS, MOVED_KEYS, StudentTrainConfig, TrainConfig
from distil.errors import TransferError
from distil.registry import closest
from distil.transfer.report import RecipeRecord

_T = TypeVar("_T", bound=TrainConfig)

# The seed belongs to the student's run (two students of one teacher should be able to differ).
NOT_INHERITED = ("seed",)
# Paths: a checkpoint's sidecar is data from whoever shared it, and must not choose where distil writes.
PATH_FIELDS: tuple[str, ...] = ()
# Settings only a student's recipe has (the teacher cache, with its directory): always the student's own.
STUDENT_ONLY_REASON = (
    "the student's own setting (a teacher's recipe has none, and a checkpoint does not choose where distil "
    "writes)"
)


def _without_student_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved recipe without student-only settings (older sidecars saved the cache keys flat)."""
    groups = set(StudentTrainConfig.model_fields) - set(TrainConfig.model_fields)  # teacher_cache
    student_only = groups | {old for old, moved in MOVED_KEYS.items() if moved.path.split(".")[0] in groups}
    return {k: v for k, v in raw.items() if k not in student_only}


def _saved_recipe(raw: dict[str, Any]) -> TrainConfig:
    """A recipe saved by distil (a checkpoint's sidecar): older flat keys load without deprecation lines,
    since the user did not write them and cannot change them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return TrainConfig.model_validate(_without_student_settings(raw))


def _override_path(name: str) -> str:
    """An overridden field as its place today: an old flat key becomes its group's field, a group's plain
    word (`augment`, `fsdp`) that word's field, so the rest of the group is still inherited."""
    name = MOVED_KEYS[name].path if name in MOVED_KEYS else name
    return f"{name}.{GROUP_WORDS[name]}" if name in GROUP_WORDS else name


def _json(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def teacher_recipe(path: str | Path) -> TrainConfig:
    """The training recipe saved in a teacher checkpoint's sidecar (its "recipe" entry).

    Raises:
        TransferError: the checkpoint has no recipe (e.g. a plain state_dict), an "unknown" one (a
            plain state_dict teacher re-saved by a run), or an invalid one.
    """
    from distil.train.checkpoint import read_sidecar

    try:
        meta = read_sidecar(path)
    except Exception as exc:
        raise TransferError(
            f"cannot inherit the training recipe: {exc}. Recipe inheritance needs a distil checkpoint "
            "(NAME.safetensors + NAME.json) saved by `distil train`."
        ) from None
    raw = meta.get("recipe")
    if raw == "unknown":
        raise TransferError(
            f"the training recipe of teacher {str(path)!r} is unknown: it was loaded from weights trained "
            "elsewhere (a plain state_dict), so no recipe was recorded to inherit. Drop --inherit-recipe and "
            "give the student's settings with --set student_train.FIELD=VALUE."
        )
    if not isinstance(raw, dict):
        raise TransferError(
            f"teacher checkpoint {str(path)!r} has no training recipe in its sidecar; train the teacher with "
            "`distil train` (which saves it), or drop --inherit-recipe."
        )
    try:
        return _saved_recipe(raw)
    except ValidationError as exc:
        raise TransferError(f"the teacher's saved recipe in {str(path)!r} is invalid: {exc}") from None


def inherit_recipe(
    teacher: TrainConfig | Mapping[str, Any],
    student: _T,
    overrides: Iterable[str] = (),
) -> tuple[_T, list[RecipeRecord]]:
    """The student's recipe: the teacher's values, except the fields named in `overrides`.

    The seed and the student-only settings (``teacher_cache``, with its directory) are never inherited:
    the teacher's recipe comes from a checkpoint sidecar, and a file must not choose where distil writes.
    The report says so per field.

    Args:
        teacher: the teacher's training recipe.
        student: the student's recipe as configured; only its `overrides` fields (and the seed) are kept.
        overrides: field names the user set explicitly (e.g. from ``--set student_train.batch_size=64``);
            a group's field (``augment.mixing``, or its old flat key ``mixing``) takes only that field from
            the student and inherits the rest of the group.

    Returns:
        (the resolved recipe, of the student's type, one RecipeRecord per field saying where its value came
        from).

    Raises:
        TransferError: an override that is not a TrainConfig field (closest match suggested).
    """
    t = teacher if isinstance(teacher, TrainConfig) else _saved_recipe(dict(teacher))
    fields = list(type(student).model_fields)
    paths = {_override_path(name) for name in overrides}
    given = {path.split(".")[0] for path in paths}
    unknown = sorted(given - set(fields))
    if unknown:
        hints = [
            f"{u!r} (did you mean {closest(u, fields)!r}?)" if closest(u, fields) else repr(u)
            for u in unknown
        ]
        raise TransferError(
            f"unknown training field(s) {', '.join(hints)}; valid fields: {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    records: list[RecipeRecord] = []
    for name in fields:
        t_value, s_value = getattr(t, name, None), getattr(student, name)
        value, source, reason = _inherited(
            name, t_value, s_value, {p for p in paths if p.split(".")[0] == name}
        )
        values[name] = value
        records.append(RecipeRecord(name, _json(value), source, _json(t_value), reason))
    if "batch_size" in given and "lr" not in given and student.batch_size != t.batch_size:
        scaled = t.lr * student.batch_size / t.batch_size
        values["lr"] = scaled
        records = [r for r in records if r.field != "lr"]
        records.append(
            RecipeRecord(
                "lr",
                scaled,
                "scaled",
                t.lr,
                f"linear scaling rule: lr = {t.lr:g} * {student.batch_size} / {t.batch_size} (batch size changed)",
            )
        )
    return type(student).model_validate(values), records


def _inherited(name: str, t_value: Any, s_value: Any, given: set[str]) -> tuple[Any, Any, str]:
    """One field of the student's recipe: (value, source, reason).

    `given` holds the paths the user set inside this field: the field itself, or fields of its group
    (`augment.mixing`), which then come from the student while the group's others are inherited.
    """
    if name not in TrainConfig.model_fields:
        return s_value, "student", STUDENT_ONLY_REASON
    if name in given:
        return s_value, "user", "set by the user"
    if given:  # fields of a group
        leaves = sorted(path.split(".", 1)[1].split(".")[0] for path in given)
        value = t_value.model_validate({**t_value.model_dump(), **{k: getattr(s_value, k) for k in leaves}})
        return (
            value,
            "user",
            f"{', '.join(f'{name}.{k}' for k in leaves)} set by the user, the rest inherited",
        )
    if name in NOT_INHERITED:
        return s_value, "student", "the run's own seed"
    if name in PATH_FIELDS:
        return s_value, "student", "a path: a checkpoint does not choose where distil writes"
    return t_value, "teacher", "inherited from the teacher"
