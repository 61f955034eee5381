"""The registry of loss terms that a recipe combines by name, and the contract each term follows.

A term is an `nn.Module` subclass of `Term`, registered with `@register_loss("name")`:

    @register_loss("my_term")
    class MyTerm(Term):
        needs_features = True          # gets the captured feature pairs
        def __init__(self, ctx: TermContext, scale: float = 1.0) -> None: ...
        def forward(self, inputs: TermInputs) -> torch.Tensor: ...   # a scalar

Keyword arguments after `ctx` are the term's options (`kd.options: {my_term: {scale: 2}}` in a recipe).
Adding a method is one file: define and register the term, import the file in `distil/losses/__init__.py`.
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from distil.errors import ConfigError
from distil.losses.chunked import RowOptions
from distil.models.vit import TokenLogits
from distil.registry import Registry


@dataclass
class TermInputs:
    """What a term sees at each step.

    Attributes:
        student_logits: (B, K) or (B, T, V) student outputs.
        teacher_logits: the teacher's, same shape (None when there is no teacher).
        labels: (B,) classes or (B, T) tokens (-100 where a position has no label).
        index: (B,) positions of the samples in the training split (for memory banks), or None.
        student_features: the student's captured features, one per feature pair.
        teacher_features: the teacher's captured features (no gradient), one per feature pair.
        temperature: the current softening temperature (it may follow a schedule).
        mask: `batch["mask"]`: (B,) or (B, T) bool, the positions that count, or None (all count). Only
            terms with `uses_mask = True` may receive one.
        student_heads: both heads' logits of a student with a distillation token (training mode), whose
            average is `student_logits`; None for every other student. The `deit` terms read it.
    """

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    labels: torch.Tensor
    index: torch.Tensor | None = None
    student_features: list[torch.Tensor] = field(default_factory=list)
    teacher_features: list[torch.Tensor] = field(default_factory=list)
    temperature: float = 4.0
    mask: torch.Tensor | None = None  # last, so positional construction keeps working
    student_heads: TokenLogits | None = None


@dataclass
class TermContext:
    """What a term knows when it is built (for sizing adapters, memory banks, ...).

    Attributes:
        pairs: (student_path, teacher_path) feature pairs, empty when no term needs features.
        student_shapes: per pair, the student feature shape without the batch dimension.
        teacher_shapes: per pair, the teacher feature shape without the batch dimension.
        adapters: whether terms may add trainable projections where shapes differ.
        num_classes: number of classes.
        n_data: number of training samples (memory banks are this long).
        label_smoothing: for the cross-entropy term.
        student_width: the student's output width, measured when a term asks for it
            (`Term.needs_student_width`: an embedding term projecting a narrower student); else None.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    student_shapes: list[tuple[int, ...]] = field(default_factory=list)
    teacher_shapes: list[tuple[int, ...]] = field(default_factory=list)
    adapters: bool = True
    num_classes: int = 10
    n_data: int = 0
    label_smoothing: float = 0.0
    student_width: int | None = None


@dataclass(frozen=True)
class TeacherNeeds:
    """What a loss needs from the teacher, which decides whether cached teacher logits can stand in for it.

    A loss declares it as a `teacher_needs` attribute (`ComposedLoss` derives it from its terms); a loss
    without one is assumed to need the live teacher. See `distil.teachers.cache.choose_teacher_source`.

    Attributes:
        live: the loss needs the teacher's forward pass (e.g. features captured by hooks during it), not
            only its logits.
        reason: which terms need what, for the run record.
    """

    live: bool
    reason: str = ""


class Term(nn.Module, abc.ABC):
    """Base class of a registered loss term: `forward(inputs) -> scalar tensor`.

    Class attributes say what the term needs, so the composer captures features only when some term
    uses them, fails early when a teacher is missing, and uses cached teacher logits when no term needs
    more than those:

    - `needs_teacher`: teacher logits (from the live teacher or the cache).
    - `needs_features`: captured (student, teacher) features; the teacher then runs live.
    - `needs_live_teacher`: the teacher's forward pass for anything else (it then runs live).
    - `uses_mask`: the term reduces over the valid positions of `inputs.mask` (the logit terms). A term
      without it compares per-sample (B, ...) features or relations, where a mask of positions has no
      meaning, so `ComposedLoss` refuses a batch with a mask rather than silently counting every position.
    - `needs_student_width`: `TermContext.student_width` (the student's output width), measured with one
      forward of the sample batch (a projection from the student's width to the teacher's).
    - `tasks`: the data tasks (`DataBundle.task`) whose outputs the term can read, e.g. the softmax terms
      classification and language modelling only; None: any (features, relations). `build_loss` refuses a
      term on data of another task (a softmax KD of sigmoid multilabel outputs would be silently wrong).
    """

    needs_teacher: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False
    needs_live_teacher: ClassVar[bool] = False
    uses_mask: ClassVar[bool] = False
    needs_student_width: ClassVar[bool] = False
    tasks: ClassVar[frozenset[str] | None] = None

    @classmethod
    def runs_teacher_live(cls) -> bool:
        """Whether this term needs the teacher's forward pass (features or more), not only its logits."""
        return cls.needs_live_teacher or (cls.needs_teacher and cls.needs_features)

    @abc.abstractmethod
    def forward(self, inputs: TermInputs) -> torch.Tensor:
        """The term's value for one batch (a scalar tensor)."""

    def row_part(self, temperature: float) -> tuple[str, RowOptions] | None:
        """The row kernel (`distil.losses.chunked.KERNELS`) and options that compute this term position
        by position, as the fused LM head needs (`distil.losses.fused`); None: not a per-position loss
        of the logits (features, relations, dkd), so a loss with this term is not fused."""
        del temperature
        return None


