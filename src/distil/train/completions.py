"""Completions generated for the prompts of a language-model batch: the student's own (on-policy
distillation) or the teacher's (sequence-level KD).

A prompt/completion batch (:mod:`distil.data.text`, chat, arithmetic) holds one sample per row, starting
at its prompt's first token: ``inputs[t]`` is token ``t`` and ``labels[t]`` the next token where it belongs
to the completion (``IGNORE_INDEX`` on the prompt and on the padding after the end of sequence). The
prompt of a row is therefore ``inputs[:p]`` with ``p`` one past the first labelled position.

:func:`generate_completions` reads each row's prompt, generates a completion for it with distil's decoder
(:func:`distil.measure.lm.decode`: KV cache, left-padded prompts with their attention mask and positions,
sampling at a temperature with top-p as transformers' ``generate`` samples, or greedy at temperature 0,
stopping each row at its end-of-sequence id; ``generate`` itself only for a model the decoder cannot
drive, with a warning), and writes the batch back
in the same layout: prompt, generated tokens (the end-of-sequence id included and labelled, as the data
labels it), then padding without labels. The shape stays (B, T): a completion gets at most the room the
block has after the longest prompt. Sampling draws from torch's global RNG, which a training state saves
per process, so a resumed run draws the same completions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distil.config import GenerationConfig
from distil.data.batch import IGNORE_INDEX, INDEX, INPUTS, LABELS, MASK
from distil.errors import DataError, ModelError
from distil.hf_common import quiet_progress
from distil.measure._util import _eval_mode
from distil.measure.lm import compile_step_problem, decode, decode_problem


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn.

    Attributes:
        temperature: softmax temperature of the sampling; 0 decodes greedily.
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = all).
        max_new_tokens: most tokens per completion (end of sequence included); None = the room the
            block leaves after the batch's longest prompt.
        compile_step: decode with the model's one-token step compiled (``decode(compile_step=True)``):
            how fast, not what is drawn, so it is left out of the seq-KD cache key.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    compile_step: bool = False

    @classmethod
    def of(cls, generation: GenerationConfig) -> Sampling:
        """The sampling a run's generation settings ask for (on-policy and seq-KD alike)."""
        return cls(
            generation.temperature, generation.top_p, generation.max_new_tokens, generation.compile_step
        )


@dataclass(frozen=True)
class Completions:
    """A batch whose completions were generated, and what it cost.

    Attributes:
        batch: the input batch's keys with ``inputs``, ``labels`` and ``mask`` replaced (same shapes).
        generated_tokens: tokens generated over all rows (each row up to and including its end of sequence).
    """

    batch: dict[str, Any]
    generated_tokens: int


