"""Build a model for a dataset from a ModelConfig: fresh, from a distil checkpoint, or a plain state_dict."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.config import ModelConfig
from distil.data import DataBundle
from distil.errors import CheckpointError, ConfigError, DataError, ModelError
from distil.models import build_from_spec, model_spec
from distil.models.hf import resolve_from_teacher
from distil.train.checkpoint import (
    load_checkpoint,
    load_state_dict_file,
    load_state_dict_strict,
)


def spec_for(cfg: ModelConfig, data: DataBundle) -> dict[str, Any]:
    """The architecture spec of `cfg.model` sized for `data` (channels, image size, classes).

    Feature vectors (F,) are sized as F channels of a 1x1 image (see `DataBundle.in_channels`). An embedding
    student may have its own width (`ModelConfig.embedding_dim`): the loss's projection maps it onto the
    teacher's embedding (`distil.losses.embedding`).
    """
    return model_spec(
        cfg.model,
        num_classes=cfg.embedding_dim or data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        **cfg.kwargs,
    )


def _tabular_hint(data: DataBundle) -> str:
    return (
        f"dataset {data.name!r} holds feature vectors of shape {data.input_shape}, not images: use a model "
        "for (N, F) inputs such as 'mlp' (e.g. --set teacher.model=mlp --set student.model=mlp), or a "
        "'pkg.module:factory' of your own."
    )


def warn_if_standardized_twice(model: nn.Module, name: str, data: DataBundle) -> None:
    """Warn when a model that normalizes its own input (`normalizes_own_input`, e.g. CREPE's per-frame
    normalization) gets data standardized per position (`data.normalize: auto` on feature vectors): a
    per-position shift and scale is not undone by normalizing each sample, so a pretrained model sees
    inputs it was never trained on."""
    if not getattr(model, "normalizes_own_input", False):
        return
    if len(data.mean) > 1 and (any(m != 0.0 for m in data.mean) or any(s != 1.0 for s in data.std)):
        warnings.warn(
            f"{name} normalizes each input itself, but {data.name!r} was standardized per position "
            "(data.normalize: auto), which its own normalization does not undo. Fix: data.normalize=none.",
            stacklevel=2,
        )


def _check_takes_vectors(model: nn.Module, name: str, data: DataBundle) -> None:
    """Fail before training when a model (a conv net, typically) cannot run on (N, F) inputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(data.train.head(2))
    except (RuntimeError, ValueError) as exc:
        raise DataError(
            f"model {name!r} cannot run on this data ({str(exc).splitlines()[0]}); {_tabular_hint(data)}"
        ) from None
    finally:
        model.train(was_training)


def check_checkpoint_tokenizer(path: str, meta: dict[str, Any], data: DataBundle) -> None:
    """Refuse a language-model checkpoint trained with another tokenizer than the data's.

    Token-level distillation and every metric compare distributions over one vocabulary, so the teacher,
    the student and the data must tokenize alike (`distil.data.tokenize.check_same_tokenizer`).

    Raises:
        ConfigError: naming both tokenizers and the fix.
    """
    extra = meta.get("data", {}).get("extra", {}) or {}
    fingerprint, vocab = extra.get("tokenizer"), extra.get("vocab_size")
    if fingerprint is None:  # not trained on distil's text data: only the vocabulary size can be checked
        return
    if fingerprint != data.extra.get("tokenizer") or str(vocab) != data.extra.get("vocab_size"):
        raise ConfigError(
            f"checkpoint {path!r} was trained with tokenizer {fingerprint} (vocabulary {vocab}), but dataset "
            f"{data.name!r} is tokenized with {data.extra.get('tokenizer')} (vocabulary "
            f"{data.extra.get('vocab_size')}); a teacher, its student and the data must share one tokenizer "
            "(token-level distillation compares distributions over one vocabulary). Set data.tokenizer to "
            "the checkpoint's tokenizer, or use a checkpoint trained with this one."
        )


