"""Structure transfer: a student that reuses named teacher modules, copied or shared, frozen or trainable.

The seed's example: the student takes the teacher's ``conv1`` and ``conv2`` (its feature extractor) and
trains new fully connected layers. An optional unfreeze schedule trains the new parts first and then
everything (:class:`UnfreezeSchedule`, run by :func:`fit_in_phases`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from distil.config import TrainConfig
from distil.errors import ConfigError, TransferError
from distil.train.stages import unfrozen
from distil.transfer.parameters import _closest_n
from distil.transfer.report import StructureRecord

# Attribute set on a reused module while it is frozen: its forward pre-hook then keeps it in eval mode.
_HOLD_EVAL = "_distil_hold_eval"


def _eval_while_held(module: nn.Module, args: Any) -> None:
    if getattr(module, _HOLD_EVAL, False) and module.training:
        module.eval()


def hold_eval(module: nn.Module, hold: bool = True) -> None:
    """Keep `module` (and its children) in eval mode while `hold`, whatever `train()` its parent does.

    A frozen reused module must not normalise with batch statistics nor update its BatchNorm running
    statistics: for a shared module those are the teacher's own, so the distillation targets would
    drift. `model.train()` sets every submodule's mode, so the module is put back in eval mode by a
    forward pre-hook just before it runs. The hook is registered once and checks a flag, so it travels
    with `copy.deepcopy` and does not touch the state_dict; `hold=False` releases the module (it then
    follows its parent's mode again), as the unfreeze phase of :class:`UnfreezeSchedule` does.

    Args:
        module: the reused module.
        hold: True to keep it in eval mode, False to release it.
    """
    if not hasattr(module, _HOLD_EVAL):
        module.register_forward_pre_hook(_eval_while_held)
    setattr(module, _HOLD_EVAL, hold)
    if hold:
        module.eval()


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def reuse_modules(
    teacher: nn.Module,
    student: nn.Module,
    names: Sequence[str],
    *,
    mode: Literal["copy", "share"] = "copy",
    freeze: bool = True,
    unfreeze_epoch: int | None = None,
    example_inputs: torch.Tensor | None = None,
) -> list[StructureRecord]:
    """Put the teacher's modules `names` into `student` (in place), replacing the student's own.

    Args:
        teacher: the trained model.
        student: the model that receives the modules (same module paths).
        names: module paths, e.g. ``["conv1", "conv2"]``.
        mode: "copy" (an independent deep copy) or "share" (the very same module object, so its weights
            are the teacher's; only sensible frozen).
        freeze: whether the reused modules start with ``requires_grad=False``. Frozen modules (and
            shared ones, always frozen) also stay in eval mode while the student trains (see
            :func:`hold_eval`), so their BatchNorm statistics are neither used per batch nor updated.
        unfreeze_epoch: recorded for the report; see :class:`UnfreezeSchedule` to apply it.
        example_inputs: when given, the student is run on it to check that the new modules fit.

    Returns:
        One StructureRecord per module.

    Raises:
        TransferError: an unknown module name (closest matches listed), a module the student lacks,
            a trainable shared module, or modules whose shapes do not fit the student's other layers.
            The student is left unchanged when this is raised.
    """
    if not names:
        raise TransferError("no module names given to reuse; e.g. ['conv1', 'conv2']")
    if mode not in ("copy", "share"):
        raise TransferError(f"unknown reuse mode {mode!r}; valid modes: copy, share")
    if mode == "share" and (not freeze or unfreeze_epoch is not None):
        raise TransferError(
            "a shared module is the teacher's own object: training it would change the teacher (and the "
            "distillation targets). Use mode='copy' to fine-tune reused modules, or keep shared ones frozen."
        )
    t_modules = dict(teacher.named_modules())
    s_modules = dict(student.named_modules())
    problems = []
    for name in names:
        for role, table in (("teacher", t_modules), ("student", s_modules)):
            if not name or name not in table:
                near = _closest_n(name, [n for n in table if n])
                problems.append(
                    f"{role} has no module {name!r}" + (f" (closest: {', '.join(near)})" if near else "")
                )
    if problems:
        raise TransferError("cannot reuse teacher modules: " + "; ".join(problems) + ".")
    originals = {name: s_modules[name] for name in names}
    records = []
    reused = []
    for name in names:
        module = t_modules[name] if mode == "share" else copy.deepcopy(t_modules[name])
        reused.append(module)
        _set_submodule(student, name, module)
        records.append(
            StructureRecord(
                module=name,
                mode=mode,
                frozen=freeze,
                unfreeze_epoch=unfreeze_epoch,
                parameters=sum(p.numel() for p in module.parameters()),
            )
        )
    if example_inputs is not None:
        was_training = student.training
        try:
            with torch.no_grad():
                student.eval()(example_inputs)
        except RuntimeError as exc:
            for name, original in originals.items():
                _set_submodule(student, name, original)
            raise TransferError(
                f"the student does not run with the teacher's {', '.join(names)}: {str(exc).splitlines()[0]}. "
                "The layers after a reused module must accept its output; reuse a prefix of the teacher "
                "(e.g. conv1, conv2) in a student whose next layers are sized for it."
            ) from None
        finally:
            student.train(was_training)
    # Only once the modules fit: a shared module is the teacher's, which a refused reuse leaves as it was.
    for module in reused:
        module.requires_grad_(not freeze)
        if freeze:
            hold_eval(module)
    return records


@dataclass(frozen=True)
class UnfreezeSchedule:
    """Unfreeze `modules` at the start of epoch `epoch` (1-based), e.g. head first, then everything."""

    modules: tuple[str, ...]
    epoch: int

    def __post_init__(self) -> None:
        if self.epoch < 2:
            raise TransferError(
                f"unfreeze epoch must be >= 2 (epoch 1 trains with the modules frozen), got {self.epoch}"
            )

    def apply(self, model: nn.Module, epoch: int) -> bool:
        """Set `requires_grad` and the eval-mode hold for `epoch` (1-based); returns whether trainable."""
        trainable = epoch >= self.epoch
        for name in self.modules:
            module = model.get_submodule(name)
            module.requires_grad_(trainable)
            hold_eval(module, not trainable)
        return trainable


def fit_in_phases(
    train: Callable[[nn.Module, TrainConfig, str], Any],
    model: nn.Module,
    cfg: TrainConfig,
    schedule: UnfreezeSchedule | None,
    description: str,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train with `schedule`: epochs before `schedule.epoch` with the modules frozen, the rest unfrozen.

    The optimizer only holds trainable parameters, so each phase builds its own optimizer and learning
    rate schedule (a restart at the unfreeze epoch, as in gradual-unfreezing fine-tuning). The second
    phase trains as stage ``unfrozen(description)`` (``f"{description}-unfrozen"``) (so its per-epoch log lines and resumable
    training state are its own); the returned records are numbered over the whole run.

    Args:
        train: ``train(model, cfg, description) -> FitResult`` (e.g. a closure over `distil.api.distill`).
        model: the student with reused modules.
        cfg: the whole training recipe; its epochs are split between the phases.
        schedule: when to unfreeze; None trains once with `cfg`.
        description: the label of the records.

    Returns:
        (trained model, per-epoch records numbered over the whole run).
    """
    if schedule is not None and cfg.max_steps is not None:
        raise ConfigError(
            f"transfer.unfreeze_epoch={schedule.epoch} counts epochs, but student_train.max_steps="
            f"{cfg.max_steps} sets the budget in steps. Fix: use student_train.epochs, or drop unfreeze_epoch."
        )
    if schedule is None or schedule.epoch > cfg.epochs:
        if schedule is not None:
            schedule.apply(model, 1)
        result = train(model, cfg, description)
        return result.model, list(result.history)
    history: list[dict[str, Any]] = []
    first = schedule.epoch - 1
    for start, epochs in ((1, first), (schedule.epoch, cfg.epochs - first)):
        trainable = schedule.apply(model, start)
        phase = cfg.model_copy(update={"epochs": epochs})
        # Each phase is its own stage (its own optimizer, schedule and resumable training state).
        stage = unfrozen(description) if trainable else description
        result = train(model, phase, stage)
        model = result.model
        for record in result.history:
            history.append(
                {
                    **record,
                    "stage": str(description),
                    "phase": stage,
                    "epoch": record["epoch"] + start - 1,
                    "reused_trainable": trainable,
                }
            )
    return model, history
