"""Knowledge transfer from a teacher to a student, besides distillation.

* :mod:`~distil.transfer.parameters`: initialise the student from the teacher's weights (exact copy,
  channel selection for a thinner student, depth mapping for a shallower one; for Hugging Face
  transformers, :mod:`~distil.transfer.hf_layers` selects hidden units, heads and MLP units);
* :mod:`~distil.transfer.structure`: reuse named teacher modules in the student (copied or shared,
  frozen or trainable, with an unfreeze schedule);
* :mod:`~distil.transfer.recipe`: the teacher's training recipe becomes the student's default;
* :mod:`~distil.transfer.report`: the records of what each step did.

:func:`prepare_student` applies the three as a :class:`~distil.config.TransferConfig` asks, in the order
recipe -> parameters -> structure, before the student is trained (or distilled).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distil.config import TRANSFERRED_KD_TEMPERATURE, KDConfig, TrainConfig, TransferConfig
from distil.errors import TransferError
from distil.transfer.parameters import (
    auto_layer_map,
    expand_block_numbers,
    parse_layer_map,
    transfer_parameters,
)
from distil.transfer.recipe import inherit_recipe, teacher_recipe
from distil.transfer.report import RecipeRecord, StructureRecord, TransferRecord, TransferReport
from distil.transfer.selection import select_indices
from distil.transfer.structure import UnfreezeSchedule, fit_in_phases, reuse_modules


@dataclass
class PreparedStudent:
    """A student ready to train: its (transferred) weights, its training recipe, what was done."""

    student: nn.Module
    train_cfg: TrainConfig
    report: TransferReport
    schedule: UnfreezeSchedule | None = None

    @property
    def active(self) -> bool:
        """Whether any transfer was applied."""
        return bool(self.report.parameters or self.report.structure or self.report.recipe)


# A student initialised from the teacher already sits near the teacher's solution; at the lr and T = 4 that
# suit a random one, KD's first steps carried it away and transfer + KD ended below transfer alone.
# Measured with benchmarks/transfer_fashion_mnist.py (docs/transfer.md#transfer--kd-defaults): the lower
# lr gained another +1.4 pt over lr x 1 (the temperature: distil.config.TRANSFERRED_KD_TEMPERATURE).
TRANSFERRED_LR_SCALE = 0.2  # transfer.lr_scale: None


def transferred_lr_scale(cfg: TransferConfig) -> float:
    """The factor on the student's lr that `cfg` implies: `cfg.lr_scale`, or the measured default."""
    if cfg.lr_scale is not None:
        return cfg.lr_scale
    return TRANSFERRED_LR_SCALE if cfg.init == "teacher" else 1.0


def transferred_kd(cfg: TransferConfig, kd: KDConfig) -> KDConfig:
    """The KD settings of a student prepared by `cfg`: `cfg.kd_for(kd)` (`Recipe.student_kd` of a recipe).

    `cfg.kd_temperature` (resolved when `cfg` was read: `TRANSFERRED_KD_TEMPERATURE` with init: teacher)
    with the temperature schedule dropped, else `kd` unchanged.
    """
    return cfg.kd_for(kd)


def prepare_student(
    cfg: TransferConfig,
    teacher: nn.Module,
    student: nn.Module,
    student_train: TrainConfig,
    *,
    example_inputs: torch.Tensor,
    teacher_train: TrainConfig | None = None,
) -> PreparedStudent:
    """Apply the transfers `cfg` asks for to `student` (in place) and resolve its training recipe.

    Args:
        cfg: which transfers (init, selection, layer map, reuse, recipe inheritance).
        teacher: the trained teacher.
        student: the freshly built student.
        student_train: the student's training recipe as configured.
        example_inputs: a batch of inputs (e.g. ``data.train.head(1)``) to trace the models with.
        teacher_train: the teacher's saved training recipe (needed for ``cfg.inherit_recipe``).

    Returns:
        PreparedStudent with the report of every step.

    Raises:
        TransferError: any bad input; checked before the student is changed where possible.
    """
    report = TransferReport()
    train_cfg = student_train
    if cfg.unfreeze_epoch is not None and (not cfg.reuse or not cfg.freeze):
        raise TransferError(
            "transfer.unfreeze_epoch needs frozen reused modules: set transfer.reuse (e.g. [conv1, conv2]) "
            "and keep transfer.freeze=true, or drop unfreeze_epoch."
        )
    if cfg.inherit_recipe:
        if teacher_train is None:
            raise TransferError(
                "transfer.inherit_recipe needs the teacher's training recipe, which only a distil checkpoint "
                "(NAME.safetensors + NAME.json) carries."
            )
        train_cfg, records = inherit_recipe(teacher_train, student_train, cfg.override)
        report.recipe.extend(records)
        report.settings["inherit_recipe"] = True
    if cfg.init == "teacher":
        params = transfer_parameters(
            teacher,
            student,
            selection=cfg.selection,
            layer_map=cfg.layer_map,
            example_inputs=example_inputs,
            strict=cfg.strict,
        )
        report = report.merge(params)
    scale = transferred_lr_scale(cfg)
    if scale != 1.0:
        train_cfg = train_cfg.model_copy(update={"lr": train_cfg.lr * scale})
        report.settings["lr_scale"] = scale
    schedule = None
    if cfg.reuse:
        records_s = reuse_modules(
            teacher,
            student,
            cfg.reuse,
            mode=cfg.reuse_mode,
            freeze=cfg.freeze,
            unfreeze_epoch=cfg.unfreeze_epoch,
            example_inputs=example_inputs,
        )
        report.structure.extend(records_s)
        report.settings["reuse"] = list(cfg.reuse)
        if cfg.unfreeze_epoch is not None:
            schedule = UnfreezeSchedule(tuple(cfg.reuse), cfg.unfreeze_epoch)
    return PreparedStudent(student, train_cfg, report, schedule)


__all__ = [
    "TRANSFERRED_KD_TEMPERATURE",
    "PreparedStudent",
    "RecipeRecord",
    "StructureRecord",
    "TransferRecord",
    "TransferReport",
    "UnfreezeSchedule",
    "auto_layer_map",
    "expand_block_numbers",
    "fit_in_phases",
    "inherit_recipe",
    "parse_layer_map",
    "prepare_student",
    "reuse_modules",
    "select_indices",
    "teacher_recipe",
    "transfer_parameters",
    "transferred_kd",
    "transferred_lr_scale",
]
