"""The typed recipe schema: what to train, how, and how to distill.

A recipe is a YAML file validated by pydantic with unknown keys rejected (with the closest valid
key suggested), plus dotted overrides from the command line (`--set student_train.lr=0.1`). All
problems found in one recipe are reported together.
"""

from __future__ import annotations

import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import Self

from distil.errors import ConfigError
from distil.registry import closest, unknown_name_message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class UnlabeledConfig(_Strict):
    """The students' unlabelled transfer set (docs/methods.md#unlabelled-transfer-sets).

    The teacher always trains on every label of the dataset; the students' training split keeps the labels
    of `keep_per_class` (or `keep_fraction`) samples of each class and hides the others (label -100,
    `IGNORE_INDEX`), and `root` adds further unlabelled inputs. The distilled student learns the teacher
    on every sample and the hard labels only where they are kept; the scratch student trains on the
    labelled samples alone.
    """

    keep_per_class: int | None = Field(
        default=None, gt=0, description="labels kept per class in the students' split (the rest hidden)"
    )
    keep_fraction: float | None = Field(
        default=None, gt=0, le=1, description="fraction of each class's labels kept (the rest hidden)"
    )
    root: str | None = Field(
        default=None,
        description="more unlabelled inputs: a .npz (array x) or .npy file, or a folder of them, shaped like "
        "the dataset's samples",
    )
    seed: int = Field(default=0, description="which samples keep their labels")

    @model_validator(mode="after")
    def _one_rule(self) -> UnlabeledConfig:
        if self.keep_per_class is not None and self.keep_fraction is not None:
            raise ValueError("set keep_per_class or keep_fraction, not both")
        return self


class DataConfig(_Strict):
    """Which dataset, from where, and how it is split."""

    name: str = "digits"
    root: str | None = Field(default=None, description="directory or file; None = the reader's default")
    task: Literal["classification", "multilabel", "regression", "embedding", "dense"] | None = Field(
        default=None,
        description="what the labels are (docs/tasks.md); None = told from them: (N,) ints classification, "
        "(N, L) 0/1 floats multilabel, other floats regression, (N, H, W) ints dense; embedding ((N, D) "
        "target vectors) is named",
    )
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    limit: int | None = Field(default=None, gt=0, description="keep at most this many training samples")
    image_size: int | None = Field(
        default=None, gt=0, description="image readers: resize + center-crop to N x N; None = the files' size"
    )
    channels: Literal["auto", "L", "RGB"] | None = Field(
        default=None, description="image readers: L or RGB; None/auto = L when every image is grayscale"
    )
    on_bad_sample: Literal["error", "skip"] | None = Field(
        default=None, description="image readers: skip (and count) corrupt images instead of stopping"
    )
    normalize: Literal["auto", "none"] | None = Field(
        default=None,
        description="npz / npy-dir: none keeps the values (a model that normalizes its own inputs, e.g. "
        "CREPE's audio frames); None/auto = standardize each feature or channel with training statistics",
    )
    unlabeled: UnlabeledConfig | None = Field(
        default=None, description="students only: hide labels beyond N per class, add unlabelled inputs"
    )
    block_size: int | None = Field(
        default=None, ge=2, description="text readers: tokens per training block (None = 256)"
    )
    tokenizer: str | None = Field(
        default=None, description="text readers: a registered tokenizer (None = byte, needs no files)"
    )
    split_by: Literal["auto", "files", "blocks"] | None = Field(
        default=None,
        description="text readers: hold out whole files (by a hash of their path) or the last blocks; "
        "None = the reader's default",
    )
    errors: Literal["strict", "replace"] | None = Field(
        default=None, description="text readers: invalid UTF-8 is an error (strict) or U+FFFD (replace)"
    )
    newlines: Literal["normalize", "keep"] | None = Field(
        default=None,
        description="language-modelling text readers: plain-text files lose a leading UTF-8 byte order mark "
        "and their CRLF/CR line ends become LF (normalize), or both are kept as tokens (keep); None = normalize",
    )
    chat_template: Literal["auto", "builtin"] | None = Field(
        default=None,
        description="chat: render conversations with the tokenizer's own chat template (auto; the byte "
        "tokenizer has none and uses the built-in <|role|> template) or the built-in one; None = auto",
    )
    on_long: Literal["refuse", "truncate"] | None = Field(
        default=None,
        description="chat: a conversation longer than block_size + 1 tokens is an error naming it (refuse) "
        "or is cut to its row and counted (truncate); conversations are never packed together; None = refuse",
    )
    text_field: str | None = Field(
        default=None,
        description="text-classification: the JSONL key or CSV/TSV column of each document's text (None = text)",
    )
    label_field: str | None = Field(
        default=None,
        description="text-classification: the JSONL key or CSV/TSV column of each document's label "
        "(None = label)",
    )
    digits: int | None = Field(
        default=None, ge=1, description="arithmetic: the most digits of an operand (None = 3)"
    )
    operations: str | None = Field(
        default=None, description="arithmetic: the operations drawn from, characters of '+-*' (None = +-*)"
    )
    train_size: int | None = Field(
        default=None, gt=0, description="arithmetic: generated train + val problems (None = 20000)"
    )
    test_size: int | None = Field(
        default=None, gt=0, description="arithmetic: generated held-out test problems (None = 500)"
    )
    problem_seed: int | None = Field(
        default=None, description="arithmetic: the seed the problems are generated from (None = 0)"
    )
    answer_order: Literal["natural", "reversed"] | None = Field(
        default=None,
        description="arithmetic: answers written as read (natural) or least-significant digit first "
        "(reversed: what small models learn); None = natural",
    )
    pad_operands: bool | None = Field(
        default=None,
        description="arithmetic: write every operand with `digits` digits, zeros in front ('05+33='), so "
        "digits of equal place align; None = false",
    )

    @field_validator("name")
    @classmethod
    def _registered_dataset(cls, name: str) -> str:
        # Checked here, not when the data is loaded, so a misspelt dataset is reported together with
        # every other recipe problem. `pkg.module:function` readers are resolved at load time.
        if ":" in name:
            return name
        from distil.data import DATASETS  # lazy: the readers import torch

        if name not in DATASETS:
            raise ValueError(
                unknown_name_message("dataset", name, DATASETS.names())
                + " Or give your own reader as 'pkg.module:function'."
            )
        return name


