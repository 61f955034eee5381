"""Models that already exist: load any checkpoint (distil's, or a plain state_dict) and measure them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.data import DataBundle, load_dataset
from distil.data.registry import ARITHMETIC_OPTIONS
from distil.data.targets import outputs_are_logits
from distil.errors import DataError
from distil.measure import ModelMetrics, measure, time_models
from distil.measure.model import PREDICT_BATCH_SIZE, TOKEN_BATCH_SIZE
from distil.run.lm_report import lm_token_bytes, tokenizer_of
from distil.teachers.outputs import check_teacher_outputs
from distil.train.build import build_model, check_checkpoint_task

# `distil eval`'s escape from the probability check (`evaluate_checkpoints(check_outputs=False)`).
OUTPUTS_ESCAPE = "--outputs logits"


def require_data_for_model(model_name: str | None, data: str | None, checkpoint: str) -> None:
    """A plain state_dict (given with --model) records no dataset: --data must name it.

    A distil checkpoint records its dataset, so `--model` there (naming the factory its sidecar may
    use) needs no --data.

    Raises:
        ConfigError: --model without --data for a file without a distil sidecar.
    """
    from distil.errors import ConfigError
    from distil.train.checkpoint import checkpoint_paths

    has_sidecar = checkpoint_paths(checkpoint)[1].is_file() or Path(checkpoint).is_dir()
    if model_name is not None and data is None and not has_sidecar:
        raise ConfigError(
            "--model loads plain state_dict files, which do not record their dataset: add --data NAME"
        )


IMAGE_OPTIONS = ("image_size", "channels", "on_bad_sample")
"""Reader options a checkpoint's sidecar records (``data.options``) and later commands reuse."""
ARRAY_OPTIONS = ("normalize",)
"""The npz / npy-dir readers' recorded option: a model trained on unnormalized values is measured on them."""
TEXT_OPTIONS = (
    "block_size",
    "tokenizer",
    "errors",
    "split_by",
    "newlines",
    "text_field",
    "label_field",
    "chat_template",
    "on_long",
)
"""The same for text (language-modelling blocks and classified documents): the samples' length, ids,
splits and fields."""
_MUST_AGREE = ("image_size", "channels")


