"""Loss modules over logits, with the one signature every loss in distil has:

loss(student_out, teacher_out, batch) -> dict of named scalar terms, the total under "loss".

Hinton KD is not a module of its own: it is the composed loss `{kd: kd_weight, ce: ce_weight}` of the
registered terms below (`distil.losses.compose.build_loss`), so schedules and the teacher cache work
the same for it as for every other method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distil.data.batch import LABELS, MASK
from distil.errors import ConfigError
from distil.losses.chunked import RowOptions
from distil.losses.functional import (
    cross_entropy,
    dkd,
    js_divergence,
    kd_kl,
    logit_mse,
    reverse_kl,
    total_variation,
)
from distil.losses.registry import SOFTMAX_TASKS, Term, TermContext, TermInputs, register_loss
from distil.losses.sparse import TAIL_MODES, SparseTargets, sparse_kd
from distil.models.vit import plain_logits


class CELoss(nn.Module):
    """Plain supervised training: cross-entropy on the labels (teacher_out is ignored)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(
        self, student_out: torch.Tensor, teacher_out: Any, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        # A distillation-token student trains both heads through their average, as at test time.
        ce = cross_entropy(
            plain_logits(student_out), batch[LABELS], self.label_smoothing, mask=batch.get(MASK)
        )
        return {"loss": ce, "ce": ce}


# Registered terms for composed losses (see distil.losses.compose); each wraps one pure function and
# passes it the batch's mask: logits (B, K) or (B, T, V), reduced over the valid positions. `chunk_size`
# (positions per chunk of the (B, T, V) path, None = about 8M logits) trades peak memory for speed.


def _teacher(inputs: TermInputs) -> torch.Tensor:
    if inputs.teacher_logits is None:
        raise ValueError("this loss term needs teacher logits, but no teacher output was given")
    if not isinstance(inputs.teacher_logits, torch.Tensor | SparseTargets):
        raise ConfigError(
            "the teacher reads the text with another tokenizer (kd.teacher_tokenizer), so its outputs are over "
            "another vocabulary and other positions; per-token terms cannot compare them. Use the "
            "cross-tokenizer terms uld or alm (with ce)."
        )
    if isinstance(inputs.teacher_logits, SparseTargets):
        raise ValueError(
            "a sparse (topk/sampled) sequence teacher cache serves only the kd term; "
            "use student_train.teacher_cache.form=full for the other teacher terms"
        )
    return inputs.teacher_logits


@register_loss("ce")
class CETerm(Term):
    """Cross-entropy on the labels (uses the recipe's label smoothing)."""

    tasks = SOFTMAX_TASKS

    needs_teacher = False
    uses_mask = True

    def __init__(self, ctx: TermContext, chunk_size: int | None = None) -> None:
        super().__init__()
        self.label_smoothing = ctx.label_smoothing
        self.chunk_size = chunk_size

    def row_part(self, temperature: float) -> tuple[str, RowOptions] | None:
        return "ce", RowOptions(smoothing=self.label_smoothing)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return cross_entropy(
            inputs.student_logits,
            inputs.labels,
            self.label_smoothing,
            mask=inputs.mask,
            chunk_size=self.chunk_size,
        )


@register_loss("kd")
class KDTerm(Term):
    """Hinton KD: T^2 * KL(p_teacher^T || p_student^T).

    With sparse teacher targets (a topk/sampled sequence cache) the KL is estimated from them
    (`distil.losses.sparse.sparse_kd`; `tail` is its top-k tail mode).
    """

    tasks = SOFTMAX_TASKS
    uses_mask = True

    def __init__(self, ctx: TermContext, chunk_size: int | None = None, tail: str = "renormalize") -> None:
        super().__init__()
        if tail not in TAIL_MODES:
            raise ConfigError(f"kd option tail must be one of {list(TAIL_MODES)}, got {tail!r}")
        self.chunk_size = chunk_size
        self.tail = tail

    def row_part(self, temperature: float) -> tuple[str, RowOptions] | None:
        return "kl", RowOptions(temperature)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        teacher: Any = inputs.teacher_logits
        if isinstance(teacher, SparseTargets):  # a top-k or sampled sequence cache (distil.losses.sparse)
            return sparse_kd(inputs.student_logits, teacher, inputs.temperature, inputs.mask, tail=self.tail)
        return kd_kl(
            inputs.student_logits,
            _teacher(inputs),
            inputs.temperature,
            mask=inputs.mask,
            chunk_size=self.chunk_size,
        )


@register_loss("dkd")
class DKDTerm(Term):
    """Decoupled KD: alpha * TCKD + beta * NCKD (Zhao et al. 2022)."""

    tasks = SOFTMAX_TASKS

    uses_mask = True

    def __init__(self, ctx: TermContext, alpha: float = 1.0, beta: float = 8.0) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return dkd(
            inputs.student_logits,
            _teacher(inputs),
            inputs.labels,
            inputs.temperature,
            self.alpha,
            self.beta,
            mask=inputs.mask,
        )


@register_loss("rkl")
class ReverseKLTerm(Term):
    """Reverse KL: T^2 * KL(p_student^T || p_teacher^T)."""

    tasks = SOFTMAX_TASKS

    uses_mask = True

    def __init__(self, ctx: TermContext, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = chunk_size

    def row_part(self, temperature: float) -> tuple[str, RowOptions] | None:
        return "rkl", RowOptions(temperature)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return reverse_kl(
            inputs.student_logits,
            _teacher(inputs),
            inputs.temperature,
            mask=inputs.mask,
            chunk_size=self.chunk_size,
        )


@register_loss("js")
class JSTerm(Term):
    """Generalized Jensen-Shannon divergence of the softened distributions, times T^2 (GKD's JSD(beta)).

    Options:
        beta: the teacher's weight in the mixture m = beta p_t + (1 - beta) p_s; 0.5 (default) is the
            symmetric JSD, 0 is forward KL (`kd`), 1 reverse KL (`rkl`), as in TRL's GKD trainer.
        chunk_size: positions per chunk on (B, T, V) logits.
    """

    tasks = SOFTMAX_TASKS
    uses_mask = True

    def __init__(self, ctx: TermContext, beta: float = 0.5, chunk_size: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"js beta must be in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta}")
        self.beta, self.chunk_size = beta, chunk_size

    def row_part(self, temperature: float) -> tuple[str, RowOptions] | None:
        # The ends are forward and reverse KL, as `js_divergence` maps them.
        kind = "kl" if self.beta == 0.0 else "rkl" if self.beta == 1.0 else "jsd"
        return kind, RowOptions(temperature, beta=self.beta)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return js_divergence(
            inputs.student_logits,
            _teacher(inputs),
            inputs.temperature,
            mask=inputs.mask,
            beta=self.beta,
            chunk_size=self.chunk_size,
        )


@register_loss("tvd")
class TVDTerm(Term):
    """Total variation distance of the softened distributions, times T^2."""

    tasks = SOFTMAX_TASKS

    uses_mask = True

    def __init__(self, ctx: TermContext, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = chunk_size

    def row_part(self, temperature: float) -> tuple[str, RowOptions] | None:
        return "tvd", RowOptions(temperature)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return total_variation(
            inputs.student_logits,
            _teacher(inputs),
            inputs.temperature,
            mask=inputs.mask,
            chunk_size=self.chunk_size,
        )


@register_loss("logit_mse")
class LogitMSETerm(Term):
    """Mean squared error between student and teacher logits."""

    uses_mask = True

    def __init__(self, ctx: TermContext, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = chunk_size

    def row_part(self, temperature: float) -> tuple[str, RowOptions] | None:
        return "mse", RowOptions(1.0)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return logit_mse(
            inputs.student_logits, _teacher(inputs), mask=inputs.mask, chunk_size=self.chunk_size
        )
