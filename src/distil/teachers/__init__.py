"""Where teacher outputs come from: a live frozen module, a cache of its outputs, or an ensemble.

The training loop only calls `teacher(batch) -> Tensor`; each source here is one such callable, and
`choose_teacher_source` picks live or cached from what the loss declares it needs.
"""

from distil.teachers.cache import CachedTeacher, choose_teacher_source, open_or_build
from distil.teachers.ensemble import EnsembleTeacher, recipe_teachers
from distil.teachers.live import LiveTeacher, freeze

__all__ = [
    "CachedTeacher",
    "EnsembleTeacher",
    "LiveTeacher",
    "choose_teacher_source",
    "freeze",
    "open_or_build",
    "recipe_teachers",
]