def check_checkpoint_task(path: str, meta: dict[str, Any], data: DataBundle) -> None:
    """Refuse a checkpoint trained for another task than the data's (`distil.data.targets`).

    A sidecar records ``data.task`` only for tasks other than classification and language modelling, so a
    classifier (softmax over classes) given multilabel data, or a multilabel model (a sigmoid per label)
    given class labels, is told apart before any output is compared.

    Raises:
        DataError: naming both tasks and the fix.
    """
    recorded = (meta.get("data") or {}).get("task")
    ours = None if data.task in ("classification", "language-modeling") else data.task
    if recorded == ours:
        return
    trained = recorded or "classification (one class per sample)"
    raise DataError(
        f"checkpoint {path!r} was trained for {trained}, but dataset {data.name!r} is {data.task} data "
        f"({'class indices' if data.task == 'classification' else 'float label rows'}); its outputs mean "
        "something else. Use a checkpoint trained on this kind of labels, or give the data the labels it "
        "was trained on (data.task names the task: docs/tasks.md)."
    )


def fit_classifier_to_text(model: nn.Module, name: str, data: DataBundle) -> None:
    """A Hugging Face sequence classifier for classified text: check it reads the data's ids, name its labels.

    Its vocabulary must be the tokenizer's, and its ``pad_token_id`` the id the data pads with
    (``extra["pad_id"]``): the classifier masks exactly the positions holding that id, so another pad id
    would let it attend to the padding (or mask real tokens). The data's class names become the config's
    ``id2label``/``label2id``, so the saved ``NAME-hf/`` folder knows them.

    Raises:
        ModelError: a vocabulary or pad id that differs from the data's, with the fix.
    """
    from distil.models.hf import SeqClassifier
    from distil.models.recurrent import LSTMClassifier

    if isinstance(model, LSTMClassifier) and data.vocab_size is not None and not data.is_tokens:
        _fit_lstm_classifier(model, name, data)
        return
    if not isinstance(model, SeqClassifier) or data.vocab_size is None or data.is_tokens:
        return
    config = model.config
    hf: Any = model.hf
    vocab = int(hf.get_input_embeddings().weight.shape[0])
    if vocab != data.vocab_size:
        raise ModelError(
            f"{name}: the classifier's vocabulary is {vocab} but dataset {data.name!r} is tokenized into "
            f"{data.vocab_size} ids ({data.extra.get('tokenizer')}); set config.vocab_size: {data.vocab_size} "
            "(or use the model's own tokenizer, tokenizer: hf:DIR)."
        )
    pad = data.extra.get("pad_id")
    if pad is not None and config.pad_token_id != int(pad):
        raise ModelError(
            f"{name}: the classifier's pad_token_id is {config.pad_token_id} but dataset {data.name!r} pads "
            f"with id {pad}; the model masks its own pad id, so it would attend to the padding. Set "
            f"config.pad_token_id: {pad} in the model kwargs."
        )
    if data.class_names:
        config.id2label = dict(enumerate(data.class_names))
        config.label2id = {label: i for i, label in enumerate(data.class_names)}


def _fit_lstm_classifier(model: Any, name: str, data: DataBundle) -> None:
    """An ``lstm-classifier`` must read the data's ids and pool without its padding (as a SeqClassifier).

    Raises:
        ModelError: a vocabulary or pad id that differs from the data's, with the kwarg that fixes it.
    """
    if model.vocab_size != data.vocab_size:
        raise ModelError(
            f"{name}: the model's vocabulary is {model.vocab_size} but dataset {data.name!r} is tokenized into "
            f"{data.vocab_size} ids ({data.extra.get('tokenizer')}); set kwargs.vocab_size: {data.vocab_size}."
        )
    pad = data.extra.get("pad_id")
    if pad is not None and model.pad_id != int(pad):
        raise ModelError(
            f"{name}: the model's pad_id is {model.pad_id} but dataset {data.name!r} pads with id {pad}; the "
            f"model pools every position not holding its pad id, so it would read the padding. Set "
            f"kwargs.pad_id: {pad}."
        )