# The sizes every model factory receives from the data (see distil.models.create_model).
_SIZE_KWARGS = ("num_classes", "in_channels", "image_size")

# Keys of older recipes, and what replaced them (difflib's closest match would mislead here).
_RENAMED_KEYS: dict[tuple[str, ...], str] = {
    ("train",): "'teacher_train' and/or 'student_train' (one recipe per model; to share one, write "
    "teacher_train: &recipe {...} and student_train: *recipe)",
    ("teacher_train", "teacher_cache"): "'student_train.teacher_cache' (the teacher cache serves the "
    "student's distillation; the teacher's training never uses it. Sharing a recipe? write "
    "student_train: {<<: *recipe, teacher_cache: ...})",
}

# Other libraries' names for distil's keys (too far apart for difflib): suggested wherever the distil key
# is valid.
_KEY_SYNONYMS: dict[str, str] = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "wd": "weight_decay",
    "batchsize": "batch_size",
    "bs": "batch_size",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "max_epochs": "epochs",
    "optim": "optimizer",
    "scheduler": "schedule",
    "lr_scheduler": "schedule",
    "lr_schedule": "schedule",
    "warmup": "warmup_epochs",
    "max_grad_norm": "grad_clip",
    "clip_grad_norm": "grad_clip",
    "gradient_clip_val": "grad_clip",
    "T": "temperature",
    "temp": "temperature",
    "workers": "num_workers",
}


def _suggest_key(key: str, valid: list[str]) -> str | None:
    """The valid key a misspelt or foreign `key` most likely means (a known synonym, else the closest)."""
    synonym = _KEY_SYNONYMS.get(key, _KEY_SYNONYMS.get(key.lower()))
    if synonym in valid:
        return synonym
    moved = MOVED_KEYS.get(synonym or "")
    if moved is not None and moved.path.split(".")[0] in valid:
        return moved.path  # e.g. wd -> optimizer.weight_decay
    return closest(key, valid) if valid else None