LOSSES: Registry[type[Term]] = Registry("loss term")


def register_loss(name: str) -> Any:
    """Register a `Term` subclass under `name` (the key used in `kd.terms`)."""

    def decorator(cls: type[Term]) -> type[Term]:
        cls.term_name = name  # type: ignore[attr-defined]
        LOSSES.register(name)(cls)
        return cls

    return decorator


def term_options(cls: type[Term]) -> dict[str, Any]:
    """The options a term accepts (keyword arguments after `ctx`) with their defaults."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    return {p.name: p.default for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build_term(name: str, ctx: TermContext, options: dict[str, Any] | None = None) -> Term:
    """Build the registered term `name` with its `options`.

    Raises:
        ConfigError: unknown term (valid names and the closest match listed) or unknown option.
    """
    cls = LOSSES.get(name)
    options = dict(options or {})
    valid = term_options(cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"loss term {name!r} has no option(s) {unknown}; valid options: "
            f"{', '.join(f'{k}={v!r}' for k, v in valid.items()) or 'none'}."
        )
    return cls(ctx, **options)


# Named methods: the term weights of the published recipes (RepDistiller's `-r/-a/-b` flags, mdistiller's
# DKD config), so `--method NAME` picks a whole method. Feature methods keep cross-entropy at weight 1.
METHODS: dict[str, dict[str, float]] = {
    "kd": {"ce": 0.1, "kd": 0.9},
    "dkd": {"ce": 1.0, "dkd": 1.0},
    "rkl": {"ce": 0.1, "rkl": 0.9},
    "js": {"ce": 0.1, "js": 0.9},
    "tvd": {"ce": 0.1, "tvd": 0.9},
    "logit_mse": {"ce": 0.1, "logit_mse": 0.9},
    "fitnet": {"ce": 1.0, "fitnet": 100.0},
    "at": {"ce": 1.0, "at": 1000.0},
    "sp": {"ce": 1.0, "sp": 3000.0},
    "rkd": {"ce": 1.0, "rkd": 1.0},
    "pkt": {"ce": 1.0, "pkt": 30000.0},
    "crd": {"ce": 1.0, "crd": 0.8},
    "scratch": {"ce": 1.0},
    # DeiT (Touvron et al. 2021): each term is the whole objective (class head CE + distillation head).
    "deit": {"deit": 1.0},
    "deit_soft": {"deit_soft": 1.0},
}


# The tasks softmax terms read: one class (or next token) per position.
SOFTMAX_TASKS = frozenset({"classification", "language-modeling"})

# Per task, the (teacher-matching, label) terms a recipe's kd_weight and ce_weight weigh when kd.terms is
# unset; every other task's pair is (kd, ce). `distil.losses.compose.supervised_loss` trains on the second.
TASK_TERMS: dict[str, tuple[str, str]] = {
    "multilabel": ("ml_kd", "ml_bce"),
    "regression": ("reg_kd", "reg_label"),
    "embedding": ("emb_kd", "emb_label"),
    "dense": ("dense_kd", "dense_ce"),
}


def task_terms(task: str) -> tuple[str, str]:
    """The (teacher-matching, label) term names of `task`: ("kd", "ce") unless `TASK_TERMS` says otherwise."""
    return TASK_TERMS.get(task, ("kd", "ce"))


def check_term_tasks(names: list[str], task: str) -> None:
    """Refuse terms that cannot read the outputs of `task` (`Term.tasks`).

    Raises:
        ConfigError: naming the terms, the task, and the terms that fit it.
    """
    wrong = sorted(n for n in names if (t := LOSSES.get(n).tasks) is not None and task not in t)
    if not wrong:
        return
    fits = sorted(n for n in LOSSES.names() if (t := LOSSES.get(n).tasks) is not None and task in t)
    kd_name, ce_name = task_terms(task)
    raise ConfigError(
        f"loss terms {', '.join(wrong)} do not fit {task} data: they read other outputs (softmax terms "
        f"compare one-class distributions). Terms made for {task}: {', '.join(fits) or 'none'}; feature terms "
        f"fit any task. Fix: --set 'kd.terms={{{kd_name}: 0.9, {ce_name}: 0.1}}' (or leave kd.terms unset)."
    )


def method_terms(name: str) -> dict[str, float]:
    """The term weights of the named method.

    Raises:
        ConfigError: unknown method; the message lists the valid ones and the closest match.
    """
    from distil.registry import unknown_name_message

    if name not in METHODS:
        raise ConfigError(unknown_name_message("method", name, list(METHODS)))
    return dict(METHODS[name])
