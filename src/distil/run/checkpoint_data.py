"""Commands on an existing checkpoint: which data they read (:class:`DataOptions`), loading both, and
`distil eval`'s entry point (:func:`evaluate_checkpoint_files`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from distil.run.options import setting

# `distil eval --outputs`: check that models emit logits, or take them as logits.
OUTPUT_CHECKS = ("check", "logits")

if TYPE_CHECKING:
    from torch import nn

    from distil.data import DataBundle
    from distil.measure import ModelMetrics


@dataclass(frozen=True)
class DataOptions:
    """The dataset a command on an existing checkpoint reads, and its reader options.

    Every field left at None means "what the checkpoint recorded": a distil checkpoint's sidecar names
    its dataset and, for an image folder, the preprocessing it was trained with.
    """

    name: str | None = setting(None, "Dataset name (default: the one the checkpoint was trained on).")
    root: str | None = setting(None, "Dataset directory or file.")
    limit: int | None = setting(None, "Use at most this many training samples (fine-tuning, calibration).")
    image_size: int | None = setting(
        None, "Image folders: resize + center-crop to N x N (default: what the checkpoint recorded)."
    )
    channels: Literal["auto", "L", "RGB"] | None = setting(
        None, "Image folders: L or RGB (default: what the checkpoint recorded)."
    )
    on_bad_sample: Literal["error", "skip"] | None = setting(
        None, "Image folders: skip (and count) corrupt images (default: what the checkpoint recorded)."
    )
    normalize: Literal["auto", "none"] | None = setting(
        None, "npz / npy-dir: none keeps the values unnormalized (default: what the checkpoint recorded)."
    )

    def reader_options(self) -> dict[str, Any]:
        """The reader options given here (None: not given, the recorded one applies)."""
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "on_bad_sample": self.on_bad_sample,
            "normalize": self.normalize,
        }


def recipe_reader_options(recipe: Any) -> dict[str, Any]:
    """The image reader options a recipe's data section gives (None: not given).

    Args:
        recipe: a :class:`distil.config.Recipe`; its ``data.image_size/channels/on_bad_sample`` apply.
    """
    d = recipe.data
    return {
        "image_size": d.image_size,
        "channels": d.channels,
        "on_bad_sample": d.on_bad_sample,
        "normalize": d.normalize,
    }


def load_checkpoint_and_data(
    checkpoint: str,
    data: DataOptions,
    model_name: str | None = None,
    *,
    trust_code: bool = False,
) -> tuple[nn.Module, dict[str, Any], DataBundle]:
    """Load a checkpoint and the dataset it was trained on (or `data.name`), with a validation split.

    A distil checkpoint brings its architecture, dataset and reader options (an image folder's
    image_size/channels; options given in `data` win, a contradicting one is an error); a plain
    state_dict needs `model_name` (--model) and `data.name` (--data). The sidecar chooses no code: a
    factory or dataset function it names is refused unless it is `model_name` or `trust_code` is set.

    Returns:
        (the model in eval mode, its sidecar metadata, the data with a 10% validation split).

    Raises:
        ConfigError: `model_name` for a plain state_dict without `data.name`, or reader options that
            contradict the recorded ones.
        CheckpointError: a missing, corrupt or unfitting checkpoint.
    """
    from distil.run.evaluate import load_any, load_checkpoint_data, require_data_for_model
    from distil.train.checkpoint import read_sidecar, trained_dataset

    require_data_for_model(model_name, data.name, checkpoint)
    name = data.name or trained_dataset(read_sidecar(checkpoint), trust_code=trust_code)
    bundle = load_checkpoint_data(
        checkpoint, name, data.root, val_fraction=0.1, limit=data.limit, options=data.reader_options()
    )
    model, meta, _ = load_any(checkpoint, bundle, model_name, trust_code=trust_code)
    return model.eval(), meta, bundle


@dataclass(frozen=True)
class EvalOptions:
    """What `distil eval` measures: which checkpoints, on which data."""

    checkpoints: tuple[str, ...] = setting((), "distil checkpoints; the first is the reference (teacher).")
    data: DataOptions = field(
        default_factory=DataOptions,
        metadata={"doc": "The dataset read and its reader options (default: the checkpoint's)."},
    )
    latency: bool = setting(True, "Measure latency and throughput.")
    model_name: str | tuple[str | None, ...] | None = setting(
        None,
        "The architecture of plain state_dict files: one name for every checkpoint, or one per checkpoint.",
    )
    trust_code: bool = setting(False, "Let the checkpoints' sidecars name Python code to import.")
    outputs: str = setting(
        "check",
        "check: refuse a classifier or multilabel model whose outputs look like probabilities (a final "
        "softmax or sigmoid), which the metrics would score as logits; logits: the outputs are logits, "
        "measure them as they are.",
    )


@dataclass(frozen=True)
class EvalOutcome:
    """What `evaluate_checkpoint_files` measured.

    Attributes:
        metrics: one row per checkpoint, in order, the first the reference.
        data_name: the dataset they were measured on.
        test_samples: the size of its test split.
    """

    metrics: list[ModelMetrics]
    data_name: str
    test_samples: int


def evaluate_checkpoint_files(options: EvalOptions) -> EvalOutcome:
    """Load the data the first checkpoint was trained on (or `options.data.name`) and measure them all.

    Raises:
        ConfigError: no checkpoints, a plain state_dict without a dataset, or model names that do not
            match the checkpoints.
        CheckpointError: a checkpoint that cannot be loaded.
        NotLogitsError: `options.outputs` "check" and a model whose outputs look like probabilities.
    """
    from distil.errors import ConfigError
    from distil.registry import unknown_name_message
    from distil.run.evaluate import (
        evaluate_checkpoints,
        load_checkpoint_data,
        per_path_models,
        require_data_for_model,
    )
    from distil.train.checkpoint import read_sidecar, trained_dataset

    paths = list(options.checkpoints)
    if not paths:
        raise ConfigError("no checkpoints to evaluate: give at least one (the first is the reference).")
    models = per_path_models(options.model_name, paths)
    require_data_for_model(models[0], options.data.name, paths[0])
    name = options.data.name or trained_dataset(read_sidecar(paths[0]), trust_code=options.trust_code)
    bundle = load_checkpoint_data(
        paths[0], name, options.data.root, val_fraction=0.0, options=options.data.reader_options()
    )
    if options.outputs not in OUTPUT_CHECKS:
        raise ConfigError(unknown_name_message("outputs", options.outputs, OUTPUT_CHECKS))
    metrics = evaluate_checkpoints(
        paths,
        bundle,
        measure_latency=options.latency,
        model_name=models,
        trust_code=options.trust_code,
        check_outputs=options.outputs == "check",
    )
    return EvalOutcome(metrics, bundle.name, len(bundle.test))