def _on_off(value: Any) -> Any:
    """YAML reads on/off (and yes/no, true/false) as booleans: give an on/off field its word back."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


class ModelConfig(_Strict):
    """A model from the registry (or `pkg.module:factory`), optionally loaded from a checkpoint."""

    model: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(
        default=None, description="a distil checkpoint, or a .safetensors/.pt state_dict for this model"
    )
    embedding_dim: int | None = Field(
        default=None,
        gt=0,
        description="student of data.task=embedding: its output width where it differs from the target "
        "vectors' (a trainable projection in the loss maps it onto the teacher's); None = the data's",
    )

    @field_validator("model")
    @classmethod
    def _registered_model(cls, name: str) -> str:
        # Registered names are checked with the recipe's keys so all problems are reported at once;
        # 'pkg.module:factory' and 'torchvision:NAME' are resolved when the model is built.
        if ":" in name:
            return name
        from distil.models import MODELS  # lazy: the model zoo imports torch

        if name not in MODELS:
            raise ValueError(
                unknown_name_message("model", name, MODELS.names())
                + " Or give a user factory as 'pkg.module:factory', or 'torchvision:NAME' / 'timm:NAME'."
            )
        return name

    @field_validator("kwargs")
    @classmethod
    def _no_size_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in _SIZE_KWARGS if k in kwargs]
        if given:
            raise ValueError(
                f"kwargs cannot set {', '.join(given)}: distil takes them from the data (num_classes = the "
                "number of class names; in_channels and image_size = the shape of one sample) so the model "
                "always fits it. Remove them from kwargs; to change them, change the data (data.name / "
                "data.root, or the class_names array of an npz file)."
            )
        return kwargs


class TeacherCacheConfig(_Strict):
    """Where a student's teacher outputs come from: computed once into an on-disk cache, or live.

    One store for every form (`distil.teachers.store`); a plain word (`teacher_cache: on`, YAML's
    on/off booleans included) sets the mode alone.
    """

    mode: Literal["auto", "off", "on"] = Field(
        default="auto",
        description="auto = cache when augment is none (or views are set), one teacher and only logit terms "
        "such as kd, dkd, rkl, js, logit_mse; on = always, an error when it cannot serve the loss; "
        "off = the teacher runs live",
    )
    form: Literal["auto", "full", "topk", "sampled"] = Field(
        default="auto",
        description="what is stored per sample (per token for sequence models): full = all logits (2 bytes "
        "each); topk = the k largest + a tail fill per temperature (the kd term only: dense logits, or a "
        "sequence model's sparse targets); sampled = k draws with importance weights (sequence models, "
        "unbiased); auto = full for classifiers and vocabularies <= 1024, else sampled",
    )
    k: int = Field(default=16, ge=1, description="topk/sampled: logits or tokens kept per sample (per token)")
    views: int | None = Field(
        default=None,
        ge=1,
        description="V augmented views per sample, each cached with the teacher's output on it; epoch e "
        "replays view v(e, id) (None = a new draw every epoch and a live teacher)",
    )
    dir: str | None = Field(
        default=None, description="where caches live; None = $DISTIL_CACHE_DIR or ~/.cache/distil/teacher"
    )

    @model_validator(mode="before")
    @classmethod
    def _mode_word(cls, value: Any) -> Any:
        # `teacher_cache: on` (a word, or YAML's boolean) still means the mode.
        value = _on_off(value)
        return {"mode": value} if isinstance(value, str) else value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_boolean(cls, value: Any) -> Any:
        return _on_off(value)  # `mode: on` in YAML arrives as True


class OptimizerConfig(_Strict):
    """The optimizer and its settings (the learning rate is `lr`, beside the group: the value tuned most).

    A plain word (`optimizer: adamw`) sets the name alone.
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd: momentum (0 = plain SGD)")
    weight_decay: float = Field(
        default=5e-4, ge=0, description="L2 penalty on weights (never on biases or norm parameters)"
    )

    @model_validator(mode="before")
    @classmethod
    def _name_word(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # `optimizer: adamw`


class ScheduleConfig(_Strict):
    """How the learning rate changes over training. A plain word (`schedule: step`) sets the name alone."""

    name: Literal["cosine", "step", "constant", "onecycle"] = Field(
        default="cosine",
        description="cosine decay to 0, step (x0.1 at 50% and 75%), constant, or onecycle",
    )
    warmup_epochs: float = Field(default=0.0, ge=0, description="linear warm-up from 0, in epochs")

    @model_validator(mode="before")
    @classmethod
    def _name_word(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # `schedule: step`


class AugmentConfig(_Strict):
    """The training augmentation: which operations, their options, and batch mixing.

    A plain word (`augment: crop_flip`) sets the operations alone.
    """

    ops: str = Field(
        default="auto",
        description="auto = the dataset's standard augmentation; none, crop, crop_flip, or operations "
        "joined by '+': crop, flip, resized_crop, jitter, trivial (TrivialAugment), randaugment",
    )
    scale: tuple[float, float] = Field(
        default=(0.08, 1.0), description="resized_crop: range of the crop's area (fraction of the image)"
    )
    ratio: tuple[float, float] = Field(
        default=(3 / 4, 4 / 3), description="resized_crop: range of the aspect ratio (log-uniform)"
    )
    jitter_brightness: float = Field(default=0.4, ge=0, lt=1, description="jitter: factor in [1-b, 1+b]")
    jitter_contrast: float = Field(default=0.4, ge=0, lt=1, description="jitter: factor in [1-c, 1+c]")
    jitter_saturation: float = Field(
        default=0.4, ge=0, lt=1, description="jitter: factor in [1-s, 1+s] (RGB)"
    )
    jitter_hue: float = Field(
        default=0.0, ge=0, le=0.5, description="jitter: shift in [-h, h] turns (RGB; kornia)"
    )
    randaugment_ops: int = Field(default=2, ge=1, description="randaugment: operations per sample (N)")
    randaugment_magnitude: int = Field(default=9, ge=0, le=30, description="randaugment: magnitude M of 30")
    mixing: Literal["none", "mixup", "cutmix"] = Field(
        default="none",
        description="mix pairs of augmented samples in each batch (function matching: teacher and student "
        "see the same mixed view; labels become -100, so only teacher-matching terms train)",
    )
    mixing_alpha: float = Field(default=1.0, gt=0, description="Beta(alpha, alpha) of the mixing weights")

    @model_validator(mode="before")
    @classmethod
    def _ops_word(cls, value: Any) -> Any:
        return {"ops": value} if isinstance(value, str) else value  # `augment: crop` names the operations

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, value: str) -> str:
        if value != "auto":
            from distil.data.augment import parse_ops

            try:
                parse_ops(value)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return value

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"augment.scale must satisfy 0 < min <= max <= 1, got {list(self.scale)}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"augment.ratio must satisfy 0 < min <= max, got {list(self.ratio)}")
        return self


class LoaderConfig(_Strict):
    """How batches are read from data on disk (an in-memory dataset ignores these)."""

    num_workers: int = Field(
        default=0, ge=0, description="worker processes reading samples (0 = the main process)"
    )
    pin_memory: bool | None = Field(
        default=None, description="page-locked batches (None = when the run uses CUDA)"
    )
    persistent_workers: bool = Field(
        default=False, description="keep workers alive between epochs (needs num_workers >= 1)"
    )
    prefetch_factor: int | None = Field(
        default=None, gt=0, description="batches each worker reads ahead (needs num_workers >= 1)"
    )


class FSDPConfig(_Strict):
    """Sharding the trained model and its teacher across the processes of a multi-process launch.

    A plain boolean (`fsdp: true`) sets `enabled` alone.
    """

    enabled: bool = Field(
        default=False,
        description="shard with torch FSDP2: each process holds 1/N of the parameters, gradients and "
        "optimizer state, and gathers one unit at a time (docs/lm.md#many-gpus-accelerate-ddp-and-fsdp)",
    )
    units: list[str] = Field(
        default_factory=list,
        description="module class names gathered as units of their own (e.g. LlamaDecoderLayer); [] = a "
        "Hugging Face model's transformer blocks (_no_split_modules), else the whole model",
    )

    @model_validator(mode="before")
    @classmethod
    def _enabled_word(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value  # `fsdp: true`

    @model_validator(mode="after")
    def _units_need_fsdp(self) -> FSDPConfig:
        if self.units and not self.enabled:
            raise ValueError(f"fsdp.units={self.units} needs fsdp.enabled=true (or fsdp: true)")
        return self


# A settings group written as one plain value (`teacher_cache: on`, `augment: crop`, `fsdp: true`)
# means this field of the group; old flat keys and `--set` overrides next to such a word keep it.
GROUP_WORDS = {
    "teacher_cache": "mode",
    "optimizer": "name",
    "schedule": "name",
    "augment": "ops",
    "fsdp": "enabled",
}


class Moved(NamedTuple):
    """Where an old flat recipe key now lives: a dotted path inside its section, plus values it implies."""

    path: str
    implies: tuple[tuple[str, Any], ...] = ()  # (dotted path, value) pairs the old key also sets


# Old flat keys of a training section -> their place in a settings group. A later regroup adds rows.
MOVED_KEYS: dict[str, Moved] = {
    "teacher_cache_dir": Moved("teacher_cache.dir"),
    "teacher_cache_views": Moved("teacher_cache.views"),
    "teacher_cache_form": Moved("teacher_cache.form"),
    "teacher_cache_k": Moved("teacher_cache.k"),
    # The classifier's dense top-k and the sequence top-k are one form now.
    "teacher_cache_topk": Moved("teacher_cache.k", (("teacher_cache.form", "topk"),)),
    "momentum": Moved("optimizer.momentum"),
    "weight_decay": Moved("optimizer.weight_decay"),
    "warmup_epochs": Moved("schedule.warmup_epochs"),
    "augment_scale": Moved("augment.scale"),
    "augment_ratio": Moved("augment.ratio"),
    "jitter_brightness": Moved("augment.jitter_brightness"),
    "jitter_contrast": Moved("augment.jitter_contrast"),
    "jitter_saturation": Moved("augment.jitter_saturation"),
    "jitter_hue": Moved("augment.jitter_hue"),
    "randaugment_ops": Moved("augment.randaugment_ops"),
    "randaugment_magnitude": Moved("augment.randaugment_magnitude"),
    "mixing": Moved("augment.mixing"),
    "mixing_alpha": Moved("augment.mixing_alpha"),
    "num_workers": Moved("loader.num_workers"),
    "pin_memory": Moved("loader.pin_memory"),
    "persistent_workers": Moved("loader.persistent_workers"),
    "prefetch_factor": Moved("loader.prefetch_factor"),
    "fsdp_units": Moved("fsdp.units"),
}


def move_keys(data: Any, table: dict[str, Moved], model: type[BaseModel]) -> Any:
    """Read old flat keys of `data` into their groups, with one deprecation warning per key (once).

    On a model without the key's group (a teacher's recipe has no teacher cache), an old spelling is
    dropped with a warning (old recipes shared one anchor between both sections) and the new group is
    refused.

    Raises:
        ValueError: a moved key on a model without its group, or an old and a new key that disagree.
    """
    if not isinstance(data, dict):
        return data
    groups = {moved.path.split(".")[0]: moved.path.split(".")[0] for moved in table.values()}
    for key in list(data):
        path = table[key].path if key in table else groups.get(key, "")
        if path and path.split(".")[0] not in model.model_fields:
            if key in table or not isinstance(data[key], dict):
                # An old recipe shared one YAML anchor between teacher_train and student_train, so its
                # teacher section carries the flat cache keys it never used: read it, say so, drop them.
                warnings.warn(
                    f"recipe key {key} is ignored in this section (the teacher's training uses no teacher "
                    f"cache); set student_train.{path} instead",
                    FutureWarning,
                    stacklevel=2,
                )
                data = {k: v for k, v in data.items() if k != key}
                continue
            raise ValueError(
                f"{key} is a setting of the student's distillation ({path} of student_train), not of this "
                f"recipe section, which never uses it. Remove it here; set student_train.{path} (sharing "
                "one recipe through a YAML anchor? write student_train: {<<: *recipe, ...}; in Python, "
                f"StudentTrainConfig({path.split('.')[0]}=...))."
            )
    if not any(key in data for key in table):
        return data
    out = {k: v for k, v in data.items() if k not in table}
    for old in (key for key in data if key in table):
        moved = table[old]
        also = "".join(f" with {path}: {value}" for path, value in moved.implies)
        warnings.warn(
            f"recipe key {old} is deprecated: write {moved.path}{also} (in the same section) instead",
            FutureWarning,
            stacklevel=2,
        )
        for path, value in ((moved.path, data[old]), *moved.implies):
            _set_dotted(out, path, value, old)
    return out


def _set_dotted(data: dict[str, Any], path: str, value: Any, old: str) -> None:
    """Set `data[a][b]...` = value for path "a.b...", refusing to overwrite a different value."""
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if child is not None and not isinstance(child, dict) and part in GROUP_WORDS:
            child = {GROUP_WORDS[part]: child}  # `augment: crop` next to old flat keys: the group's word
        node[part] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    if leaf in node and node[leaf] != value:
        raise ValueError(
            f"{old} sets {path}={value!r}, but {path} is also given as {node[leaf]!r}; keep only the "
            f"{path.split('.')[0]} group"
        )
    node[leaf] = value


class TrainConfig(_Strict):
    """A training recipe: optimizer, schedule, regularisation, budget and seed.

    The values most runs tune (lr, epochs, batch_size, grad_clip, seed) are flat keys; the rest are small
    groups, each also written as one word where it has a main setting: `optimizer` (`OptimizerConfig`:
    `optimizer: adamw`), `schedule` (`ScheduleConfig`: `schedule: step`), `augment` (`AugmentConfig`:
    `augment: crop`), `loader` (`LoaderConfig`) and `fsdp` (`FSDPConfig`: `fsdp: true`). The flat keys
    these groups replaced still load, each with one deprecation line (`MOVED_KEYS`).

    It is saved with every checkpoint, so a student can inherit its teacher's recipe. The teacher-output
    cache is a distillation setting: it lives in `StudentTrainConfig.teacher_cache`, and a teacher's
    recipe refuses it.
    """

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return move_keys(data, MOVED_KEYS, cls)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with `update` applied and validated, as the constructor would: a group's word
        (`optimizer="adam"`) or an old flat key (`mixing="mixup"`) lands in its group (pydantic's own
        copy would store it unchecked, where nothing reads it)."""
        if not update:
            return super().model_copy(deep=deep)
        data = self.model_dump()
        for key in update:
            if key in MOVED_KEYS:
                _drop_moved(data, key)  # the update replaces the group's value
        return self.model_validate({**data, **update})

    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(),
        description="sgd, adam or adamw, with momentum and weight_decay; `optimizer: adamw` sets the name alone",
    )
    lr: float = Field(default=0.05, gt=0, description="peak learning rate")
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(),
        description="the learning-rate schedule and its warm-up; `schedule: step` sets the name alone",
    )
    epochs: int = Field(default=10, gt=0)
    max_steps: int | None = Field(
        default=None,
        gt=0,
        description="stop after this many optimizer steps (the schedule spans them); None = `epochs` whole epochs",
    )
    batch_size: int = Field(default=128, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    augment: AugmentConfig = Field(
        default_factory=lambda: AugmentConfig(),
        description="the training augmentation and batch mixing; `augment: crop_flip` sets the operations alone",
    )
    grad_clip: float | None = Field(
        default=5.0, gt=0, description="max gradient norm; KD with T^2 scaling can diverge without it"
    )
    channels_last: bool = Field(
        default=False, description="NHWC memory layout for conv nets: 1.2-1.6x faster on CPU (oneDNN)"
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the trained model (needs a C++ compiler); off by default: on CPU it "
        "saves less than its compile time over every recipe measured (docs/scale.md, Compile)",
    )
    fsdp: FSDPConfig = Field(
        default_factory=lambda: FSDPConfig(),
        description="shard the trained model and its teacher across processes; `fsdp: true` enables it",
    )
    loader: LoaderConfig = Field(
        default_factory=lambda: LoaderConfig(), description="how batches are read from data on disk"
    )
    model_outputs: Literal["check", "logits"] = Field(
        default="check",
        description="check: refuse to train a classification or multilabel model whose first outputs look "
        "like probabilities (a final softmax or sigmoid: its label loss reads logits); logits: they are "
        "logits even if they do",
    )
    seed: int = 0
    checkpoint_every: int | None = Field(
        default=None,
        gt=0,
        description="also save a resumable training state every N steps (always at each epoch end)",
    )

    @model_validator(mode="after")
    def _fsdp_options(self) -> TrainConfig:
        if self.fsdp.enabled and (self.compile or self.channels_last):
            raise ValueError(
                "fsdp=true is not combined with compile or channels_last (a sharded model keeps its own "
                "parameter layout); set compile=false and channels_last=false"
            )
        return self


class GenerationConfig(_Strict):
    """Where a language-model student's training completions come from (prompt/completion or chat data).

    By default every batch trains on the dataset's completions (supervised KD). With `lmbda` > 0 a batch
    is, with that probability, rewritten with completions the student samples from its prompts, which
    the teacher then scores (on-policy distillation, GKD: Agarwal et al. 2024). `seq_kd` replaces the
    dataset's completions by the teacher's own, generated once and cached (sequence-level KD: Kim & Rush
    2016). Sampling settings apply to both.
    """

    lmbda: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="probability that a batch trains on the student's own completions (0: the dataset's)",
    )
    seq_kd: bool = Field(
        default=False,
        description="train on the teacher's completions (generated once, cached) instead of the data's",
    )
    temperature: float = Field(
        default=1.0, ge=0, description="sampling temperature of generation; 0 = greedy"
    )
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling: the probability mass kept")
    max_new_tokens: int | None = Field(
        default=None,
        gt=0,
        description="most tokens per completion; None = the room the block leaves after the prompt",
    )
    compile_step: bool = Field(
        default=False,
        description="torch.compile the student's (on-policy) or teacher's (seq_kd) one-token decoding step: "
        "faster steps after a compile (about 40 s cold on a 2-core CPU; GPU not measured), for long runs (docs/lm.md, "
        "The decoder and its speed); not part of the resume fingerprint",
    )


class StudentTrainConfig(TrainConfig):
    """A student's training recipe: a `TrainConfig`, where its teacher's outputs come from, and (language
    models) where its completions come from."""

    teacher_cache: TeacherCacheConfig = Field(
        default_factory=lambda: TeacherCacheConfig(),
        description="reuse the teacher's outputs computed once (docs/lm-cache.md); `teacher_cache: on` "
        "sets the mode alone",
    )
    generation: GenerationConfig = Field(
        default_factory=lambda: GenerationConfig(),
        description="on-policy distillation (lmbda) and sequence-level KD (seq_kd) for language models (docs/lm.md)",
    )

    @model_validator(mode="after")
    def _on_policy_settings(self) -> StudentTrainConfig:
        # Found at recipe load, before any stage trains (the engine's checks would wait for the distill stage).
        lmbda = self.generation.lmbda
        if lmbda > 0 and self.teacher_cache.mode == "on":
            raise ValueError(
                f"teacher_cache=on cannot be used with on-policy distillation (generation.lmbda={lmbda:g}): the "
                "teacher must score the completions the student samples during training. Fix: "
                "student_train.teacher_cache.mode=auto or off, or student_train.generation.lmbda=0."
            )
        if lmbda > 0 and self.fsdp.enabled:
            raise ValueError(
                f"on-policy distillation (generation.lmbda={lmbda:g}) is not supported with fsdp=true: the student "
                "generates, which a sharded student cannot do alone. Fix: fsdp=false (each process generates "
                "for its own shard), or student_train.generation.lmbda=0."
            )
        return self


def cache_settings(cfg: TrainConfig) -> TeacherCacheConfig:
    """The teacher-cache settings of a training recipe: a student's own, else the defaults."""
    return cfg.teacher_cache if isinstance(cfg, StudentTrainConfig) else TeacherCacheConfig()


class ExtraTeacher(ModelConfig):
    """A further teacher of an ensemble: a model (usually with a checkpoint) and its weight."""

    weight: float = Field(default=1.0, gt=0)


class KDConfig(_Strict):
    """Hinton distillation: kd_weight * T^2 * KL(p_teacher^T || p_student^T) + ce_weight * CE(student, y).

    The weights are named by what they weigh (no alpha/beta to confuse).
    """

    temperature: float = Field(default=4.0, gt=0)
    kd_weight: float = Field(default=0.9, ge=0)
    ce_weight: float = Field(default=0.1, ge=0)
    teacher_outputs: Literal["check", "logits"] = Field(
        default="check",
        description="check: refuse a teacher whose first outputs look like probabilities; logits: they are "
        "logits even if they do (e.g. a non-negative head whose values all lie in [0, 1])",
    )
    # Composed losses (docs/methods.md): registered terms by name with weights; None = {kd: kd_weight,
    # ce: ce_weight}, exactly the Hinton loss above.
    terms: dict[str, float] | None = Field(
        default=None, description="loss terms and weights, e.g. {ce: 0.1, kd: 0.9, fitnet: 100}"
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-term options, e.g. {dkd: {beta: 8}, rkd: {angle_weight: 50}}"
    )
    feature_pairs: list[tuple[str, str]] | Literal["auto"] = Field(
        default="auto",
        description="[[student_module, teacher_module], ...] for feature terms; auto = by stage",
    )
    adapters: bool = Field(
        default=True, description="trainable 1x1-conv/linear projections where shapes differ"
    )
    warmup: dict[str, float] = Field(
        default_factory=dict,
        description="term -> epochs over which its weight rises linearly (e.g. {dkd: 20})",
    )
    temperature_final: float | None = Field(
        default=None, gt=0, description="anneal the temperature linearly to this value by the last epoch"
    )
    teachers: list[ExtraTeacher] = Field(
        default_factory=list, description="more teachers: the KD target is the weighted mixture of all"
    )
    teacher_weight: float = Field(default=1.0, gt=0, description="weight of the main teacher in an ensemble")
    ensemble_mix: Literal["probs", "logits"] = Field(
        default="probs",
        description="how an ensemble combines its teachers: probs = the mixture of their softened "
        "distributions; logits = the weighted mean of their logits (FedDF)",
    )
    teacher_tokenizer: str | None = Field(
        default=None,
        description="the teacher's own tokenizer when it differs from data.tokenizer (the teacher reads the "
        "same text with it, aligned by bytes; terms uld/alm with ce); None = the data's",
    )
    vocab_tolerance: float = Field(
        default=1e-3,
        ge=0,
        le=1,
        description="LM outputs differing by padding rows: most teacher probability allowed on the ids cut",
    )
    fused: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="LM head and per-token terms fused chunk by chunk, never the whole (B, T, V) logits "
        "(docs/lm-losses.md): auto = for a Hugging Face causal-LM student from 32000 ids up, on = at any "
        "vocabulary size, off = never; a run that cannot fuse says so in a one-line notice",
    )

    @model_validator(mode="after")
    def _some_weight(self) -> KDConfig:
        if self.terms is None and self.kd_weight == 0 and self.ce_weight == 0:
            raise ValueError("kd_weight and ce_weight are both 0: nothing would be trained")
        if self.terms is not None and (not self.terms or all(w == 0 for w in self.terms.values())):
            raise ValueError(f"terms {self.terms} has no non-zero weight: nothing would be trained")
        if self.terms is not None and any(w < 0 for w in self.terms.values()):
            raise ValueError(f"term weights must be >= 0, got {self.terms}")
        return self


def cross_tokenizer_problems(kd: KDConfig, cfg: TrainConfig) -> list[str]:
    """What a teacher with another tokenizer (`kd.teacher_tokenizer`) cannot be combined with in the
    student's recipe, one message with its fix each (empty: nothing; also when no teacher tokenizer is set).

    Checked when a recipe is read (`Recipe`) and again by `distil.api.distill`, which can be called with
    configs built in code. It sees the KD and student settings only: the recipe (`Recipe._cross_tokenizer`)
    adds the refusal of `transfer.init=teacher`, whose config this function is not given.
    """
    if kd.teacher_tokenizer is None:
        return []
    problems = []
    if kd.teachers:
        problems.append(
            "kd.teachers cannot be used with kd.teacher_tokenizer: the byte alignment serves one teacher "
            "with its own tokenizer. Fix: drop kd.teachers (or kd.teacher_tokenizer)."
        )
    if not isinstance(cfg, StudentTrainConfig):
        return problems
    if cfg.generation.seq_kd:
        problems.append(
            "student_train.generation.seq_kd cannot be used with kd.teacher_tokenizer: seq-KD writes the "
            "teacher's generated ids into the student's rows as they are, and the teacher's ids belong to "
            "its own tokenizer (they are not decoded with it and re-encoded with the student's). Fix: set "
            "student_train.generation.seq_kd=false and distil with uld/alm on the data, or on-policy "
            "(student_train.generation.lmbda > 0), which the byte alignment serves."
        )
    return problems


# A student initialised from the teacher already sits near the teacher's solution; at the T = 4 that suits a
# random one, KD's first steps carried it away and transfer + KD ended below transfer alone. Measured with
# benchmarks/transfer_fashion_mnist.py (docs/transfer.md#transfer--kd-defaults): at 1 epoch T = 1 gained
# most (+3.4 pt over T = 4 at lr x 0.2).
TRANSFERRED_KD_TEMPERATURE = 1.0  # transfer.kd_temperature: None with init: teacher


class TransferConfig(_Strict):
    """Knowledge transfer from the teacher before (or instead of) distillation: see docs/transfer.md.

    `kd_temperature` is resolved when the config is read: None with `init: teacher` becomes
    `TRANSFERRED_KD_TEMPERATURE`, so the recipe saved with a run states the temperature its student
    distilled at, and `kd_for` is the one place that applies it.
    """

    init: Literal["random", "teacher"] = Field(
        default="random", description="teacher = initialise the student from the teacher's weights"
    )
    selection: Literal["uniform", "first", "l1"] = Field(
        default="uniform", description="which teacher channels a thinner student keeps"
    )
    layer_map: dict[str, str] | None = Field(
        default=None, description="{student_block: teacher_block}; None = evenly spaced for shorter stages"
    )
    strict: bool = Field(default=True, description="fail on tensors that cannot be transferred")
    lr_scale: float | None = Field(
        default=None,
        gt=0,
        description="a student initialised from the teacher trains at student_train.lr times this; None = "
        "auto (distil.transfer.TRANSFERRED_LR_SCALE with init: teacher, else 1)",
    )
    kd_temperature: float | None = Field(
        default=None,
        gt=0,
        description="the KD temperature of a student initialised from the teacher; None = auto "
        "(distil.transfer.TRANSFERRED_KD_TEMPERATURE with init: teacher, else kd.temperature)",
    )
    reuse: list[str] = Field(default_factory=list, description="teacher modules the student reuses")
    reuse_mode: Literal["copy", "share"] = "copy"
    freeze: bool = Field(default=True, description="reused modules start frozen")
    unfreeze_epoch: int | None = Field(default=None, ge=2, description="1-based epoch that unfreezes them")
    inherit_recipe: bool = Field(default=False, description="student_train defaults to the teacher's recipe")
    override: list[str] = Field(
        default_factory=list, description="student_train fields that win over the inherited recipe"
    )

    @model_validator(mode="after")
    def _resolve_kd_temperature(self) -> TransferConfig:
        if self.kd_temperature is None and self.init == "teacher":
            # An assignment re-runs this validator (validate_assignment), which then has nothing to do.
            self.kd_temperature = TRANSFERRED_KD_TEMPERATURE
        return self

    def kd_for(self, kd: KDConfig) -> KDConfig:
        """The KD settings of the student this transfer prepares: `kd` at `kd_temperature`, if set.

        A temperature override drops `kd.temperature_final` (the student distills at one temperature);
        without one, `kd` itself is returned.
        """
        t = self.kd_temperature
        if t is None or (t == kd.temperature and kd.temperature_final is None):
            return kd
        return kd.model_copy(update={"temperature": t, "temperature_final": None})


class PruneConfig(_Strict):
    """Pruning: structured (whole channels, by ratio or MACs target) or unstructured (magnitude zeros)."""

    method: Literal["structured", "unstructured"] = "structured"
    ratio: float | None = Field(
        default=None, gt=0, lt=1, description="fraction of channels (or weights) removed"
    )
    macs_reduction: float | None = Field(
        default=2.0, gt=1, description="structured: prune until MACs fall Nx"
    )
    criterion: Literal["magnitude", "taylor", "bn-scale"] = "magnitude"
    global_pruning: bool = False
    ignore: list[str] | None = Field(default=None, description="module paths kept; None = the classifier")

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        if self.method == "unstructured" and self.ratio is None:
            raise ValueError("unstructured pruning needs prune.ratio (the fraction of weights zeroed)")
        return self


class QuantizeConfig(_Strict):
    """Int8: post-training static (ONNX Runtime) or QAT with distillation from the fp32 teacher."""

    mode: Literal["static", "qat"] = "static"
    calibration_size: int = Field(default=512, gt=0, description="training samples for activation ranges")
    format: Literal["auto", "qoperator", "qdq"] = "auto"
    per_channel: bool | None = Field(default=None, description="None = measure both, keep the faster")
    exclude: list[str] = Field(default_factory=list, description="module paths kept in fp32")


class CompressConfig(_Strict):
    """The compression chain after distillation: prune -> KD fine-tune -> int8 -> ONNX export."""

    prune: PruneConfig | None = Field(default_factory=PruneConfig)
    finetune: StudentTrainConfig = Field(default_factory=lambda: StudentTrainConfig(epochs=3, lr=0.01))
    quantize: QuantizeConfig | None = Field(default_factory=QuantizeConfig)
    opset: int = Field(default=17, ge=13)
    latency_threads: int = Field(default=1, gt=0, description="threads for every latency measurement")

    @field_validator("finetune", mode="before")
    @classmethod
    def _as_student_recipe(cls, value: Any) -> Any:
        # The fine-tune is a distillation (a student's recipe); a plain TrainConfig gets the cache defaults.
        if isinstance(value, TrainConfig) and not isinstance(value, StudentTrainConfig):
            return value.model_dump()
        return value


class ShrinkConfig(_Strict):
    """Compress to a budget (`distil shrink`): the most accurate candidate whose measured latency fits."""

    target_latency_ms: float | None = Field(default=None, gt=0, description="batch latency budget (median)")
    target_size_bytes: int | None = Field(default=None, gt=0, description="budget on the deployed file")
    max_drop: float | None = Field(
        default=None, ge=0, description="accuracy points below the teacher allowed"
    )
    threads: int = Field(default=1, gt=0, description="ONNX Runtime intra-op threads on the target")
    batch: int = Field(default=1, gt=0, description="batch size the budget is for")
    formats: list[Literal["fp32", "int8"]] = Field(default_factory=lambda: ["fp32", "int8"])  # type: ignore[arg-type]
    widths: list[float] | None = Field(default=None, description="width multipliers; None = a default ladder")
    prune: bool = Field(default=True, description="add teacher copies pruned until they meet the latency")
    prune_steps: int = Field(default=5, ge=1, description="bisection steps of the latency-steered pruning")
    selection: Literal["uniform", "first", "l1"] = "l1"
    latency_margin: float = Field(default=0.1, ge=0, lt=1, description="search keeps median <= (1-m)*target")
    min_run_time: float = Field(default=0.4, gt=0, description="seconds of timed runs per file and probe")
    max_candidates: int = Field(default=6, gt=0, description="feasible candidates ranked by the proxy")
    proxy_epochs: int = Field(default=1, gt=0, description="epochs of the first successive-halving rung")
    proxy_limit: int | None = Field(default=5000, gt=0, description="training samples the proxy uses")
    eta: int = Field(default=2, ge=2, description="successive halving keeps 1/eta per rung")
    epochs: int | None = Field(
        default=None, gt=0, description="winner's full distillation; None = student_train"
    )
    budget_hours: float | None = Field(default=None, gt=0, description="wall-clock cap on the search")


class Recipe(_Strict):
    """A whole run: data, teacher, student, their training recipes and the distillation loss."""

    name: str = "custom"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: ModelConfig = Field(default_factory=lambda: ModelConfig(model="largenet"))
    student: ModelConfig = Field(default_factory=lambda: ModelConfig(model="smallnet"))
    teacher_train: TrainConfig = Field(default_factory=TrainConfig)
    student_train: StudentTrainConfig = Field(default_factory=StudentTrainConfig)
    kd: KDConfig = Field(default_factory=KDConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    compress: CompressConfig | None = Field(default=None, description="prune/quantize/export after distill")
    shrink: ShrinkConfig | None = Field(default=None, description="distil shrink: compress to a budget")
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, description="experiment trackers (through Accelerate) that log every epoch"
    )
    trust_code: bool = Field(
        default=False,
        description="let checkpoint sidecars name pkg.module:factory code this recipe does not name "
        "(only for checkpoints whose author you trust; --trust-code)",
    )

    @property
    def student_kd(self) -> KDConfig:
        """The KD settings the (possibly transferred) student distills with: `transfer.kd_for(kd)`."""
        return self.transfer.kd_for(self.kd)

    @model_validator(mode="after")
    def _cross_tokenizer(self) -> Recipe:
        # Found at recipe load, before the teacher trains (distill() checks again for configs built in code).
        problems = cross_tokenizer_problems(self.kd, self.student_train)
        if self.kd.teacher_tokenizer is not None and self.transfer.init == "teacher":
            # Parameter transfer copies the embedding and output-head rows by id, and an id names another
            # string in each tokenizer: the student would start from meanings shuffled at random.
            problems.append(
                "transfer.init=teacher cannot be used with kd.teacher_tokenizer: it copies the teacher's "
                "token embeddings and output head row by row, and a token id means a different string in "
                "each tokenizer. Fix: transfer.init=random (the byte-aligned loss carries the teacher's "
                "knowledge), or a student with the teacher's tokenizer."
            )
        if problems:
            raise ValueError(" ".join(problems))
        return self

    @model_validator(mode="after")
    def _embedding_dim(self) -> Recipe:
        # Only a student of embedding data has a width of its own: every other output is sized by the data.
        if self.teacher.embedding_dim is not None:
            raise ValueError(
                "teacher.embedding_dim is not used: the teacher's embedding is as wide as the target vectors "
                "it is trained on (or a brought checkpoint's). Fix: drop it; set student.embedding_dim instead."
            )
        if self.student.embedding_dim is not None and self.data.task != "embedding":
            raise ValueError(
                f"student.embedding_dim is for embedding data, but data.task is {self.data.task}: other "
                "outputs are sized by the data. Fix: set data.task=embedding, or drop student.embedding_dim."
            )
        return self


_C = TypeVar("_C", bound=BaseModel)


def _format_errors(
    err: ValidationError, model: type[BaseModel], source: str, overrides: list[str] | None = None
) -> str:
    lines: list[str] = []
    from_overrides = 0
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(model, e["loc"][:-1])
            hint = _RENAMED_KEYS.get(tuple(str(p) for p in e["loc"]))
            near = _suggest_key(str(e["loc"][-1]), valid)
            hint = hint or (repr(near) if near else None)
            fix = f" Did you mean {hint}?" if hint else ""
            text = f"unknown key {loc!r}.{fix} Valid keys here: {', '.join(valid)}."
        else:
            got = e.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict) else ""
            text = f"{loc}: {e['msg'].removeprefix('Value error, ')}{shown}"
        item = _override_for(e["loc"], overrides or [])
        if item is not None:
            # The value came from the command line: blame the --set, not the recipe file.
            from_overrides += 1
            text = f"--set {item}: {text}"
        lines.append(f"  - {text}")
    count = err.error_count()
    where = f"the --set overrides of {source}" if from_overrides == count else source
    return "\n".join([f"{where} {'have' if from_overrides == count else 'has'} {count} problem(s):", *lines])


