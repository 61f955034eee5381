"""Architecture registry: seed nets, CIFAR ResNets, tiny test nets and pruned specs, built by name.

Example:
    >>> from distil.models import create_model, model_spec, build_from_spec
    >>> teacher = create_model("largenet", num_classes=10, in_channels=1, image_size=28)
    >>> spec = model_spec("smallnet", num_classes=10, in_channels=1, image_size=28)
    >>> student = build_from_spec(spec)
"""

from __future__ import annotations

# Imported for their @register_model side effects: importing distil.models registers every model.
from distil.models import crepe, hf, recurrent, resnet_cifar, seed, seg, vit
from distil.models.pruned import build_pruned, pruned_spec
from distil.models.registry import (
    MODELS,
    build_from_spec,
    create_model,
    is_timm_available,
    is_torchvision_available,
    list_models,
    loads_trained_weights,
    model_spec,
    register_model,
)
from distil.models.resnet_cifar import CifarResNet
from distil.models.seed import MLP, LargeNet, SmallNet, TinyCNN
from distil.models.vit import TokenLogits, VisionTransformer, plain_logits

__all__ = [
    "MLP",
    "MODELS",
    "CifarResNet",
    "LargeNet",
    "SmallNet",
    "TinyCNN",
    "TokenLogits",
    "VisionTransformer",
    "build_from_spec",
    "build_pruned",
    "create_model",
    "crepe",
    "hf",
    "is_timm_available",
    "is_torchvision_available",
    "list_models",
    "loads_trained_weights",
    "model_spec",
    "plain_logits",
    "pruned_spec",
    "recurrent",
    "register_model",
    "resnet_cifar",
    "seed",
    "seg",
    "vit",
]
