"""Bits per byte of a language model on a split: a quality number that does not depend on the tokenizer.

Perplexity is per token, so a byte-level model and a BPE model (or two BPEs) are not comparable by it: a
model with longer tokens spends more nats per token on the same text. The negative log-likelihood of the
labelled tokens summed, divided by the bytes those tokens spell and by ln 2, is (up to how specials such
as EOS are charged) the same quantity for any tokenizer of the same text. Special tokens spell no bytes;
their NLL still counts (a model must predict the end of a document too).
"""

from __future__ import annotations

import torch
from torch import nn

from distil.data.alignment import byte_table
from distil.data.bundle import SampleSplit
from distil.data.tokenize import Tokenizer
from distil.errors import ConfigError, DataError
from distil.measure.tasks import LM_TASK, split_evaluation, split_sums

# Labelled tokens spell no bytes: bits per byte is undefined.
_NO_BYTES = "bits per byte: the split's labelled tokens spell no bytes."


def token_byte_lengths(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) int64: the bytes each id spells (0 for special tokens).

    Raises:
        ConfigError: a tokenizer that is not byte-level (its tokens' bytes are not known exactly).
    """
    return torch.tensor([len(b or b"") for b in byte_table(tokenizer)], dtype=torch.long)


def known_token_bytes(tokenizer: Tokenizer | None) -> tuple[torch.Tensor | None, str]:
    """The byte length of each id of `tokenizer` for a per-byte measurement, or None and why not.

    Returns:
        (``token_byte_lengths(tokenizer)`` or None, "" or the reason: no tokenizer recorded, or one that
        is not byte-level, such as a SentencePiece vocabulary whose pieces are not bytes).
    """
    if tokenizer is None:
        return None, "the data records no tokenizer that can be rebuilt"
    try:
        return token_byte_lengths(tokenizer), ""
    except ConfigError as e:
        return None, str(e)


def split_bits_per_byte(
    model: nn.Module, split: SampleSplit, tokenizer: Tokenizer, *, batch_size: int = 16
) -> dict[str, float]:
    """Bits per byte (and per-byte perplexity, 2 ** bpb) of `model` on the labelled tokens of `split`.

    The language-modelling task's streamed sums (`distil.measure.tasks`), the same pass every report's
    measurement makes, read for their per-byte figures.

    Args:
        model: a causal LM over `tokenizer`'s ids; its training flag is restored afterwards.
        split: token blocks (``inputs`` and next-token ``labels``, `IGNORE_INDEX` where none).
        tokenizer: the split's tokenizer (a byte table is needed: byte or byte-level BPE).
        batch_size: blocks per forward pass.

    Returns:
        ``{"bits_per_byte", "byte_perplexity", "nll_nats", "bytes"}``.

    Raises:
        ConfigError: a tokenizer that is not byte-level.
        DataError: the split's labelled tokens spell no bytes.
    """
    sums, _ = split_sums(
        model, split, LM_TASK, batch_size=batch_size, token_bytes=token_byte_lengths(tokenizer)
    )
    totals = sums.cpu()
    metrics = split_evaluation(LM_TASK).finish(totals)
    bpb = metrics.get("bits_per_byte")
    if bpb is None:
        raise DataError(_NO_BYTES)
    assert metrics["byte_perplexity"] is not None
    return {
        "bits_per_byte": bpb,
        "byte_perplexity": metrics["byte_perplexity"],
        "nll_nats": float(totals[4]),
        "bytes": float(totals[5]),
    }


__all__ = ["known_token_bytes", "split_bits_per_byte", "token_byte_lengths"]
