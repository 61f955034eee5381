"""Bits per byte of a language model on a split: a quality number that does not depend on the tokenizer.

Perplexity is per token, so a byte-level model and a BPE model (or two BPEs) are not comparable by it: a
model with longer tokens spends more nats per token on the same text. The negative log-likelihood of the
labelled tokens summed, divided by the bytes those tokens spell and by ln 2, is (up to how specials such
as EOS are charged) the same quantity for any tokenizer of the same text. Special tokens spell no bytes;
their NLL still counts (a model must predict the end of a document too).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distil.data.alignment import byte_table
from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS, call_model
from distil.data.bundle import SampleSplit
from distil.data.tokenize import Tokenizer
from distil.errors import DataError
from distil.measure._util import _eval_mode, _model_device


def token_byte_lengths(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) int64: the bytes each id spells (0 for special tokens)."""
    return torch.tensor([len(b or b"") for b in byte_table(tokenizer)], dtype=torch.long)


@torch.no_grad()
def split_bits_per_byte(
    model: nn.Module, split: SampleSplit, tokenizer: Tokenizer, *, batch_size: int = 16
) -> dict[str, float]:
    """Bits per byte (and per-byte perplexity, 2 ** bpb) of `model` on the labelled tokens of `split`.

    Args:
        model: a causal LM over `tokenizer`'s ids; its training flag is restored afterwards.
        split: token blocks (``inputs`` and next-token ``labels``, `IGNORE_INDEX` where none).
        tokenizer: the split's tokenizer (a byte table is needed: byte or byte-level BPE).
        batch_size: blocks per forward pass.

    Returns:
        ``{"bits_per_byte", "byte_perplexity", "nll_nats", "bytes"}``.

    Raises:
        DataError: the split's labelled tokens spell no bytes.
    """
    lengths = token_byte_lengths(tokenizer)
    device = _model_device(model)
    nll = 0.0
    total = 0
    with _eval_mode(model):
        for batch in split.batches(batch_size):
            labels = batch[LABELS].to(device)
            logits = call_model(model, batch[INPUTS].to(device)).float()
            nll += float(
                nn.functional.cross_entropy(
                    logits.flatten(0, 1), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
                )
            )
            keep = labels != IGNORE_INDEX
            total += int(lengths.to(device)[labels[keep].clamp(max=len(lengths) - 1)].sum())
    if total == 0:
        raise DataError("bits per byte: the split's labelled tokens spell no bytes.")
    bpb = nll / total / math.log(2)
    return {"bits_per_byte": bpb, "byte_perplexity": 2.0**bpb, "nll_nats": nll, "bytes": float(total)}


__all__ = ["split_bits_per_byte", "token_byte_lengths"]
