"""distil: make neural networks smaller and faster while keeping their accuracy.

The public API:
    >>> import distil
    >>> data = distil.load_dataset("digits")
    >>> teacher = distil.create_model("largenet", num_classes=10, in_channels=1, image_size=8)
    >>> student = distil.create_model("smallnet", num_classes=10, in_channels=1, image_size=8)
    >>> distil.train_model(teacher, data)
    >>> distil.distill(teacher, student, data)
"""

from distil.api import distill, mutual_learning, train_model
from distil.compress import compress_model, export_onnx, prune, quantize
from distil.config import (
    CompressConfig,
    KDConfig,
    ModelConfig,
    PruneConfig,
    QuantizeConfig,
    Recipe,
    ShrinkConfig,
    StudentTrainConfig,
    TeacherCacheConfig,
    TrainConfig,
    load_recipe,
)
from distil.data import DataBundle, load_dataset
from distil.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DistilError,
    ModelError,
    TrainingError,
    TransferError,
)
from distil.features import FeatureCapture
from distil.losses import LOSSES, CELoss, build_loss, kd_kl
from distil.measure import ModelMetrics, compare, measure_model
from distil.models import create_model, list_models
from distil.run import run_pipeline
from distil.shrink import shrink_model
from distil.train import load_checkpoint, save_checkpoint
from distil.transfer import inherit_recipe, reuse_modules, transfer_parameters

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "CELoss",
    "CheckpointError",
    "CompressConfig",
    "ConfigError",
    "DataBundle",
    "DataError",
    "DistilError",
    "FeatureCapture",
    "KDConfig",
    "ModelConfig",
    "ModelError",
    "ModelMetrics",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "ShrinkConfig",
    "StudentTrainConfig",
    "TeacherCacheConfig",
    "TrainConfig",
    "TrainingError",
    "TransferError",
    "build_loss",
    "compare",
    "compress_model",
    "create_model",
    "distill",
    "export_onnx",
    "inherit_recipe",
    "kd_kl",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "load_recipe",
    "measure_model",
    "mutual_learning",
    "prune",
    "quantize",
    "reuse_modules",
    "run_pipeline",
    "save_checkpoint",
    "shrink_model",
    "train_model",
    "transfer_parameters",
]