def trained_data_options(
    checkpoint: str, dataset: str, given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The reader options to read `dataset` with for `checkpoint`: the given ones over the recorded ones.

    A checkpoint trained on an image folder records the preprocessing it saw (``image_size``,
    ``channels``, ``on_bad_sample`` in its sidecar's ``data.options``), so `distil eval`/`export`/
    `prune`/`quantize`/`compress`/`shrink` on the same folder decode the same samples without being told
    again. A given value (recipe or CLI) wins; a given ``image_size``/``channels`` that contradicts the
    recorded one is an error, since the model would see other inputs than it was trained on (``channels:
    auto`` contradicts nothing). Options the dataset's reader does not take are left out, so a checkpoint
    measured on another dataset (``--data``) is not given an image folder's options.

    Args:
        checkpoint: the checkpoint path (a plain state_dict without a sidecar records nothing).
        dataset: the dataset the command reads.
        given: options from the recipe or command line; None values mean not given.

    Returns:
        The options for ``load_dataset(..., options=...)`` (None values are not given).

    Raises:
        ConfigError: a given image_size or channels differs from the recorded one.
    """
    from distil.data import DATASETS
    from distil.errors import ConfigError
    from distil.train.checkpoint import checkpoint_paths, read_sidecar

    chosen = {k: v for k, v in (given or {}).items() if v is not None}
    sidecar = checkpoint_paths(checkpoint)[1]
    data = read_sidecar(checkpoint).get("data") if sidecar.is_file() or Path(checkpoint).is_dir() else None
    recorded = data.get("options") if isinstance(data, dict) else None
    if not isinstance(recorded, dict) or ":" in dataset or dataset not in DATASETS:
        return chosen
    accepted = inspect.signature(DATASETS.get(dataset)).parameters
    reused = (*IMAGE_OPTIONS, *ARRAY_OPTIONS, *TEXT_OPTIONS, *ARITHMETIC_OPTIONS)
    merged = {k: v for k, v in recorded.items() if k in reused and k in accepted and v is not None}
    for key in _MUST_AGREE:
        value = chosen.get(key)
        if (
            value is None
            or key not in merged
            or value == merged[key]
            or (key == "channels" and value == "auto")
        ):
            continue
        raise ConfigError(
            f"data.{key}={value!r} was given, but {checkpoint} was trained on images read with "
            f"{key}={merged[key]!r} (its sidecar's data.options); the model would see other inputs than it "
            f"learnt. Leave {key} out to reuse the recorded value, or set it to {merged[key]!r}."
        )
    merged.update({k: v for k, v in chosen.items() if not (k == "channels" and v == "auto" and k in merged)})
    return merged


def load_checkpoint_data(
    checkpoint: str,
    dataset: str,
    root: str | Path | None,
    *,
    val_fraction: float,
    limit: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> DataBundle:
    """`load_dataset` for a command on an existing checkpoint, with its recorded reader options.

    See :func:`trained_data_options` for how given and recorded options combine.
    """
    merged = trained_data_options(checkpoint, dataset, options)
    task = recorded_task(checkpoint, dataset)
    try:
        return load_dataset(dataset, root, val_fraction=val_fraction, limit=limit, options=merged, task=task)
    except DataError as exc:
        if task is None:
            raise
        raise DataError(
            f"checkpoint {checkpoint} was trained for {task} (its sidecar's data.task), but these labels do "
            f"not fit it: {exc} Evaluate it on data of its task."
        ) from None


def recorded_task(checkpoint: str, dataset: str) -> str | None:
    """The task a checkpoint's sidecar records for its data (``data.task``, written only for tasks other
    than classification and language modelling) when `dataset` is the one it was trained on; else None
    (the data's own task). A recipe's ``data.task`` (e.g. regression of 0/1 targets) so carries over."""
    from distil.train.checkpoint import checkpoint_paths, read_sidecar

    if not (checkpoint_paths(checkpoint)[1].is_file() or Path(checkpoint).is_dir()):
        return None
    data = read_sidecar(checkpoint).get("data")
    if not isinstance(data, dict) or data.get("name") != dataset:
        return None
    task = data.get("task")
    return task if isinstance(task, str) else None


def load_any(
    path: str, data: DataBundle, model_name: str | None = None, *, trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any], Path]:
    """A model from a distil checkpoint, or from a plain state_dict loaded into `model_name`.

    A path with a distil sidecar brings its own architecture; any other weights file (a plain state_dict
    saved elsewhere, .pt/.pth/.safetensors) is loaded into `model_name` (a registered name or
    `pkg.module:factory`) built for `data`. A sidecar may name `model_name` as its factory, and no other
    ``pkg.module:factory`` unless `trust_code`.

    Returns:
        (model, its sidecar metadata (for a plain state_dict: its spec and `data`), the weights file).

    Raises:
        CheckpointError: a plain state_dict without `model_name`, or weights that do not fit.
    """
    from distil.api import check_classes
    from distil.config import ModelConfig
    from distil.errors import CheckpointError
    from distil.train.checkpoint import checkpoint_paths, load_checkpoint

    weights, sidecar = checkpoint_paths(path)
    if sidecar.is_file() or Path(path).is_dir():
        model, meta = load_checkpoint(
            path, trust_code=trust_code, trusted_models=[model_name] if model_name else []
        )
        check_checkpoint_task(path, meta, data)  # a multilabel model measured as a classifier, or back
    elif model_name is not None:
        model, spec = build_model(ModelConfig(model=model_name, checkpoint=path), data, trust_code=trust_code)
        meta, weights = {"spec": spec, "data": data.describe()}, Path(path)
    else:
        raise CheckpointError(
            f"{path!r} has no distil sidecar ({sidecar.name}), so its architecture is unknown. If it is a "
            "plain state_dict, name its model: --model NAME or --model pkg.module:factory."
        )
    check_classes(model, data, f"model in {path!r}")
    return model, meta, weights


def per_path_models(model_name: str | Sequence[str | None] | None, paths: Sequence[str]) -> list[str | None]:
    """One model name per path: a single name (or None) applies to all, a list is matched by position.

    Raises:
        ConfigError: a list with neither one name nor one per path.
    """
    if model_name is None or isinstance(model_name, str):
        return [model_name] * len(paths)
    names = list(model_name)
    if len(names) == 1:
        return names * len(paths)
    if len(names) != len(paths):
        from distil.errors import ConfigError

        raise ConfigError(
            f"{len(names)} model names for {len(paths)} checkpoints: give one model for all of them, or one "
            "per checkpoint in the same order (a distil checkpoint's own sidecar names its architecture, so "
            "any name works in its place)."
        )
    return names


def evaluate_checkpoints(
    paths: list[str],
    data: DataBundle,
    *,
    measure_latency: bool = True,
    model_name: str | Sequence[str | None] | None = None,
    trust_code: bool = False,
    check_outputs: bool = True,
) -> list[ModelMetrics]:
    """Measure checkpoints on `data.test`; the first one is the reference (teacher) for agreement.

    Language models are measured per token (perplexity) and, where the data's tokenizer is byte-level, per
    byte too (``bits_per_byte``, ``byte_perplexity``), so checkpoints with other tokenizers compare.

    A path with a distil sidecar brings its own architecture; any other weights file (a plain state_dict
    saved elsewhere, .pt/.pth/.safetensors) is loaded into its model name (a registered name or
    `pkg.module:factory`) built for `data`: `model_name` is one name for every path, or one per path in
    order. A sidecar may name its path's model as its factory, and no other ``pkg.module:factory``
    unless `trust_code`.

    With `check_outputs`, a classifier or multilabel model whose outputs on the first training samples all lie
    in [0, 1] (a final softmax or sigmoid) is refused: its metrics read outputs as logits, so probabilities
    would be scored silently wrong (every sigmoid label "on").

    Raises:
        ConfigError: a list of model names whose length differs from the paths'.
        NotLogitsError: a model whose outputs look like probabilities (`distil.teachers.outputs`).
    """
    metrics: list[ModelMetrics] = []
    models: list[torch.nn.Module] = []
    reference: torch.Tensor | None = None
    tokens = data.is_tokens
    shape = tuple(data.test.sample_shape) if tokens else data.input_shape
    vocab = data.num_classes if tokens else data.vocab_size
    token_bytes = lm_token_bytes(data.task, tokenizer_of(data.extra, trust_code=trust_code))
    for path, name in zip(paths, per_path_models(model_name, paths), strict=True):
        model, _, weights = load_any(path, data, name, trust_code=trust_code)
        if check_outputs and outputs_are_logits(data.task):
            check_teacher_outputs(model, data, f"model in {path!r}", escape=OUTPUTS_ESCAPE)
        measured = measure(
            model.eval(),
            data.test,
            data.task,
            name=Path(path).stem,
            input_shape=shape,
            reference=reference,
            weights_path=weights,
            latency=False,  # timed below, interleaved, so that the table's latencies compare
            batch_size=TOKEN_BATCH_SIZE if tokens else PREDICT_BATCH_SIZE,
            vocab_size=vocab,
            token_bytes=token_bytes,
        )
        reference = measured.predictions if reference is None else reference
        metrics.append(measured.metrics)
        models.append(model)
    if measure_latency:
        time_models(metrics, models, shape, throughput=not tokens, vocab_size=vocab)
    return metrics
