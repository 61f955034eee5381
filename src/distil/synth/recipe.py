"""`synthesize_for_recipe`: a recipe's teacher and data in, a synthetic transfer-set folder out.

What `distil synthesize` runs: the teacher comes from the recipe (`teacher.model` + `teacher.checkpoint`:
a distil checkpoint, or a .safetensors state_dict for a registered model or the user's own
``pkg.module:factory``), the data gives the teacher's input normalization, classes and real test split,
and the recipe's student is the adversarial method's probe. Without the data (``no_data``: the user has
the model, not its data), those facts come from the checkpoint's sidecar or the user's options
(`distil.synth.facts`), and the real test split is the user's own ``--test`` file or none.
"""

from __future__ import annotations

import json
from pathlib import Path

from distil.config import Recipe
from distil.data.bundle import DataBundle
from distil.errors import CheckpointError, ConfigError, DataError
from distil.run.pipeline import load_data
from distil.synth.facts import (
    GivenFacts,
    check_teacher_fits,
    describe_source,
    facts_bundle,
    read_test_npz,
    recorded_facts,
    resolve_facts,
)
from distil.synth.store import write_synthetic
from distil.synth.synthesize import Progress, SynthesisConfig, synthesize
from distil.train.build import build_model
from distil.train.checkpoint import checkpoint_paths


def synthesize_for_recipe(
    recipe: Recipe,
    out: str | Path,
    cfg: SynthesisConfig,
    *,
    progress: Progress | None = None,
    no_data: GivenFacts | None = None,
    test: str | Path | None = None,
) -> Path:
    """Synthesise `cfg.count` inputs from the recipe's trained teacher and write them as the folder `out`.

    Args:
        recipe: its teacher (with a checkpoint), data and student.
        out: the folder to create (see `distil.synth.store`); it must not exist.
        cfg: method, count, seed and the method's settings.
        progress: progress callback (done, total).
        no_data: read no data: the teacher's input shape, classes and normalization come from its
            checkpoint's sidecar and these facts the user gave (None: read the recipe's data).
        test: with `no_data`, an .npz of real labelled inputs (x_test/y_test or x/y) written as the
            transfer set's test split; without it the set has no real test data and says so.

    Returns:
        The written transfer.npz.

    Raises:
        ConfigError: no teacher checkpoint, an unknown method, `test` without `no_data`, facts neither
            the sidecar nor `no_data` give, or a teacher that cannot run on the input shape or gives
            another class count (checked on one zero input before any synthesis).
        DataError: `out` exists, the data's normalization differs from the teacher checkpoint's, or a
            `test` file that does not fit the teacher.
        ModelError: a method that does not apply to the teacher (no BatchNorm for DeepInversion).
    """
    if not recipe.teacher.checkpoint:
        raise ConfigError(
            "synthesis needs a trained teacher: pass --teacher PATH (a distil checkpoint, or a .safetensors "
            "state_dict with --set teacher.model=NAME or pkg.module:factory)."
        )
    if Path(out).exists():  # before any work
        raise DataError(f"{out} exists; choose a new --out folder (a synthetic set is never overwritten).")
    if test is not None and no_data is None:
        raise ConfigError(
            "--test is for --no-data: with the teacher's data, its own test split is written. Drop --test, "
            "or add --no-data to synthesise without reading the data."
        )
    if no_data is None:
        data, source = load_data(recipe), f"data {recipe.data.name!r}"
    else:
        data, source = data_from_facts(recipe.teacher.checkpoint, no_data, test)
    teacher, _ = build_model(recipe.teacher, data, trust_code=recipe.trust_code)
    if no_data is None:
        check_teacher_normalization(recipe.teacher.checkpoint, data)
    check_teacher_fits(teacher, tuple(data.input_shape), data.num_classes, source)
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
        extra={"recipe": recipe.name, "teacher_model": recipe.teacher.model, "facts_from": source},
    )


def data_from_facts(checkpoint: str, given: GivenFacts, test: str | Path | None) -> tuple[DataBundle, str]:
    """The teacher's data without reading it: its facts (sidecar, `given`) and the user's `test` split.

    Returns:
        (a bundle with no training samples, where its facts came from).

    Raises:
        CheckpointError: the checkpoint file does not exist.
        ConfigError, DataError: as `resolve_facts` and `read_test_npz`.
    """
    weights, _ = checkpoint_paths(checkpoint)
    if not Path(checkpoint).exists() and not weights.is_file():
        raise CheckpointError(f"teacher checkpoint {checkpoint} does not exist; check --teacher.")
    recorded = recorded_facts(checkpoint)
    facts = resolve_facts(given, recorded, checkpoint)
    split = read_test_npz(test, facts) if test is not None else None
    return facts_bundle(facts, split), describe_source(given, recorded)


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
