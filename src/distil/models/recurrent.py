"""Recurrent students for token data: a (bi)LSTM text classifier and GRU/LSTM causal language models.

* ``lstm-classifier``: embedding, a stack of (bi)LSTM layers, pooling over the non-pad positions
  (``last`` valid state, ``mean`` or ``max``) and a linear head: ids (B, T) in, logits (B, K) out, the
  BiLSTM student of Tang et al. 2019 ("Distilling Task-Specific Knowledge from BERT into Simple Neural
  Networks"). Its vocabulary and pad id are kwargs, as ``hf-seq-classifier``'s config gives them
  (default: distil's byte tokenizer, 259 ids, PAD 258); the run checks they are the data's.
* ``gru-lm`` / ``lstm-lm``: embedding, a stack of GRU/LSTM layers and a head (tied to the embedding or
  not): ids (B, T) in, logits (B, T, V) out, with `num_classes` = the vocabulary, as ``hf-causal-lm``.

Padding never changes a classifier's output: positions holding the pad id (or 0 in an explicit
``attention_mask``) are left out of the pooling, and the backward direction reads each row's valid
tokens reversed in place, so the padding comes after them in both directions. Padding must be on the
right (distil's text rows are right-padded); a left-padded mask is refused.

A language model's recurrent state plays the role of a transformer's KV cache: ``model(ids,
past_key_values=state, use_cache=True)`` returns the logits and the new state, so distil's one decoder
(:func:`distil.measure.lm.decode`: ``greedy_ids``, ``generation_latency``) runs it one token per step.
Its forward takes no ``position_ids``: batched left-padded prompts (on-policy generation) would fold
the padding into the state, so :func:`distil.measure.lm.decode_problem` names it and on-policy
distillation refuses the model before any work.

Example:
    >>> from distil.models import create_model
    >>> student = create_model("lstm-classifier", num_classes=7, hidden_size=64, bidirectional=True)
    >>> lm = create_model("gru-lm", num_classes=259, hidden_size=128, num_layers=2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from distil.errors import ModelError
from distil.models.registry import register_model

# distil's byte tokenizer (distil.data.tokenize.ByteTokenizer): the default vocabulary and its PAD id.
_BYTE_VOCAB, _BYTE_PAD = 259, 258
POOLINGS = ("last", "mean", "max")
Pooling = Literal["last", "mean", "max"]


def _tracing() -> bool:
    """Whether the module is being traced (ONNX export): data-dependent checks are skipped then."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _check_right_padded(mask: torch.Tensor, what: str) -> None:
    """Refuse a mask with a valid position after a padded one (left padding) in some row."""
    if _tracing() or mask.shape[1] < 2:
        return
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ModelError(
            f"{what} reads right-padded rows (padding after the tokens), but the attention mask has a valid "
            "position after a padded one; pad on the right (distil's text data does) or pass rows one by one."
        )


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first ``lengths[b]`` positions reversed in place, the rest (padding) left where it is.

    Args:
        x: (B, T, D).
        lengths: (B,) valid positions per row (right padding).

    Returns:
        (B, T, D); applying it twice gives `x` back.
    """
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    last = lengths.unsqueeze(1) - 1
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class BiLSTMEncoder(nn.Module):
    """A stack of LSTM layers, bidirectional or not, whose outputs at valid positions ignore the padding.

    Each direction is its own one-layer LSTM: the backward one reads each row's valid tokens reversed
    (:func:`reverse_valid`), so the right padding comes after them in both directions.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, dropout: float
    ):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * directions
            self.forward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
            if bidirectional:
                self.backward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
        self.dropout = nn.Dropout(dropout)
        self.output_size = hidden_size * directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, directions * H) outputs for inputs (B, T, D) with `lengths` (B,) valid positions each."""
        for layer, forward_lstm in enumerate(self.forward_layers):
            if layer:
                x = self.dropout(x)
            out, _ = forward_lstm(x)
            if len(self.backward_layers):
                back, _ = self.backward_layers[layer](reverse_valid(x, lengths))
                out = torch.cat([out, reverse_valid(back, lengths)], dim=-1)
            x = out
        return x


class LSTMClassifier(nn.Module):
    """Embedding, a (bi)LSTM stack, pooling over the non-pad positions and a linear head: (B, T) -> (B, K).

    Args:
        vocab_size: the token ids' range.
        num_classes: K.
        pad_id: the id that pads rows (masked out of the pooling); None: nothing pads.
        embed_dim: embedding width.
        hidden_size: LSTM width per direction.
        num_layers: stacked LSTM layers.
        bidirectional: a backward direction too (BiLSTM).
        pooling: ``last`` (each direction's state after all valid tokens), ``mean`` or ``max`` over them.
        head_hidden: width of a ReLU layer before the classifier (0: none).
        dropout: before the head and between LSTM layers.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        pad_id: int | None,
        embed_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        pooling: Pooling,
        head_hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.vocab_size, self.pad_id, self.pooling = vocab_size, pad_id, pooling
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.encoder = BiLSTMEncoder(embed_dim, hidden_size, num_layers, bidirectional, dropout)
        width = self.encoder.output_size
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if head_hidden:
            layers += [nn.Linear(width, head_hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = head_hidden
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, K) for ids (B, T); `attention_mask` None: every position not holding the pad id."""
        mask = self._mask(input_ids, attention_mask)
        lengths = mask.sum(1)
        states = self.encoder(self.embedding(input_ids), lengths)  # (B, T, W)
        return self.head(self._pool(states, mask, lengths))

    def _mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is not None:
            mask = attention_mask.bool()
        elif self.pad_id is None:
            mask = torch.ones_like(input_ids, dtype=torch.bool)
        else:
            mask = input_ids != self.pad_id
        _check_right_padded(mask, "lstm-classifier")
        return mask

    def _pool(self, states: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, W) from states (B, T, W) over the valid positions; a row of padding only pools to zeros."""
        valid = mask.unsqueeze(-1)
        if self.pooling == "mean":
            return (states * valid).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(states.dtype)
        if self.pooling == "max":
            pooled = states.masked_fill(~valid, float("-inf")).amax(1)
            return torch.where(lengths.unsqueeze(-1) > 0, pooled, torch.zeros_like(pooled))
        # last: the forward direction after the last valid token; the backward one after reading the
        # row from its end back to position 0.
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
        pooled = states.gather(1, last).squeeze(1)
        if self.bidirectional:
            half = states.shape[-1] // 2
            pooled = torch.cat([pooled[:, :half], states[:, 0, half:]], dim=-1)
        return torch.where(lengths.unsqueeze(-1) > 0, pooled, torch.zeros_like(pooled))


@dataclass
class RecurrentLMOutput:
    """What a recurrent LM returns with ``use_cache=True``: as a transformers output, the state as cache.

    Attributes:
        logits: (B, T, V).
        past_key_values: the recurrent state after the last position (the GRU's h, the LSTM's (h, c)).
    """

    logits: torch.Tensor
    past_key_values: Any


@dataclass(frozen=True)
class RecurrentLMConfig:
    """The few config fields distil's decoder reads of a causal LM (:func:`distil.measure.lm.decode`)."""

    vocab_size: int
    is_encoder_decoder: bool = False


class RecurrentLM(nn.Module):
    """Embedding, stacked GRU or LSTM layers and a head: ids (B, T) -> next-token logits (B, T, V).

    Args:
        cell: ``gru`` or ``lstm``.
        vocab_size: V.
        embed_dim: embedding width.
        hidden_size: recurrent width.
        num_layers: stacked layers.
        dropout: between layers and before the head.
        tie_weights: the head shares the embedding's matrix (a projection to `embed_dim` comes first when
            the widths differ).
    """

    def __init__(
        self,
        cell: Literal["gru", "lstm"],
        vocab_size: int,
        *,
        embed_dim: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        tie_weights: bool,
    ) -> None:
        super().__init__()
        self.config = RecurrentLMConfig(vocab_size=vocab_size)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(
            embed_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.dropout = nn.Dropout(dropout)
        project = tie_weights and hidden_size != embed_dim
        self.project: nn.Module = nn.Linear(hidden_size, embed_dim) if project else nn.Identity()
        self.head = nn.Linear(embed_dim if tie_weights else hidden_size, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> Any:
        """Logits (B, T, V) for ids (B, T); with `use_cache`, a :class:`RecurrentLMOutput` with the state.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T) 1 on tokens, 0 on right padding (which cannot reach an earlier position
                of a causal model, so it changes nothing); left padding is refused.
            past_key_values: the state a previous call returned (None: start from zeros).
            use_cache: return the logits and the new state (for step-wise decoding).

        Raises:
            ModelError: left padding in `attention_mask`.
        """
        if attention_mask is not None:
            _check_right_padded(attention_mask.bool(), "a recurrent LM")
        out, state = self.rnn(self.embedding(input_ids), past_key_values)
        logits = self.head(self.project(self.dropout(out)))
        return RecurrentLMOutput(logits, state) if use_cache else logits


def _positive(name: str, **sizes: int) -> None:
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{name}: {key} must be a positive integer, got {value!r}.")


def _check_dropout(name: str, dropout: float) -> None:
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelError(f"{name}: dropout must be in [0, 1), got {dropout!r}.")


@register_model("lstm-classifier")
def lstm_classifier(
    *,
    num_classes: int,
    vocab_size: int = _BYTE_VOCAB,
    pad_id: int | None = None,
    embed_dim: int = 64,
    hidden_size: int = 128,
    num_layers: int = 1,
    bidirectional: bool = True,
    pooling: str = "last",
    head_hidden: int = 0,
    dropout: float = 0.0,
) -> LSTMClassifier:
    """A (bi)LSTM text classifier with `num_classes` labels (see :class:`LSTMClassifier`).

    Args:
        num_classes: K.
        vocab_size: the tokenizer's vocabulary (default 259, distil's byte tokenizer).
        pad_id: the id the data pads with (default: 258 with the byte vocabulary, else required unless
            nothing pads; the run checks it is the data's).
        embed_dim, hidden_size, num_layers, bidirectional, pooling, head_hidden, dropout: see
            :class:`LSTMClassifier`.

    Raises:
        ModelError: a size that is not positive, an unknown pooling, a pad id outside the vocabulary.
    """
    name = "lstm-classifier"
    _positive(
        name, vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers
    )
    if pooling not in POOLINGS:
        raise ModelError(f"{name}: pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
    if head_hidden < 0:
        raise ModelError(f"{name}: head_hidden must be >= 0 (0: no hidden layer), got {head_hidden!r}.")
    _check_dropout(name, dropout)
    if pad_id is None and vocab_size == _BYTE_VOCAB:
        pad_id = _BYTE_PAD
    if pad_id is not None and not 0 <= pad_id < vocab_size:
        raise ModelError(f"{name}: pad_id {pad_id} is outside the vocabulary of {vocab_size} ids.")
    return LSTMClassifier(
        vocab_size,
        num_classes,
        pad_id=pad_id,
        embed_dim=embed_dim,
        hidden_size=hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        pooling=pooling,  # type: ignore[arg-type]  # checked against POOLINGS above
        head_hidden=head_hidden,
        dropout=dropout,
    )


def _recurrent_lm(
    cell: Literal["gru", "lstm"],
    num_classes: int,
    embed_dim: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    tie_weights: bool,
) -> RecurrentLM:
    name = f"{cell}-lm"
    _positive(name, embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers)
    _check_dropout(name, dropout)
    return RecurrentLM(
        cell,
        num_classes,
        embed_dim=embed_dim,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        tie_weights=tie_weights,
    )


@register_model("gru-lm")
def gru_lm(
    *,
    num_classes: int,
    embed_dim: int = 128,
    hidden_size: int = 256,
    num_layers: int = 2,
    dropout: float = 0.0,
    tie_weights: bool = True,
) -> RecurrentLM:
    """A stacked-GRU causal LM with `num_classes` = the vocabulary (see :class:`RecurrentLM`).

    Raises:
        ModelError: a size that is not positive or a dropout outside [0, 1).
    """
    return _recurrent_lm("gru", num_classes, embed_dim, hidden_size, num_layers, dropout, tie_weights)


@register_model("lstm-lm")
def lstm_lm(
    *,
    num_classes: int,
    embed_dim: int = 128,
    hidden_size: int = 256,
    num_layers: int = 2,
    dropout: float = 0.0,
    tie_weights: bool = True,
) -> RecurrentLM:
    """A stacked-LSTM causal LM with `num_classes` = the vocabulary (see :class:`RecurrentLM`).

    Raises:
        ModelError: a size that is not positive or a dropout outside [0, 1).
    """
    return _recurrent_lm("lstm", num_classes, embed_dim, hidden_size, num_layers, dropout, tie_weights)


__all__ = [
    "POOLINGS",
    "BiLSTMEncoder",
    "LSTMClassifier",
    "RecurrentLM",
    "RecurrentLMConfig",
    "RecurrentLMOutput",
    "gru_lm",
    "lstm_classifier",
    "lstm_lm",
    "reverse_valid",
]
