"""The teacher's outputs checked to be logits, on the first batch, before any distillation starts.

Every distillation loss softens the teacher's outputs with a softmax at temperature T, so they must be
pre-activation logits. A teacher that ends in a softmax or a sigmoid (a pretrained model published with
its probability head, e.g. the CREPE pitch tracker) gives values in [0, 1] whose softmax is nearly
uniform: the KD loss is tiny, the student learns almost nothing, and nothing fails. `distil.distill`
runs :func:`check_teacher_outputs` on each teacher before it picks a live or cached source, so the live
teacher, the cache build and every member of an ensemble are checked once, on raw outputs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from distil.data import DataBundle
from distil.errors import NotLogitsError

# Enough values that a batch of real logits essentially never lies wholly in [0, 1] by chance.
MIN_VALUES = 64
# Samples run when the first one gives fewer than MIN_VALUES outputs (a classifier with few classes).
PROBE_SAMPLES = 32
# Softmax rows sum to 1 up to rounding: float32 error grows with the row width.
SUM_TOLERANCE = 1e-3
# All-zero (or nearly) outputs, e.g. a zero-initialised head, are not probabilities of any kind.
NEAR_ZERO = 1e-2

ProbabilityKind = Literal["softmax", "sigmoid"]


def probability_kind(outputs: torch.Tensor, single_output: bool = False) -> ProbabilityKind | None:
    """Whether model outputs look like probabilities rather than logits.

    Args:
        outputs: (B, K) or (B, T, V) outputs of one batch.
        single_output: K = 1 outputs are sigmoid logits too (a multilabel model of one label), so all of
            them in [0, 1] is a sigmoid as for K >= 2; otherwise one output per sample is never judged.

    Returns:
        "softmax" when every value is in [0, 1] and every row sums to 1 (within rounding); "sigmoid" when
        every value is in [0, 1], K >= 2, the batch has at least `MIN_VALUES` values and not all are near
        0; None otherwise (logits, or too little evidence to tell).
    """
    if outputs.numel() == 0 or outputs.dim() < 2 or not torch.is_floating_point(outputs):
        return None
    rows = outputs.detach().reshape(-1, outputs.shape[-1]).float()
    if not bool(torch.isfinite(rows).all()) or bool((rows < 0).any()) or bool((rows > 1).any()):
        return None
    width = rows.shape[-1]
    tolerance = max(SUM_TOLERANCE, width * torch.finfo(outputs.dtype).eps)  # bf16 rows round coarsely
    if width >= 2 and float((rows.sum(-1) - 1).abs().max()) <= tolerance:
        return "softmax"
    if (width >= 2 or single_output) and rows.numel() >= MIN_VALUES and float(rows.max()) >= NEAR_ZERO:
        return "sigmoid"
    return None


# How a distillation run says that outputs in [0, 1] really are logits (`distil eval` has its own flag).
LOGITS_ESCAPE = "--set kd.teacher_outputs=logits"


def check_logits(
    outputs: torch.Tensor, role: str = "teacher", single_output: bool = False, escape: str = LOGITS_ESCAPE
) -> None:
    """Refuse outputs that look like probabilities (see :func:`probability_kind`).

    Args:
        outputs, single_output: as in :func:`probability_kind`.
        role: who produced them, as the message names it ("teacher", "model in 'x.pt'").
        escape: the option that says the values are logits after all, named in the message.

    Raises:
        NotLogitsError: with what was seen and the fix.
    """
    kind = probability_kind(outputs, single_output)
    if kind is None:
        return
    seen = (
        "all in [0, 1], rows sum to 1: a softmax"
        if kind == "softmax"
        else f"all {outputs.numel()} values in [0, 1]: a sigmoid"
    )
    undo = "torch.log(p)" if kind == "softmax" else "torch.logit(p)"
    raise NotLogitsError(
        f"the {role}'s outputs look like probabilities ({seen}): distil expects pre-activation logits. "
        f"Remove the final {kind} from the {role} (e.g. wrap it to return the layer before), or return "
        f"{undo} of its outputs, which are the logits up to a constant. Distilling probabilities as logits "
        "gives a near-zero KD loss and a student that learns almost nothing. If these values really are "
        f"logits, say so with {escape}."
    )


def _first_outputs(model: nn.Module, data: DataBundle, samples: int) -> torch.Tensor | None:
    """The model's outputs (eval mode, no gradients) on the first `samples` training samples."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(data.train.head(samples).to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    return out if isinstance(out, torch.Tensor) else None


def check_teacher_outputs(
    teacher: nn.Module, data: DataBundle, role: str = "teacher", escape: str = LOGITS_ESCAPE
) -> None:
    """Run `teacher` on the first training samples and refuse it if its outputs are probabilities.

    The one probability check of distil: `distill` runs it on its teachers, `distil eval` on every model it
    measures (`escape` names the option that skips it there).

    One sample suffices for a sequence model's (1, T, V); a classifier with few classes is run on
    `PROBE_SAMPLES` samples, enough values to tell sigmoid outputs from logits (`MIN_VALUES` samples for a
    multilabel model, whose single label is judged too).

    Raises:
        NotLogitsError: the outputs look like softmax or sigmoid probabilities.
    """
    single = data.task == "multilabel"  # one sigmoid label is a probability too
    out = _first_outputs(teacher, data, 1)
    if out is not None and out.numel() < MIN_VALUES and len(data.train) > 1:
        out = _first_outputs(teacher, data, MIN_VALUES if single else PROBE_SAMPLES)
    if out is not None:
        check_logits(out, role, single_output=single, escape=escape)
