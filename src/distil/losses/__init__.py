"""Distillation losses: pure functions in `functional`, term modules per family, composed by name.

Families: logit (kd, dkd, rkl, js, tvd, logit_mse, ce), feature (fitnet, at), relational (rkd, pkt, sp),
contrastive (crd), cross-tokenizer (uld, alm), DeiT's distillation token (deit, deit_soft). `LOSSES` lists
the registered terms; `build_loss` composes a recipe's terms (Hinton KD is the composition
`{kd: kd_weight, ce: ce_weight}`).
"""

from distil.losses import (  # noqa: F401  (registers their terms)
    contrastive,
    crosstok,
    deit,
    dense,
    embedding,
    feature,
    multilabel,
    regression,
    relational,
)
from distil.losses.compose import ComposedLoss, build_loss, resolve_terms, supervised_loss
from distil.losses.functional import (
    IGNORE_INDEX,
    attention_transfer,
    contrastive_nce,
    cross_entropy,
    dkd,
    ensemble_logits,
    fitnet_hint,
    js_divergence,
    kd_kl,
    logit_mse,
    mean_logits,
    pkt,
    reverse_kl,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
    total_variation,
    valid_rows,
)
from distil.losses.logit import CELoss
from distil.losses.registry import (
    LOSSES,
    METHODS,
    TeacherNeeds,
    Term,
    TermContext,
    TermInputs,
    method_terms,
    register_loss,
)

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "METHODS",
    "CELoss",
    "ComposedLoss",
    "TeacherNeeds",
    "Term",
    "TermContext",
    "TermInputs",
    "attention_transfer",
    "build_loss",
    "contrastive_nce",
    "cross_entropy",
    "dkd",
    "ensemble_logits",
    "fitnet_hint",
    "js_divergence",
    "kd_kl",
    "logit_mse",
    "mean_logits",
    "method_terms",
    "pkt",
    "register_loss",
    "resolve_terms",
    "reverse_kl",
    "rkd_angle",
    "rkd_distance",
    "similarity_preserving",
    "supervised_loss",
    "total_variation",
    "valid_rows",
]