def build_model(
    cfg: ModelConfig,
    data: DataBundle,
    *,
    seed: int | None = None,
    trust_code: bool = False,
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Create the model of `cfg` for `data`, loading `cfg.checkpoint` when set.

    A distil checkpoint (NAME.safetensors + NAME.json) brings its own architecture; any other weights
    file (.safetensors, .pt, .pth) is loaded strictly into `cfg.model` built for `data`. `cfg` is the
    user's own choice, so the checkpoint's sidecar may name the factory `cfg.model` names, and no other
    user factory unless `trust_code`.

    Args:
        cfg: model name, kwargs and optional checkpoint.
        data: the dataset the model is for.
        seed: seeds the random initialisation (so two students can start identically).
        trust_code: let the checkpoint's sidecar name any ``pkg.module:factory`` (trust its author), and
            a Hugging Face directory whose kwargs say ``trust_remote_code: true`` run its own code.
        teacher: the built teacher, for a student whose kwargs say ``from_teacher`` (a Hugging Face
            student derived from the teacher's config, `distil.models.hf.resolve_from_teacher`).

    Returns:
        (model, spec).

    Raises:
        CheckpointError: the checkpoint is missing, unsafe, corrupt or does not fit, or its sidecar names
            a factory that neither `cfg.model` nor `trust_code` allows (UntrustedCodeError).
        DataError: a checkpoint trained for another class count.
    """
    if seed is not None:
        torch.manual_seed(seed)
    ckpt = cfg.checkpoint
    if ckpt and (Path(ckpt).with_suffix(".json").is_file() or Path(ckpt).is_dir()):
        model, meta = load_checkpoint(ckpt, trust_code=trust_code, trusted_models=[cfg.model])
        spec = meta["spec"]
        if data.vocab_size is not None:
            check_checkpoint_tokenizer(ckpt, meta, data)
        check_checkpoint_task(ckpt, meta, data)
        trained_classes = meta.get("data", {}).get("num_classes", spec.get("num_classes"))
        if trained_classes != data.num_classes:
            raise DataError(
                f"checkpoint {ckpt!r} predicts {trained_classes} classes but dataset {data.name!r} has "
                f"{data.num_classes}; use a checkpoint trained on this dataset."
            )
        fit_classifier_to_text(model, cfg.model, data)
        warn_if_standardized_twice(model, cfg.model, data)
        return model, spec
    if "from_teacher" in cfg.kwargs:
        if teacher is None:
            raise ModelError(
                f"{cfg.model}: kwargs.from_teacher is for the student (derived from the teacher)."
            )
        cfg = cfg.model_copy(update={"kwargs": resolve_from_teacher(cfg.kwargs, teacher)})
    try:
        spec = spec_for(cfg, data)
        # The user's own model name is trusted; --trust-code also lets a Hugging Face directory they
        # name run its own code (trust_remote_code: true in the kwargs asks for it).
        model = build_from_spec(spec, trusted=True if trust_code else [cfg.model])
    except ModelError as exc:
        if not data.is_tabular:
            raise
        # The build error comes first (it may be about kwargs); the hint says why a conv net cannot work.
        raise ModelError(f"{exc} Note: {_tabular_hint(data)}") from None
    if data.is_tabular:
        _check_takes_vectors(model, cfg.model, data)
    fit_classifier_to_text(model, cfg.model, data)
    if ckpt:
        if not Path(ckpt).exists():
            raise CheckpointError(
                f"checkpoint {ckpt!r} does not exist; check the path (no random teacher is used)"
            )
        load_state_dict_strict(model, load_state_dict_file(ckpt), source=ckpt)
    warn_if_standardized_twice(model, cfg.model, data)
    return model, spec
