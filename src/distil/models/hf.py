"""Hugging Face `transformers` language models behind distil's model contract (``pip install 'distil[lm]'``).

A :class:`CausalLM` wraps a ``transformers`` causal LM so that the rest of distil sees what it sees for
any model: token ids (B, T) in, logits (B, T, V) out; a :class:`SeqClassifier` wraps a sequence
classifier: ids (B, T) in, logits (B, K) out. The registered models ``hf-causal-lm`` and
``hf-seq-classifier`` build one either from a config (random init, e.g. a teacher trained from scratch)
or from a local directory (``path``: a ``save_pretrained`` output). Their specs are plain JSON:

* a config's ``model_type`` picks one of transformers' own classes;
* a directory is read with ``local_files_only`` and safetensors weights only (a pickled
  ``pytorch_model.bin`` is refused), and a config whose ``auto_map`` names the directory's own code is
  refused unless the spec sets ``trust_remote_code`` *and* the user trusts it (``--trust-code``): see
  :func:`distil.models.registry.check_trusted`. Nothing is ever downloaded.

Example:
    >>> from distil.models import create_model
    >>> lm = create_model("hf-causal-lm", num_classes=259, config={"model_type": "llama", "hidden_size": 64})
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distil.errors import ModelError
from distil.hf_common import quiet_progress, require_transformers
from distil.models.registry import register_model

# Small defaults so that a config naming only model_type builds a model that trains on a CPU.
_SMALL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 1024,
}


@dataclass(frozen=True)
class HeadOutput:
    """A causal LM's output one step before its logits: the final hidden states and the head.

    Attributes:
        hidden: (B, T, H) final hidden states (after the final norm).
        weight: (V, H) the output head's weight (the embedding matrix itself when tied).
        bias: (V,) the head's bias, or None.
        dtype: the dtype of the head's matrix product: autocast's when the model ran under autocast,
            else the weight's (what the model's own head would have computed in).
    """

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    dtype: torch.dtype

    @property
    def vocab(self) -> int:
        """V, the width of the logits this head makes."""
        return int(self.weight.shape[0])

    @property
    def positions(self) -> torch.Size:
        """(B, T): the positions the hidden states are for."""
        return self.hidden.shape[:-1]

    def rows(self) -> torch.Tensor:
        """The hidden states as (N, H) rows, N = B * T."""
        return self.hidden.reshape(-1, self.hidden.shape[-1])

    def logits(self) -> torch.Tensor:
        """The whole (B, T, V) logits, as the model would have returned them (the unfused fallback)."""
        w, b = self.weight.to(self.dtype), None if self.bias is None else self.bias.to(self.dtype)
        return F.linear(self.hidden.to(self.dtype), w, b)


def head_output(hidden: torch.Tensor, head: torch.nn.Linear) -> HeadOutput:
    """A `HeadOutput` of `hidden` and the linear `head`, in the dtype autocast (if on) gives the head."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
    return HeadOutput(hidden, head.weight, head.bias, dtype)


class HFModel(nn.Module):
    """A ``transformers`` model behind distil's model contract; the wrapped model is ``.hf``.

    Args:
        hf_model: a ``transformers`` ``PreTrainedModel``.
    """

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    @property
    def config(self) -> Any:
        """The wrapped model's ``transformers`` config."""
        return self.hf.config


