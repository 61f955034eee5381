"""`synthesize_for_recipe`: a recipe's teacher and data in, a synthetic transfer-set folder out.

What `distil synthesize` runs: the teacher comes from the recipe (`teacher.model` + `teacher.checkpoint`:
a distil checkpoint, or a .safetensors state_dict for a registered model or the user's own
``pkg.module:factory``), the data gives the teacher's input normalization, classes and real test split,
and the recipe's student is the adversarial method's probe.
"""

from __future__ import annotations

import json
from pathlib import Path

from distil.config import Recipe
from distil.data.bundle import DataBundle
from distil.errors import ConfigError, DataError
from distil.run.pipeline import load_data
from distil.synth.store import write_synthetic
from distil.synth.synthesize import Progress, SynthesisConfig, synthesize
from distil.train.build import build_model
from distil.train.checkpoint import checkpoint_paths


def synthesize_for_recipe(
    recipe: Recipe, out: str | Path, cfg: SynthesisConfig, *, progress: Progress | None = None
) -> Path:
    """Synthesise `cfg.count` inputs from the recipe's trained teacher and write them as the folder `out`.

    Args:
        recipe: its teacher (with a checkpoint), data and student.
        out: the folder to create (see `distil.synth.store`); it must not exist.
        cfg: method, count, seed and the method's settings.
        progress: progress callback (done, total).

    Returns:
        The written transfer.npz.

    Raises:
        ConfigError: no teacher checkpoint, or an unknown method.
        DataError: `out` exists, or the data's normalization differs from the teacher checkpoint's.
        ModelError: a method that does not apply to the teacher (no BatchNorm for DeepInversion).
    """
    if not recipe.teacher.checkpoint:
        raise ConfigError(
            "synthesis needs a trained teacher: pass --teacher PATH (a distil checkpoint, or a .safetensors "
            "state_dict with --set teacher.model=NAME or pkg.module:factory)."
        )
    if Path(out).exists():  # before any work
        raise DataError(f"{out} exists; choose a new --out folder (a synthetic set is never overwritten).")
    data = load_data(recipe)
    teacher, _ = build_model(recipe.teacher, data, trust_code=recipe.trust_code)
    check_teacher_normalization(recipe.teacher.checkpoint, data)
    student = None
    if cfg.method == "adversarial" or cfg.deepinversion.competition_weight > 0:
        student, _ = build_model(recipe.student, data, seed=cfg.seed, trust_code=recipe.trust_code)
    synthetic = synthesize(
        teacher, tuple(data.input_shape), data.num_classes, cfg, student=student, progress=progress
    )
    return write_synthetic(
        out,
        synthetic,
        data,
        teacher=str(recipe.teacher.checkpoint),
        # A distil checkpoint names its own architecture; a state_dict is the recipe's teacher.model.
        extra={"recipe": recipe.name, "teacher_model": recipe.teacher.model},
    )


def check_teacher_normalization(checkpoint: str, data: DataBundle) -> None:
    """Refuse data whose normalization differs from the one a distil checkpoint's sidecar records.

    The synthetic inputs are made in the teacher's input space and written with `data`'s mean/std; other
    statistics (another dataset, another `data.limit`) would hand the student's loop different tensors.
    A plain state_dict has no sidecar and is not checked.

    Raises:
        DataError: the recorded mean/std differ from the data's by more than 1e-4.
    """
    _, sidecar = checkpoint_paths(checkpoint)
    if not sidecar.is_file():
        return
    recorded = json.loads(sidecar.read_text(encoding="utf-8")).get("data") or {}
    mean, std = recorded.get("mean"), recorded.get("std")
    if mean is None or std is None:
        return
    pairs = list(zip([*mean, *std], [*data.mean, *data.std], strict=False))
    if len(mean) != len(data.mean) or any(abs(a - b) > 1e-4 for a, b in pairs):
        raise DataError(
            f"the teacher {checkpoint} was trained on inputs normalized with mean {mean}, std {std}, but "
            f"data {data.name!r} as this recipe reads it gives mean {list(data.mean)}, std {list(data.std)}. "
            "Fix: read the teacher's dataset with the settings it was trained with (data.name, data.root, "
            "data.limit, data.val_fraction)."
        )
