"""Distillation losses: pure functions in `functional`, modules with the common signature here."""

from distil.losses.functional import cross_entropy, kd_kl
from distil.losses.logit import CELoss, KDLoss

__all__ = ["CELoss", "KDLoss", "cross_entropy", "kd_kl"]