def prompt_lengths(labels: torch.Tensor) -> torch.Tensor:
    """(B,) the prompt length of each row of (B, T) next-token `labels`: one past the first labelled position.

    Raises:
        DataError: a row with no labelled position (no completion, so no prompt boundary to read).
    """
    labelled = labels != IGNORE_INDEX
    missing = (~labelled.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise DataError(
            f"generating completions needs prompt/completion samples, but {len(missing)} row(s) of the batch "
            f"(e.g. row {missing[0]}) have no labelled token. Plain text has no prompts: use prompt/completion "
            "or chat records (docs/lm.md), or set the on-policy lmbda to 0."
        )
    return labelled.int().argmax(dim=1) + 1


def left_padded_prompts(
    inputs: torch.Tensor, lengths: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts `inputs[b, :lengths[b]]` right-aligned in (B, P) with `pad_id` before them, P the longest,
    and their attention mask (1 on prompt tokens): the layout batched generation reads."""
    longest = int(lengths.max())
    shift = torch.arange(longest, device=inputs.device) - (longest - lengths)[:, None]
    keep = shift >= 0
    ids = torch.where(keep, inputs.gather(1, shift.clamp(min=0)), torch.full_like(shift, pad_id))
    return ids, keep.long()


def completion_lengths(generated: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B,) tokens of each generated row up to and including its first `eos_id` (all of them without one)."""
    width = generated.shape[1]
    is_eos = generated == eos_id
    first = torch.where(
        is_eos.any(dim=1),
        is_eos.int().argmax(dim=1) + 1,
        torch.full_like(is_eos[:, 0], width, dtype=torch.long),
    )
    return first.long()


def _causal_lm(model: nn.Module) -> Any:
    hf = getattr(model, "hf", model)
    if decode_problem(hf) is not None and not hasattr(hf, "generate"):
        raise ModelError(
            f"{type(model).__name__} cannot generate: completions need a Hugging Face causal LM (hf-causal-lm, "
            "hf:DIR) or a module with a transformers-style generate()."
        )
    return hf


def check_can_generate(model: nn.Module, *, compile_step: bool = False) -> None:
    """Refuse, before any work, a model that cannot generate completions (with the compiled decoding step
    when `compile_step`).

    Raises:
        ModelError: `model` is neither a Hugging Face causal LM nor a module with a ``generate()``, or
            `compile_step` for a model the compiled step cannot run (:func:`compile_step_problem`).
    """
    hf = _causal_lm(model)
    problem = compile_step_problem(hf) if compile_step else None
    if problem is not None:
        raise ModelError(
            f"{type(model).__name__} cannot generate with the compiled decoding step: {problem}. Fix: "
            "student_train.generation.compile_step=false (decode eagerly)."
        )


def prompt_rows_problem(split: Any, batch_size: int = 1024) -> str | None:
    """What makes `split` not one prompt followed by one completion per row, or None when nothing does.

    A row's labelled positions (the next token is trained) must form one run that starts after a
    prompt of at least two tokens: plain text is labelled everywhere, a packed block of records can
    start inside a completion, a multi-turn conversation has several completions. Reads labels only
    (`split.batches`), so it is cheap for in-memory rows and memory-mapped blocks alike.

    Returns:
        None, or "training sample N <what is wrong>" for the first bad row.
    """
    for batch in split.batches(batch_size):
        labels = batch[LABELS]
        if labels.dim() != 2:
            return "training samples have one label each (a classifier's data): there are no prompts"
        labelled = labels != IGNORE_INDEX
        starts = labelled & ~torch.nn.functional.pad(labelled, (1, 0))[:, :-1]
        runs = starts.sum(dim=1)
        problems = {
            "is labelled at every position (plain text: no prompt to complete)": labelled.all(1),
            "has no completion (no labelled token)": runs == 0,
            "starts inside a completion (packed text blocks cut documents anywhere)": labelled[:, 0],
            "holds several completions (a multi-turn conversation or packed documents); one prompt per "
            "row is completed": runs > 1,
        }
        for what, bad in problems.items():
            if bool(bad.any()):
                return f"training sample {int(batch[INDEX][bad.nonzero()[0, 0]])} {what}"
    return None


EOS_FIX = (
    "Fix: end every answer with the tokenizer's end-of-sequence token (data.chat_template: builtin does; a "
    "tokenizer's chat template must end the assistant's turn with its eos_token)"
)
"""The fix that follows a `completion_end_problem` (on-policy distillation and seq-KD say the same)."""


def completion_end_problem(split: Any, eos_id: int, batch_size: int = 1024) -> str | None:
    """What makes `split`'s completions not stop at `eos_id`, or None when every one does.

    A generated completion ends at the first `eos_id`, so each completion the data teaches must hold
    it: one that ends otherwise (a chat template whose end of turn is not the tokenizer's end of
    sequence) would have the model generate past its answer until the block runs out, and the KD terms
    train on that. A completion cut by the block (labelled up to the last position) is not checked.
    Reads labels only, like `prompt_rows_problem`.

    Returns:
        None, or "training sample N ..." for the first completion without `eos_id`.
    """
    for batch in split.batches(batch_size):
        labels = batch[LABELS]
        if labels.dim() != 2:
            return None  # not token rows: `prompt_rows_problem` names that
        labelled = labels != IGNORE_INDEX
        ends_inside = labelled.any(dim=1) & ~labelled[:, -1]
        bad = ends_inside & ~(labelled & (labels == eos_id)).any(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            last = int(labels[row][labelled[row]][-1])
            return (
                f"training sample {int(batch[INDEX][row])} has a completion without the end-of-sequence id "
                f"{eos_id} (it ends with token {last}), so a generated completion would not stop where the "
                "data's answers stop"
            )
    return None


@torch.no_grad()
def generate_completions(
    model: nn.Module, batch: dict[str, Any], sampling: Sampling, *, eos_id: int, pad_id: int | None = None
) -> Completions:
    """`batch` with each row's completion replaced by one `model` generates from the row's prompt.

    Args:
        model: a causal LM (a distil ``CausalLM`` or a transformers model); put in eval mode while it
            generates, its flags restored after. No gradient flows through generation.
        batch: a prompt/completion batch with (B, T) ``inputs`` and ``labels``.
        sampling: temperature, top-p and the most new tokens.
        eos_id: the id that ends a completion (the data's end of sequence).
        pad_id: the id written after it (default `eos_id`, as the data pads).

    Returns:
        Completions: the rewritten batch (``mask`` marks the generated positions) and the token count.

    Raises:
        DataError: a row without a completion, or prompts that leave no room in the block.
    """
    inputs, labels = batch[INPUTS], batch[LABELS]
    pad = eos_id if pad_id is None else pad_id
    lengths = prompt_lengths(labels)
    block = inputs.shape[1]
    room = block - int(lengths.max()) + 1  # label positions left after the longest prompt
    new_tokens = min(sampling.max_new_tokens or room, room)
    if new_tokens < 1:
        raise DataError(
            f"a prompt fills the whole block of {block} tokens: there is no room to generate a completion."
        )
    prompts, attention = left_padded_prompts(inputs, lengths, pad)
    hf = _causal_lm(model)
    with _eval_mode(model):
        generated = _generate(hf, prompts, attention, sampling, new_tokens, eos_id, pad)
    made = completion_lengths(generated, eos_id)
    return Completions(batch=_rewrite(batch, lengths, generated, made, pad), generated_tokens=int(made.sum()))


def _generate(
    hf: Any,
    prompts: torch.Tensor,
    attention: torch.Tensor,
    sampling: Sampling,
    new_tokens: int,
    eos_id: int,
    pad_id: int,
) -> torch.Tensor:
    """(B, <= new_tokens) ids generated after the left-padded `prompts`: distil's decoder, or transformers'
    ``generate`` for a model it cannot drive (said once per model class)."""
    problem = decode_problem(hf)
    if problem is None:
        return decode(
            hf,
            prompts,
            new_tokens,
            attention_mask=attention,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop_ids=(eos_id,),
            pad_id=pad_id,
            compile_step=sampling.compile_step,
        )[0]
    warnings.warn(
        f"{type(hf).__name__}: generating with transformers' generate, not distil's faster decoder ({problem})",
        stacklevel=4,  # the caller of generate_completions (through no_grad's wrapper)
    )
    return _hf_generate(hf, prompts, attention, sampling, new_tokens, eos_id, pad_id)


def _hf_generate(
    hf: Any,
    prompts: torch.Tensor,
    attention: torch.Tensor,
    sampling: Sampling,
    new_tokens: int,
    eos_id: int,
    pad_id: int,
) -> torch.Tensor:
    """transformers' ``generate`` with distil's settings only: the ids after the prompts."""
    config = _generation_config(sampling, new_tokens, eos_id, pad_id)
    # Only the settings distil owns: a checkpoint's own generation_config (repetition penalty, suppressed
    # tokens, minimum length...) would sample from another distribution than the one the KD terms compare,
    # and transformers fills a given config's unset fields from the model's, so the model's is swapped out.
    own = getattr(hf, "generation_config", None)
    with quiet_progress():
        try:
            if own is not None:
                hf.generation_config = config
            out = hf.generate(input_ids=prompts, attention_mask=attention, generation_config=config)
        finally:
            if own is not None:
                hf.generation_config = own
    return out[:, prompts.shape[1] :]


def _generation_config(sampling: Sampling, new_tokens: int, eos_id: int, pad_id: int) -> Any:
    """A transformers GenerationConfig with nothing but `sampling`'s settings, the budget and the stop id."""
    from transformers import GenerationConfig

    sample = sampling.temperature > 0
    return GenerationConfig(
        max_new_tokens=new_tokens,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
        do_sample=sample,
        temperature=sampling.temperature if sample else 1.0,
        top_p=sampling.top_p if sample else 1.0,
        top_k=0 if sample else None,
    )


def _rewrite(
    batch: dict[str, Any], lengths: torch.Tensor, generated: torch.Tensor, made: torch.Tensor, pad_id: int
) -> dict[str, Any]:
    """The batch with rows ``prompt + generated[:made]`` right-padded, labels on the generated tokens only."""
    inputs = batch[INPUTS]
    rows, block = inputs.shape
    position = torch.arange(block + 1, device=inputs.device).expand(rows, -1)
    in_prompt = position < lengths[:, None]
    offset = position - lengths[:, None]
    in_completion = (offset >= 0) & (offset < made[:, None])
    prompt_part = inputs.gather(1, position.clamp(max=block - 1))
    completion_part = generated.gather(1, offset.clamp(min=0, max=generated.shape[1] - 1))
    sequence = torch.where(in_prompt, prompt_part, torch.where(in_completion, completion_part, pad_id))
    labels = torch.where(in_completion[:, 1:], sequence[:, 1:], IGNORE_INDEX)
    return {**batch, INPUTS: sequence[:, :-1].contiguous(), LABELS: labels, MASK: labels != IGNORE_INDEX}


__all__ = [
    "EOS_FIX",
    "Completions",
    "Sampling",
    "check_can_generate",
    "completion_end_problem",
    "completion_lengths",
    "generate_completions",
    "left_padded_prompts",
    "prompt_lengths",
    "prompt_rows_problem",
]