def _override_for(loc: tuple[Any, ...], overrides: list[str]) -> str | None:
    """The last `--set` item that set `loc` (or a key inside it, or a section holding it), if any."""
    path = [str(p) for p in loc]
    found = None
    for item in overrides:
        key = [p.strip() for p in item.partition("=")[0].strip().split(".")]
        n = min(len(key), len(path))
        if n and key[:n] == path[:n]:
            found = item
    return found


def _valid_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current: type[BaseModel] = model
    for key in path:
        field = current.model_fields.get(key)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)


def parse_recipe(raw: dict[str, Any], source: str = "recipe", overrides: list[str] | None = None) -> Recipe:
    """Validate a recipe dict, reporting every problem at once as a ConfigError.

    Args:
        raw: the recipe as a dict (overrides already applied).
        source: what the dict came from, named in the error (e.g. the recipe file).
        overrides: the `--set KEY=VALUE` items applied to `raw`; problems in keys they set are blamed on
            them rather than on `source`.

    Raises:
        ConfigError: listing every problem found.
    """
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, Recipe, source, overrides)) from None


def checked_config(model: type[_C], source: str, **fields: Any) -> _C:
    """`model(**fields)`, with every validation problem reported at once as a ConfigError naming `source`.

    For configs built from command-line options (e.g. ``checked_config(PruneConfig, "distil prune",
    ratio=1.5)``), so a bad value reads like a bad recipe value rather than a pydantic traceback.

    Raises:
        ConfigError: listing every problem found.
    """
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, model, source)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML: 0.1, true, [1, 2]) to a recipe dict.

    An old flat key of a training section (`student_train.momentum`) replaces the recipe file's value at
    its group's place (`optimizer.momentum`), so it overrides the file rather than contradicting it; two
    overrides that disagree are still refused (`move_keys`).
    """
    # Not a YAML round trip nor copy.deepcopy: both keep an anchor's aliases as one shared dict, so
    # `--set teacher_train.epochs=20` would also change `student_train: *recipe`.
    result = _unshared_copy(raw) or {}
    parsed: list[tuple[list[str], Any, str]] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE; example: --set student_train.lr=0.1")
        try:
            parsed.append((key.strip().split("."), yaml.safe_load(value) if value.strip() else None, item))
        except yaml.YAMLError:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML; quote strings, e.g. --set name='\"a: b\"'"
            ) from None
    for parts, _, _ in parsed:
        _drop_moved_from_file(result, parts)
    for parts, value, item in parsed:
        _set_override(result, parts, value, item)
    return result


def _drop_moved_from_file(result: dict[str, Any], parts: list[str]) -> None:
    """Remove the recipe file's value that an old flat key given by --set replaces (and what it implies)."""
    *section, leaf = parts
    model = _section_model(section)
    if leaf not in MOVED_KEYS or model is None or not issubclass(model, TrainConfig):
        return
    node: Any = result
    for part in section:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return
    _drop_moved(node, leaf)