class CausalLM(HFModel):
    """A Hugging Face causal LM called as distil calls every model: ``model(input_ids) -> logits``.

    Args:
        hf_model: a ``transformers`` ``PreTrainedModel`` with a language-modelling head.

    The wrapped model stays reachable as ``.hf`` (for ``save_pretrained``, ``generate`` and its config).
    """

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, head: bool = True
    ) -> Any:
        """Logits (B, T, V) for token ids (B, T); the KV cache is off (training and scoring whole blocks).

        ``head=False`` (the fused LM loss, `distil.losses.fused`): the final hidden states and the output
        head instead, as a `distil.losses.fused.HeadOutput`, so the loss makes the logits chunk by chunk.
        """
        if not head:
            hf: Any = self.hf  # a transformers PreTrainedModel: its base model is the decoder stack
            base = hf.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return head_output(base.last_hidden_state, hf.get_output_embeddings())
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits

    def forward_with_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Logits (B, T, V) and the hidden states, one (B, T, H) per layer boundary, in one pass.

        ``hidden[0]`` is the embedding output and ``hidden[i]`` the output of block ``i`` (the last one
        after the final norm, as transformers returns it): ``num_hidden_layers + 1`` tensors. For hooks on
        named modules instead, the blocks are ``hf.model.layers.N`` (llama family) or ``hf.transformer.h.N``
        (gpt2); see :func:`block_names`.
        """
        out = self.hf(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, output_hidden_states=True
        )
        return out.logits, tuple(out.hidden_states)


class SeqClassifier(HFModel):
    """A Hugging Face sequence classifier called as distil calls every model: ``model(input_ids) -> (B, K)``.

    Args:
        hf_model: a ``transformers`` ``PreTrainedModel`` with a sequence-classification head.

    distil's batches carry token ids only (B, T), right-padded with the config's ``pad_token_id`` (see
    :mod:`distil.data.textcls`), so without an explicit `attention_mask` the padding is masked out here:
    ``attention_mask = input_ids != pad_token_id``. Outside distil, give the saved model the same mask
    (an encoder such as BERT would otherwise attend to the padding).
    """

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, K) for token ids (B, T); `attention_mask` None: every non-pad position."""
        if attention_mask is None:
            attention_mask = padding_mask(input_ids, self.config.pad_token_id)
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits


def padding_mask(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor | None:
    """``(input_ids != pad_id)`` as the 0/1 attention mask transformers takes; None when nothing pads."""
    if pad_id is None:
        return None
    return (input_ids != int(pad_id)).long()


def block_names(model: nn.Module) -> list[str]:
    """The module names of a wrapped HF model's transformer blocks, in order (for feature hooks).

    Raises:
        ModelError: `model` is not a wrapped HF model, or its blocks are not one numbered list.
    """
    hf = getattr(model, "hf", None)
    if not isinstance(hf, nn.Module):
        raise ModelError(f"{type(model).__name__} is not a wrapped Hugging Face model (no .hf)")
    stages = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == _num_layers(hf.config)
    ]
    if len(stages) != 1:
        raise ModelError(f"cannot find the one list of transformer blocks in {type(hf).__name__}")
    return [f"{stages[0]}.{i}" for i in range(_num_layers(hf.config))]


def _num_layers(config: Any) -> int:
    return int(config.num_hidden_layers)


def hf_config(config: Mapping[str, Any], vocab_size: int, *, what: str = "hf-causal-lm") -> Any:
    """A ``transformers`` config from a plain dict that names its ``model_type``.

    Raises:
        ModelError: no model_type, an unknown one, or a vocabulary that disagrees with the data's.
    """
    transformers = require_transformers()
    options = dict(config)
    model_type = options.pop("model_type", None)
    if not model_type:
        raise ModelError(
            f"an {what} config needs a model_type, e.g. {{'model_type': 'llama', 'hidden_size': 128}}."
        )
    if "auto_map" in options:
        raise ModelError(
            f"an {what} config may not carry auto_map (it names custom code); a config built from a recipe "
            "uses transformers' own classes. For a directory with its own code use path: DIR with "
            "trust_remote_code: true and --trust-code."
        )
    if options.get("vocab_size", vocab_size) != vocab_size:
        raise ModelError(
            f"the model config's vocab_size {options['vocab_size']} differs from the tokenizer's {vocab_size}; "
            "leave vocab_size out of the config (it comes from the data's tokenizer)."
        )
    options["vocab_size"] = vocab_size
    for key in ("transformers_version", "architectures", "_name_or_path"):
        options.pop(key, None)  # provenance, not architecture (derive_student_config output may hold them)
    try:
        defaults = transformers.AutoConfig.for_model(model_type)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"transformers cannot build a config of model_type {model_type!r}: {exc}") from None
    attribute_map = dict(getattr(type(defaults), "attribute_map", {}))
    if not hasattr(defaults, "intermediate_size") and hasattr(defaults, "n_inner"):
        # gpt2 calls its MLP width n_inner and would silently ignore intermediate_size.
        attribute_map["intermediate_size"] = "n_inner"
        if "intermediate_size" in options:
            options["n_inner"] = options.pop("intermediate_size")
    for key, value in _SMALL_DEFAULTS.items():
        alias = attribute_map.get(key, key)
        if alias == "n_inner":
            continue  # gpt2's default, 4 x hidden, suits any width
        if alias not in options:
            options.setdefault(key, value)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        # A default special id of the original vocabulary (gpt2's 50256) does not exist in a small one.
        default = getattr(defaults, key, None)
        if key not in options and isinstance(default, int) and default >= vocab_size:
            options[key] = None
    try:
        return transformers.AutoConfig.for_model(model_type, **options)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"transformers cannot build a config of model_type {model_type!r}: {exc}") from None


