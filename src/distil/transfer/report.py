"""The transfer report: where every student tensor (and reused module, and recipe value) came from."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Method = Literal["exact", "selected", "depth-mapped", "random-init"]


@dataclass(frozen=True)
class TransferRecord:
    """How one student tensor was initialised.

    Attributes:
        student_tensor: the student's state_dict key.
        teacher_tensor: the teacher's state_dict key it came from, or None (random init).
        method: "exact" (same name and shape, copied), "selected" (channels/units chosen from a larger
            teacher tensor), "depth-mapped" (taken from another teacher block by the layer map; may also
            be selected), or "random-init" (left as built).
        reason: why, in words (e.g. "uniform selection of 32/64 out-channels").
        student_shape: the student tensor's shape.
        teacher_shape: the teacher tensor's shape before selection, or None.
    """

    student_tensor: str
    teacher_tensor: str | None
    method: Method
    reason: str
    student_shape: tuple[int, ...] = ()
    teacher_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StructureRecord:
    """One teacher module placed in the student: copied or shared, frozen or trainable."""

    module: str
    mode: Literal["copy", "share"]
    frozen: bool
    unfreeze_epoch: int | None
    parameters: int


@dataclass(frozen=True)
class RecipeRecord:
    """Where one value of the student's training recipe came from.

    `source` is "teacher" (inherited), "user" (set by the user, overriding the teacher), "scaled"
    (derived from the teacher's value by a stated rule) or "student" (kept from the student recipe).
    """

    field: str
    value: Any
    source: Literal["teacher", "user", "scaled", "student"]
    teacher_value: Any = None
    reason: str = ""


@dataclass
class TransferReport:
    """Everything one transfer did, for the run directory (transfer_report.json and report.md)."""

    parameters: list[TransferRecord] = field(default_factory=list)
    structure: list[StructureRecord] = field(default_factory=list)
    recipe: list[RecipeRecord] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Number of student tensors per method."""
        return dict(Counter(r.method for r in self.parameters))

    def by_student(self, name: str) -> TransferRecord:
        """The record of one student tensor (KeyError when absent)."""
        for r in self.parameters:
            if r.student_tensor == name:
                return r
        raise KeyError(name)

    def merge(self, other: TransferReport) -> TransferReport:
        """A report with the records of both (other's settings win on equal keys)."""
        return TransferReport(
            parameters=[*self.parameters, *other.parameters],
            structure=[*self.structure, *other.structure],
            recipe=[*self.recipe, *other.recipe],
            settings={**self.settings, **other.settings},
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (tuples become lists)."""
        return {
            "settings": self.settings,
            "counts": self.counts(),
            "parameters": [asdict(r) for r in self.parameters],
            "structure": [asdict(r) for r in self.structure],
            "recipe": [asdict(r) for r in self.recipe],
        }

    def to_markdown(self) -> str:
        """A human-readable section for report.md."""
        lines = ["## Knowledge transfer", ""]
        if self.settings:
            shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
            lines += [f"Settings: {shown}.", ""]
        if self.parameters:
            counts = ", ".join(f"{n} {m}" for m, n in sorted(self.counts().items()))
            lines += [
                f"### Parameters ({counts})",
                "",
                "| student tensor | teacher tensor | method | reason |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {r.student_tensor} {list(r.student_shape)} | {r.teacher_tensor or '-'} | {r.method} | {r.reason} |"
                for r in self.parameters
            ]
            lines.append("")
        if self.structure:
            lines += ["### Structure", "", "| module | mode | frozen | unfreeze at epoch | parameters |"]
            lines.append("|---|---|---|---|---|")
            lines += [
                f"| {r.module} | {r.mode} | {r.frozen} | {r.unfreeze_epoch or '-'} | {r.parameters:,} |"
                for r in self.structure
            ]
            lines.append("")
        if self.recipe:
            lines += ["### Training recipe", "", "| field | value | source | teacher value | reason |"]
            lines.append("|---|---|---|---|---|")
            lines += [
                f"| {r.field} | {r.value} | {r.source} | {r.teacher_value} | {r.reason} |"
                for r in self.recipe
            ]
            lines.append("")
        return "\n".join(lines)
