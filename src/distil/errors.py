"""The errors distil raises on purpose.

Every message says what was received, what is valid, and how to fix it. The CLI prints these
without a traceback and exits non-zero; anything else escaping is a bug in distil.
"""

from __future__ import annotations


class DistilError(Exception):
    """Base class: a user-facing problem with a message that explains the fix."""


class ConfigError(DistilError):
    """A recipe or option is invalid (unknown key, wrong type, impossible value)."""


class DataError(DistilError):
    """A dataset is missing, corrupt, or does not fit the model (shapes, class counts)."""


class CheckpointError(DistilError):
    """A checkpoint is missing, corrupt, unsafe to load, or does not match its sidecar or model."""


class ModelError(DistilError):
    """A model name or factory cannot be resolved or built."""


class TransferError(DistilError):
    """Knowledge cannot be transferred between two models (shapes, names, layer maps)."""


class TrainingError(DistilError):
    """Training hit a numerical fault (NaN/Inf) or a resource limit."""