def _drop_moved(section: dict[str, Any], old: str) -> None:
    """Remove from `section` the group values that old flat key `old` sets (and those it implies)."""
    moved = MOVED_KEYS[old]
    for path in (moved.path, *(p for p, _ in moved.implies)):
        group, _, field = path.partition(".")
        value = section.get(group)
        if isinstance(value, dict):
            value.pop(field, None)
        elif value is not None and GROUP_WORDS.get(group) == field:
            del section[group]  # the group's word is the field replaced


def _section_model(path: list[str]) -> type[BaseModel] | None:
    """The schema of the recipe section at `path` (e.g. ["compress", "finetune"]), or None."""
    model: type[BaseModel] = Recipe
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


def _set_override(result: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    """Set `result[a][b]... = value` for one override, reading a group's plain word as its main field."""
    node = result
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if part in GROUP_WORDS and child is not None and not isinstance(child, dict):
            node[part] = child = {GROUP_WORDS[part]: child}  # `augment: crop`, then `augment.scale=...`
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    leaf = parts[-1]
    if leaf in GROUP_WORDS and isinstance(node.get(leaf), dict) and not isinstance(value, dict):
        node[leaf][GROUP_WORDS[leaf]] = value  # a group's word keeps the group's other settings
    else:
        node[leaf] = value


def _unshared_copy(value: Any) -> Any:
    """A copy of nested dicts/lists in which no two places share one object (aliases become copies)."""
    if isinstance(value, dict):
        return {k: _unshared_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared_copy(v) for v in value]
    return value


def load_recipe_dict(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML file into a dict (not yet validated)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"recipe file {str(p)!r} does not exist; `distil recipe list` shows the bundled ones"
        )
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {str(p)!r} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {str(p)!r} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe file (or the defaults when `path` is None) with dotted overrides applied."""
    raw = load_recipe_dict(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return parse_recipe(raw, source=str(path) if path else "recipe", overrides=overrides)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (saved in every run directory)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
