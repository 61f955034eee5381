"""Teacher and student vocabularies: padding rows aligned away, different tokenizers refused.

Models of one family often pad the output layer past the tokenizer's vocabulary (32000 ids in 32064 rows,
50257 in 50304) for faster matrix multiplies. Per-token losses compare distributions id by id, so the
two outputs are cut to their common prefix - the real vocabulary - after checking, on the first batch,
that the teacher puts (almost) no probability on the ids it drops. Outputs that differ by more than
`MAX_PADDING` ids, or whose dropped ids carry mass, come from different tokenizers: distil refuses them,
because it does not map one tokenizer's ids onto another's: a teacher with another tokenizer is named by
`kd.teacher_tokenizer` and distilled with the byte-aligned terms of `distil.losses.crosstok`.
"""

from __future__ import annotations

import torch

from distil.errors import ConfigError
from distil.losses.chunked import chunk_rows

# The most rows a model pads its vocabulary by (Qwen2 pads 151665 ids to 151936: 271 rows).
MAX_PADDING = 1024

_DIFFERENT_TOKENIZERS = (
    "Per-token terms (kd, rkl, js, ...) compare the teacher's and the student's probabilities id by id, so "
    "they need the same tokenizer; distil never maps one tokenizer's ids onto another's. For a teacher with "
    "another tokenizer, set kd.teacher_tokenizer to it (the teacher then reads the same text with its own "
    "tokens, aligned by bytes) and use the cross-tokenizer terms uld or alm (e.g. kd.terms: {ce: 0.3, "
    "alm: 0.7}); or train the student on text the teacher generated (sequence-level distillation)."
)


def check_vocab_sizes(student_vocab: int, teacher_vocab: int) -> None:
    """Refuse output widths that differ by more than padding rows.

    Raises:
        ConfigError: the widths differ by more than `MAX_PADDING`, with what is needed.
    """
    if abs(student_vocab - teacher_vocab) > MAX_PADDING:
        raise ConfigError(
            f"the student's output vocabulary ({student_vocab}) and the teacher's ({teacher_vocab}) differ "
            f"by {abs(student_vocab - teacher_vocab)} ids, more than padding rows (at most {MAX_PADDING}): "
            f"the models use different tokenizers. {_DIFFERENT_TOKENIZERS}"
        )


def padding_mass(
    teacher_logits: torch.Tensor, vocab: int, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The largest teacher probability (at `temperature`) on ids >= `vocab` over the valid positions.

    Computed in chunks of positions (no fp32 copy of the whole (B, T, V) logits). Returns a 0-d tensor.
    """
    rows = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    keep = None
    if mask is not None:
        m = mask.bool()
        if m.dim() == 1 and teacher_logits.dim() == 3:
            m = m.unsqueeze(1).expand(teacher_logits.shape[:-1])
        keep = m.reshape(-1).to(rows.device)
    worst = torch.zeros((), device=rows.device)
    step = chunk_rows(rows.shape[1])
    for a in range(0, rows.shape[0], step):
        z = rows[a : a + step].float() / temperature
        mass = torch.exp(torch.logsumexp(z[:, vocab:], dim=1) - torch.logsumexp(z, dim=1))
        if keep is not None:
            mass = torch.where(keep[a : a + step], mass, 0.0)
        worst = torch.maximum(worst, mass.max())
    return worst


def align_vocab(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    tolerance: float = 1e-3,
    mask: torch.Tensor | None = None,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher logits over their common vocabulary (views, no copy).

    Args:
        student_logits: (..., V_s).
        teacher_logits: (..., V_t), the same leading shape.
        temperature: the loss's temperature (a higher one spreads more mass onto padding ids).
        tolerance: the most probability the teacher may put on the ids it drops, at any valid position.
        mask: the valid positions ((B,) or (B, T) bool), or None for all.
        check: measure the dropped mass (one host sync); False trusts an earlier check.

    Returns:
        The pair cut to `min(V_s, V_t)` ids; the inputs themselves when the widths agree.

    Raises:
        ConfigError: widths that differ beyond padding, or dropped teacher ids with more than `tolerance`
            probability; both say what is needed.
    """
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if vs == vt:
        return student_logits, teacher_logits
    check_vocab_sizes(vs, vt)
    vocab = min(vs, vt)
    if check and vt > vocab:
        worst = float(padding_mass(teacher_logits.detach(), vocab, temperature, mask))
        if worst > tolerance:
            raise ConfigError(
                f"the teacher's output has {vt} ids and the student's {vs}: the teacher puts up to "
                f"{worst:.3g} probability (at T={temperature:g}) on ids {vocab}..{vt - 1}, more than "
                f"kd.vocab_tolerance={tolerance:g}, so those are real tokens, not padding rows. "
                f"{_DIFFERENT_TOKENIZERS} If those ids are known to be unused, raise kd.vocab_tolerance."
            )
    return student_logits[..., :vocab], teacher_logits[..., :vocab]