# ------------------------------------------------------------------------------------ local directories
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def read_local_config(path: str | os.PathLike[str], *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The ``config.json`` of a local model directory, checked to be loadable without surprises.

    Args:
        path: a directory written by ``save_pretrained``.
        trust_remote_code: whether the user allows the directory's own Python code (``auto_map``).

    Raises:
        ModelError: no such directory or config, a config that names custom code without trust, or
            weights that are not safetensors (pickles can run code; distil never unpickles them).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(
            f"Hugging Face model directory {str(directory)!r} does not exist; give a local directory written by "
            "save_pretrained (distil never downloads models)."
        )
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{str(directory)!r} has no config.json; it is not a save_pretrained directory.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{str(config_file)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelError(
            f"{str(config_file)!r} names no model_type; transformers cannot pick a class for it."
        )
    if config.get("auto_map") and not trust_remote_code:
        raise ModelError(
            f"{str(config_file)!r} has an auto_map: the model's classes are Python code in that directory, which "
            "distil does not run unless you ask. If you trust its author, set trust_remote_code: true in the "
            "model kwargs and pass --trust-code (trust_code: true in the recipe)."
        )
    has_safetensors = (
        any(directory.glob("*.safetensors")) or (directory / "model.safetensors.index.json").is_file()
    )
    if not has_safetensors:
        pickled = [name for name in _PICKLED if (directory / name).exists()] + [
            p.name for p in directory.glob("pytorch_model-*.bin")
        ]
        found = f" (found {', '.join(sorted(pickled))})" if pickled else ""
        raise ModelError(
            f"{str(directory)!r} has no safetensors weights{found}. distil loads safetensors only: a .bin file is "
            "a pickle, and unpickling can run any code. Convert it where you trust it: "
            "AutoModel.from_pretrained(DIR).save_pretrained(DIR) writes model.safetensors."
        )
    return config


def load_local(
    path: str | os.PathLike[str], *, task: str = "causal-lm", trust_remote_code: bool = False, **options: Any
) -> Any:
    """A ``transformers`` model from a local ``save_pretrained`` directory: local files, safetensors only.

    Args:
        path: the directory.
        task: "causal-lm" (``AutoModelForCausalLM``) or "seq-classifier"
            (``AutoModelForSequenceClassification``).
        trust_remote_code: run the directory's own model code (only when the user asked; a warning says so).
        **options: passed to ``from_pretrained`` (e.g. ``num_labels``).

    Raises:
        ModelError: as :func:`read_local_config`, or transformers cannot load the directory.
    """
    transformers = require_transformers()
    read_local_config(path, trust_remote_code=trust_remote_code)
    auto = {
        "causal-lm": transformers.AutoModelForCausalLM,
        "seq-classifier": transformers.AutoModelForSequenceClassification,
    }[task]
    if trust_remote_code:
        warnings.warn(
            f"running the model code in {str(path)!r} (trust_remote_code): only do this for files whose author "
            "you trust.",
            UserWarning,
            stacklevel=2,
        )
    try:
        with quiet_progress():
            return auto.from_pretrained(
                str(path),
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
                **options,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"transformers cannot load {str(path)!r} as a {task}: {exc}") from None


def _check_vocab(model: Any, vocab_size: int, path: str | os.PathLike[str]) -> None:
    got = int(model.get_input_embeddings().weight.shape[0])
    if got != vocab_size:
        raise ModelError(
            f"the model in {str(path)!r} has a vocabulary of {got} but the data's tokenizer has {vocab_size}; use "
            f"that model's own tokenizer (tokenizer: hf:{path}), whose vocabulary it was trained on."
        )


def _one_source(what: str, config: Any, path: Any) -> None:
    if config is not None and path is not None:
        raise ModelError(
            f"{what}: give either config (build a new model) or path (load a saved one), not both."
        )


@register_model("hf-causal-lm", weights_kwarg="path")
def hf_causal_lm(
    *,
    num_classes: int,
    in_channels: int = 1,
    image_size: int = 1,
    config: Mapping[str, Any] | None = None,
    path: str | None = None,
    trust_remote_code: bool = False,
    from_teacher: Mapping[str, int] | None = None,
) -> CausalLM:
    """A ``transformers`` causal LM, with `num_classes` = vocabulary size: new from `config`, or loaded.

    Args:
        num_classes: the vocabulary size (the data's tokenizer decides it).
        in_channels: unused (token models); kept for the registry's signature.
        image_size: unused (token models); kept for the registry's signature.
        config: ``transformers`` config options including ``model_type`` (default: a 4-layer llama),
            randomly initialised.
        path: a local ``save_pretrained`` directory to load (config and trained weights) instead.
        trust_remote_code: let `path`'s own code run; honoured only with ``--trust-code`` (see
            :func:`distil.models.registry.check_trusted`).
        from_teacher: a student derived from the teacher's config (``{num_hidden_layers: 2}``); the run
            replaces it by the derived ``config`` (:func:`resolve_from_teacher`) before building.
    """
    del in_channels, image_size
    transformers = require_transformers()
    if from_teacher is not None:
        raise ModelError(
            "hf-causal-lm from_teacher needs the teacher, so it is resolved where the teacher is known: "
            "distil.models.hf.resolve_from_teacher(kwargs, teacher) turns it into a config."
        )
    _one_source("hf-causal-lm", config, path)
    if path is not None:
        model = load_local(path, task="causal-lm", trust_remote_code=trust_remote_code)
        _check_vocab(model, num_classes, path)
        return CausalLM(model)
    cfg = hf_config(config or {"model_type": "llama"}, num_classes)
    return CausalLM(transformers.AutoModelForCausalLM.from_config(cfg))


# The byte tokenizer's PAD id (distil.data.tokenize.ByteTokenizer): decoder classifiers pool the last
# non-pad token and need to know which id pads.
_BYTE_VOCAB, _BYTE_PAD = 259, 258


@register_model("hf-seq-classifier", weights_kwarg="path")
def hf_seq_classifier(
    *,
    num_classes: int,
    in_channels: int = 1,
    image_size: int = 1,
    config: Mapping[str, Any] | None = None,
    path: str | None = None,
    trust_remote_code: bool = False,
) -> SeqClassifier:
    """A ``transformers`` sequence classifier with `num_classes` labels: new from `config`, or loaded.

    Args:
        num_classes: the number of classes (K).
        in_channels: unused (token models); kept for the registry's signature.
        image_size: unused (token models); kept for the registry's signature.
        config: ``transformers`` config options including ``model_type`` (e.g. ``bert``) and
            ``vocab_size`` (default 259, distil's byte tokenizer, whose PAD id 258 is then the pad id).
        path: a local ``save_pretrained`` directory to load instead (its head must have K labels).
        trust_remote_code: as for ``hf-causal-lm``.
    """
    del in_channels, image_size
    transformers = require_transformers()
    _one_source("hf-seq-classifier", config, path)
    if path is not None:
        model = load_local(path, task="seq-classifier", trust_remote_code=trust_remote_code)
        if int(model.config.num_labels) != num_classes:
            raise ModelError(
                f"the classifier in {str(path)!r} has {model.config.num_labels} labels but the data has "
                f"{num_classes} classes; use a classifier trained on this label set."
            )
        return SeqClassifier(model)
    options = dict(config or {"model_type": "bert"})
    vocab = int(options.pop("vocab_size", _BYTE_VOCAB))
    if vocab == _BYTE_VOCAB:
        options.setdefault("pad_token_id", _BYTE_PAD)
    options["num_labels"] = num_classes
    cfg = hf_config(options, vocab, what="hf-seq-classifier")
    return SeqClassifier(transformers.AutoModelForSequenceClassification.from_config(cfg))


# ------------------------------------------------------------------------------------ student configs
# Per-model-type attribute names are resolved through the config class's attribute_map (gpt2: n_layer...).
_DERIVE_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
)


def derive_student_config(teacher_config: Any, **changes: int) -> dict[str, Any]:
    """A student's ``hf-causal-lm`` config: the teacher's, shallower and/or narrower.

    The head size stays the teacher's (so attention heads can be copied whole by layer transfer): a
    narrower ``hidden_size`` without ``num_attention_heads`` keeps ``hidden_size / head_dim`` heads, and
    ``num_key_value_heads`` shrinks in about the same proportion unless given, to a count that divides
    the heads and that layer transfer can copy (:func:`kv_groups`).

    Args:
        teacher_config: the teacher's ``transformers`` config, or its plain dict (with ``model_type``).
        **changes: any of ``num_hidden_layers``, ``hidden_size``, ``intermediate_size``,
            ``num_attention_heads``, ``num_key_value_heads``.

    Returns:
        A plain-JSON dict for ``create_model("hf-causal-lm", config=...)`` (and a checkpoint's spec).

    Raises:
        ModelError: an unknown key, or sizes that do not divide into whole heads.
    """
    unknown = sorted(set(changes) - set(_DERIVE_KEYS))
    if unknown:
        raise ModelError(f"derive_student_config: unknown {unknown}; valid: {', '.join(_DERIVE_KEYS)}")
    transformers = require_transformers()
    if isinstance(teacher_config, Mapping):
        base = dict(teacher_config)
        cfg = transformers.AutoConfig.for_model(
            base["model_type"], **{k: v for k, v in base.items() if k != "model_type"}
        )
    else:
        cfg = teacher_config
    out: dict[str, Any] = json.loads(json.dumps(cfg.to_diff_dict(), default=str))
    for key in ("transformers_version", "architectures", "_name_or_path", "auto_map", "dtype", "torch_dtype"):
        out.pop(key, None)
    out["model_type"] = cfg.model_type
    heads_t = int(cfg.num_attention_heads)
    kv_t = int(getattr(cfg, "num_key_value_heads", None) or heads_t)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads_t)
    hidden = int(changes.get("hidden_size", cfg.hidden_size))
    heads = int(
        changes.get("num_attention_heads", hidden // head_dim if "hidden_size" in changes else heads_t)
    )
    if heads < 1 or (hidden % heads and "head_dim" not in out):
        raise ModelError(f"hidden_size {hidden} does not divide into {heads} attention heads")
    values: dict[str, int] = {"hidden_size": hidden, "num_attention_heads": heads}
    if "num_key_value_heads" in changes or hasattr(cfg, "num_key_value_heads"):
        kv = int(changes.get("num_key_value_heads", kv_groups(heads, heads_t, kv_t)))
        if heads % kv:
            raise ModelError(f"{heads} attention heads do not split into {kv} key/value groups")
        values["num_key_value_heads"] = kv
    for key in ("num_hidden_layers", "intermediate_size"):
        if key in changes:
            values[key] = int(changes[key])
    attribute_map = dict(getattr(type(cfg), "attribute_map", {}))
    if not hasattr(cfg, "intermediate_size") and hasattr(cfg, "n_inner"):
        attribute_map["intermediate_size"] = "n_inner"  # gpt2's MLP width (None = 4 x hidden)
    for key, value in values.items():
        out[attribute_map.get(key, key)] = value
    if "head_dim" in out:
        out["head_dim"] = head_dim
    return out


def kv_groups(heads: int, heads_t: int, kv_t: int) -> int:
    """The key/value group count of a student with `heads` query heads, the teacher having `heads_t` in
    `kv_t` groups.

    The count nearest the teacher's proportion (``kv_t * heads / heads_t``; a tie goes to more groups)
    among those that divide `heads` and that layer transfer can fill from the teacher (at most `kv_t`
    groups of at most ``heads_t / kv_t`` heads each). Rounding the proportion down instead gave 8 heads
    in 2 groups narrowed to 6 heads a single group of 6, which no teacher group holds. With no such
    count (a student wider than its teacher) the divisor nearest the proportion.
    """
    target = kv_t * heads / heads_t
    divisors = [d for d in range(1, heads + 1) if heads % d == 0]
    fits = [d for d in divisors if d <= kv_t and heads // d <= heads_t // kv_t]
    return min(fits or divisors, key=lambda d: (abs(d - target), -d))


# ------------------------------------------------------------------------------------ save_pretrained
def is_hf_wrapper(model: nn.Module) -> bool:
    """Whether `model` is a :class:`CausalLM` or :class:`SeqClassifier` (it has a ``save_pretrained`` form)."""
    return isinstance(model, HFModel)


def save_hf_pretrained(model: nn.Module, directory: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write `model` as a Hugging Face directory (``save_pretrained``, safetensors), atomically.

    The directory loads back with ``AutoModelForCausalLM.from_pretrained(directory)`` (or
    ``AutoModelForSequenceClassification``) anywhere, without distil; tied embeddings stay tied. The
    directory appears whole or not at all: it is written next to its place and renamed.

    Args:
        model: a :class:`CausalLM` or :class:`SeqClassifier` (or a bare ``PreTrainedModel``).
        directory: where to write it (replaced if it exists).
        tokenizer: the tokenizer the model was trained with: its BOS/EOS (and, for a causal LM, PAD) ids
            are written into config.json and generation_config.json (:func:`write_special_ids`), so
            ``generate`` stops at its EOS; a Hugging Face one (distil's
            :class:`~distil.data.hf_tokenizer.HFTokenizer` or a transformers one) is saved alongside
            (distil's byte tokenizer has no files). None leaves the config's ids as they are.

    Returns:
        The directory.
    """
    hf: Any = getattr(model, "hf", model)
    if not hasattr(hf, "save_pretrained"):
        raise ModelError(
            f"{type(model).__name__} is not a Hugging Face model; it has no save_pretrained form"
        )
    if tokenizer is not None:
        # A classifier's forward masks with its config's pad id (SeqClassifier): the saved one stays.
        write_special_ids(hf, tokenizer, pad=not isinstance(model, SeqClassifier))
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with quiet_progress():
            hf.save_pretrained(str(staging))
        hf_tok = getattr(tokenizer, "hf", tokenizer)
        if hf_tok is not None and hasattr(hf_tok, "save_pretrained"):
            hf_tok.save_pretrained(str(staging))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def special_token_ids(tokenizer: Any) -> dict[str, int | None]:
    """The BOS, EOS and PAD ids of `tokenizer` under transformers' config names (None: it has none).

    Args:
        tokenizer: a transformers tokenizer, distil's ``HFTokenizer`` (read through its ``.hf``), or a
            distil tokenizer with ``bos_id``/``eos_id``/``pad_id`` (the byte tokenizer).
    """
    hf_tok = getattr(tokenizer, "hf", tokenizer)
    if hasattr(hf_tok, "eos_token_id"):
        ids = {f"{k}_token_id": getattr(hf_tok, f"{k}_token_id", None) for k in ("bos", "eos", "pad")}
    else:
        ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_id", None) for k in ("bos", "eos", "pad")}
    return {key: None if value is None else int(value) for key, value in ids.items()}


def write_special_ids(hf_model: Any, tokenizer: Any, *, pad: bool = True) -> None:
    """Set the tokenizer's special ids on `hf_model`'s config and generation config.

    A config built from a ``model_type`` carries that family's defaults (llama: BOS 1, EOS 2), which
    need not be the tokenizer's: ``generate`` outside distil would stop at whatever token holds id 2.
    An id the tokenizer lacks is written as None, not left at the family's default.

    Args:
        hf_model: a ``transformers`` ``PreTrainedModel`` (changed in place).
        tokenizer: as for :func:`special_token_ids`.
        pad: also the PAD id (False keeps the model's: a classifier's forward masks with it).
    """
    ids = special_token_ids(tokenizer)
    if not pad:
        ids.pop("pad_token_id", None)
    generation = getattr(hf_model, "generation_config", None)
    for key, value in ids.items():
        setattr(hf_model.config, key, value)
        if generation is not None:
            setattr(generation, key, value)


def resolve_from_teacher(kwargs: Mapping[str, Any], teacher: nn.Module) -> dict[str, Any]:
    """Student model kwargs with ``from_teacher: {changes}`` replaced by ``config:`` derived from `teacher`.

    A recipe can say ``student: {model: hf-causal-lm, kwargs: {from_teacher: {num_hidden_layers: 2}}}``;
    the student's spec (and so its checkpoint) then holds the full derived config, not a reference to
    the teacher.

    Args:
        kwargs: the student's model kwargs.
        teacher: the teacher, a wrapped HF model.

    Returns:
        The kwargs to build the student with (unchanged when there is no ``from_teacher``).

    Raises:
        ModelError: ``from_teacher`` together with ``config`` or ``path``, a teacher that is not an HF
            model, or changes :func:`derive_student_config` does not accept.
    """
    if kwargs.get("from_teacher") is None:
        return dict(kwargs)
    out = {k: v for k, v in kwargs.items() if k != "from_teacher"}
    if "config" in out or "path" in out:
        raise ModelError("hf-causal-lm: give from_teacher, config or path, only one of them.")
    changes = kwargs["from_teacher"]
    if not isinstance(changes, Mapping):
        raise ModelError(f"from_teacher must be a mapping such as {{num_hidden_layers: 2}}, got {changes!r}")
    hf = getattr(teacher, "hf", None)
    if hf is None or not hasattr(hf, "config"):
        raise ModelError(
            f"from_teacher needs a Hugging Face teacher; the teacher is a {type(teacher).__name__}"
        )
    out["config"] = derive_student_config(hf.config, **dict(changes))
    return out
