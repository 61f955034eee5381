"""On-policy distillation: with probability `lmbda`, a batch trains on completions the student samples.

GKD (Agarwal et al. 2024; TRL's ``GKDTrainer``) overrides one step of supervised KD: before the forward
pass, a coin decides whether the batch's completions are replaced by the student's own, sampled from each
row's prompt (:func:`distil.train.completions.generate_completions`). The teacher then scores the rewritten
batch live, and the divergence terms compare the two models on the generated tokens only (the batch's
``mask``). The rest of the step is the one training loop's: :class:`OnPolicy` is a batch rewriter that
`distil.train.engine.fit` calls on each batch, and `distil.api.distill` builds it from
``student_train.generation``.

The coin of step ``s`` is drawn from a generator seeded by ``(seed, s)``: every rank draws the same coin at
the same step (ranks generate together, so none waits on another's generation), and a resumed run, which
restores the step, draws the same coins without any saved state. Sampling itself uses torch's global RNG,
which a training state saves per rank, so a resumed run also samples the same completions.

A generated batch carries ``batch["generated"] = True`` (:data:`distil.data.batch.GENERATED`): a composed
loss then leaves out its label-only terms (``ce``), whose labels would be the student's own samples.
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from distil.config import GenerationConfig, KDConfig, TrainConfig
from distil.data import DataBundle
from distil.data.batch import GENERATED
from distil.data.text import EOS_ID
from distil.errors import ConfigError, DataError
from distil.losses.compose import ComposedLoss, resolve_terms
from distil.losses.registry import LOSSES
from distil.train.completions import (
    EOS_FIX,
    Sampling,
    check_can_generate,
    completion_end_problem,
    generate_completions,
    prompt_rows_problem,
)
from distil.train.distributed import reduce_mean


class OnPolicy:
    """A batch rewriter: with probability `lmbda`, the batch's completions become the student's own.

    Called by the training loop as ``rewriter(student, batch, step)`` on each batch (already on the
    device), with the unwrapped student; returns the batch to train on. It counts what it generated
    over an epoch; ``end_epoch`` gives those counts as record fields (every rank must call it).

    Args:
        lmbda: probability that a batch is generated (0: never, 1: always).
        sampling: temperature, top-p and the most new tokens per completion.
        eos_id: the data's end-of-sequence id (ends each completion; the padding after it).
        seed: the run's seed; the coin of step `s` is a function of (seed, s) alone.
    """

    def __init__(self, lmbda: float, sampling: Sampling, *, eos_id: int, seed: int) -> None:
        if not 0 <= lmbda <= 1:
            raise ConfigError(f"on-policy lmbda must be in [0, 1], got {lmbda}")
        self.lmbda, self.sampling, self.eos_id, self.seed = lmbda, sampling, eos_id, seed
        self._reset()

    def _reset(self) -> None:
        self.batches = 0
        self.tokens = 0
        self.seconds = 0.0

    def generates(self, step: int) -> bool:
        """Whether the batch of (0-based) global step `step` trains on the student's completions."""
        if self.lmbda <= 0:
            return False
        # String seeding hashes with SHA-512: the same draw on every platform, rank and Python run.
        return random.Random(f"on-policy:{self.seed}:{step}").random() < self.lmbda

    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """`batch`, or (with probability `lmbda`) it with the completions `model` samples from its prompts."""
        if not self.generates(step):
            return batch
        started = time.perf_counter()
        made = generate_completions(model, batch, self.sampling, eos_id=self.eos_id)
        # generate_completions counts the tokens on the host: its clock includes the device's work.
        self.seconds += time.perf_counter() - started
        self.tokens += made.generated_tokens
        self.batches += 1
        return {**made.batch, GENERATED: True}

    def counters(self) -> dict[str, float]:
        """This rank's counts of the epoch so far (saved with a training state)."""
        return {"batches": float(self.batches), "tokens": float(self.tokens), "seconds": self.seconds}

    def load_counters(self, counters: dict[str, float]) -> None:
        """Continue the counts of a resumed epoch (missing ones, from a state saved without them: 0)."""
        self.batches = int(counters.get("batches", 0))
        self.tokens = int(counters.get("tokens", 0))
        self.seconds = float(counters.get("seconds", 0.0))

    def end_epoch(self, accelerator: Accelerator) -> tuple[dict[str, Any], float]:
        """The epoch's generation record over all ranks, and the seconds this rank spent generating.

        Record: ``on_policy_batches`` (steps whose batch was generated: the same steps on every rank),
        ``generated_tokens`` (summed over ranks), ``generation_seconds`` (the ranks' mean wall time spent
        generating) and ``generated_tokens_per_s`` (their ratio). The counters then start again. A
        collective: every rank calls it.
        """
        processes = accelerator.num_processes
        counts = {
            "tokens": torch.tensor(float(self.tokens), device=accelerator.device),
            "seconds": torch.tensor(self.seconds, device=accelerator.device),
        }
        reduced = reduce_mean(accelerator, counts)
        tokens, seconds = float(reduced["tokens"]) * processes, float(reduced["seconds"])
        own = self.seconds
        record = {
            "on_policy_batches": self.batches,
            "generated_tokens": round(tokens),
            "generation_seconds": round(seconds, 3),
            "generated_tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        }
        self._reset()
        return record, own


def check_on_policy(
    generation: GenerationConfig, cfg: TrainConfig, data: DataBundle, student: nn.Module, loss: Any
) -> None:
    """Refuse, before training, what on-policy distillation (`generation.lmbda` > 0) cannot train
    (nothing to check at lmbda 0).

    Args:
        generation: the student's generation settings.
        cfg: the student's training recipe.
        data: the data the student trains on.
        student: the student model.
        loss: the run's loss (a composed loss names its terms), or the `KDConfig` it will be built
            from (a pipeline checks before anything trains), or any other loss (not checked).

    Raises:
        ConfigError: FSDP, or a loss with no teacher term (nothing left to train on a generated batch).
        DataError: data whose rows are not one prompt/completion sample each
            (`distil.train.completions.prompt_rows_problem`), that does not record its end-of-sequence id,
            or whose completions do not end with it (`completion_end_problem`).
        ModelError: a student that cannot generate (not a causal LM), or not with the compiled decoding
            step that `generation.compile_step` asks for.
    """
    if generation.lmbda <= 0:
        return  # the dataset's batches, as ever
    if cfg.fsdp.enabled:
        raise ConfigError(
            f"student_train.generation.lmbda={generation.lmbda} generates completions with the student, "
            "which fsdp=true shards across the processes (generation would need every process at every "
            "token). Fix: fsdp=false (data parallelism: each process generates for its own shard), or lmbda=0."
        )
    problem = prompt_rows_problem(data.train)
    if problem is not None:
        raise DataError(
            f"student_train.generation.lmbda={generation.lmbda} samples completions from each row's prompt, "
            f"but dataset {data.name!r} is not one prompt/completion sample per row: {problem}. Fix: use "
            "`data.name: chat` with single-turn prompt/completion records, or the arithmetic task "
            "(docs/lm.md, On-policy distillation), or set lmbda=0."
        )
    if EOS_ID not in data.extra:
        raise DataError(
            f"dataset {data.name!r} does not record its end-of-sequence id (extra[{EOS_ID!r}]), which ends "
            "each generated completion. Fix: build the bundle with distil.data.text.token_bundle, or set lmbda=0."
        )
    unended = completion_end_problem(data.train, int(data.extra[EOS_ID]))
    if unended is not None:
        raise DataError(f"student_train.generation.lmbda={generation.lmbda}: {unended}. {EOS_FIX}")
    check_can_generate(student, compile_step=generation.compile_step)
    needs = _teacher_needs_by_term(loss)
    if needs is not None and not any(needs.values()):
        raise ConfigError(
            f"student_train.generation.lmbda={generation.lmbda} trains generated batches on the "
            f"teacher-matching terms only, but the loss has none (terms: {', '.join(needs)}). Fix: add "
            "a divergence term (e.g. --set 'kd.terms={kd: 1}'), or set lmbda=0."
        )


def _teacher_needs_by_term(loss: Any) -> dict[str, bool] | None:
    """Term name -> whether it compares with the teacher, for a composed loss or a `KDConfig`; else None."""
    if isinstance(loss, KDConfig):
        return {name: LOSSES.get(name).needs_teacher for name in resolve_terms(loss)}
    if isinstance(loss, ComposedLoss):
        return {name: bool(getattr(term, "needs_teacher", True)) for name, term in loss.terms.items()}
    return None


def on_policy(
    generation: GenerationConfig | None, cfg: TrainConfig, data: DataBundle, student: nn.Module, loss: Any
) -> OnPolicy | None:
    """The batch rewriter of `generation` (None when `lmbda` is 0: the dataset's batches, unchanged).

    Raises:
        as `check_on_policy`.
    """
    if generation is None or generation.lmbda <= 0:
        return None
    check_on_policy(generation, cfg, data, student, loss)
    return OnPolicy(generation.lmbda, Sampling.of(generation), eos_id=int(data.extra[EOS_ID]), seed=cfg.seed)


__all__ = ["OnPolicy", "check_on_policy", "on_policy"]
