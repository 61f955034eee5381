"""Generated tokens per second: distil's decoder (`distil.measure.lm.decode`) vs transformers' `generate`.

Both generate completions the way `distil.train.completions.generate_completions` does (on-policy
distillation and seq-KD): the same model, the same left-padded prompts with their attention mask, the
same budget, end-of-sequence id and settings (greedy, or sampling at temperature 1 with top-p 0.95 from
the same seed, so both draw the same tokens; the script checks that they agree). The model is the
``lm-arithmetic`` recipe's student (llama, hidden 96, 3 layers, 3 heads, byte vocabulary of 259) with
random weights; prompts of 4 to `--prompt` tokens, `--new` new tokens.

The machine this was written on is shared (2 cores, other jobs): every (batch, mode, implementation)
triple is timed once per round, in a fresh random order each round, each timing `--calls` calls; the
table gives the median tokens/s over the rounds with the spread (min-max), and the ratio of the medians,
twice: by the wall clock, and by the CPU seconds of this process (``time.process_time``), which other
jobs on the machine slow far less (with one thread it is the wall time an idle machine would show).

The second table times on-policy distillation steps (``--onpolicy-steps`` per timing, 0 = skip): the
recipe's teacher (llama, hidden 192) and student, a batch of prompts with completions, and per step what
`distil.train.onpolicy.OnPolicy` does at lmbda 1: ``generate_completions`` samples the student's
completions (distil's decoder, or transformers' ``generate`` in its place), the teacher scores them, the
student's reverse KL on the generated tokens is backpropagated and AdamW steps.

    python benchmarks/generation_speed.py                     # batches 16 and 32, greedy and sampled
    python benchmarks/generation_speed.py --batches 16 --rounds 15 --threads 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from unittest import mock

import torch

from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS, MASK
from distil.losses.functional import reverse_kl
from distil.measure.lm import _grown_mask, _prepared_mask, decode
from distil.models import create_model
from distil.train import completions
from distil.train.completions import (
    Sampling,
    _hf_generate,
    completion_lengths,
    generate_completions,
    left_padded_prompts,
)

STUDENT = {
    "model_type": "llama",
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 3,
    "num_key_value_heads": 3,
    "max_position_embeddings": 32,
}
TEACHER = {
    **STUDENT,
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
}
VOCAB, EOS, PAD = 259, 258, 258
MODES = {"greedy": Sampling(temperature=0), "sample": Sampling(temperature=1.0, top_p=0.95)}


def _prompts(batch: int, longest: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, EOS, (batch, longest), generator=gen)
    lengths = torch.randint(max(1, longest - 2), longest + 1, (batch,), generator=gen)
    return left_padded_prompts(ids, lengths, PAD)


def _runners(
    hf: object, prompts: torch.Tensor, attention: torch.Tensor, sampling: Sampling, new: int
) -> dict:
    def ours() -> torch.Tensor:
        return decode(
            hf,
            prompts,
            new,
            attention_mask=attention,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop_ids=(EOS,),
            pad_id=PAD,
        )[0]

    def theirs() -> torch.Tensor:
        return _hf_generate(hf, prompts, attention, sampling, new, EOS, PAD)

    return {"decode": ours, "generate": theirs}


def _bare_forwards(
    hf: Any, prompts: torch.Tensor, attention: torch.Tensor, new: int
) -> Callable[[], torch.Tensor]:
    """The floor of any decoder on this model: `new` forward passes (prefill, then one position per step)
    with the KV cache and the mask prepared once, the argmax fed back, and nothing else."""
    from transformers import DynamicCache

    first_position = (attention.cumsum(-1) - 1).clamp(min=0)

    def run() -> torch.Tensor:
        mask = _prepared_mask(hf, _grown_mask(attention, new))
        assert mask is not None, "the benchmark's llama takes a prepared mask"
        cache, step_in, position, seen, out = DynamicCache(config=hf.config), prompts, first_position, 0, []
        for _ in range(new):
            seen += step_in.shape[1]
            logits = hf(
                input_ids=step_in,
                attention_mask=mask[:, :, seen - step_in.shape[1] : seen, :seen],
                position_ids=position,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits
            step_in = logits[:, -1].argmax(-1)[:, None]
            out.append(step_in)
            position = position[:, -1:] + 1
        return torch.cat(out, dim=1)

    return run


def _time(run: Callable[[], torch.Tensor], calls: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, generated tokens) of `calls` calls, each from seed 0 (so both sides
    draw alike)."""
    tokens, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(calls):
        torch.manual_seed(0)
        tokens += int(completion_lengths(run(), EOS).sum())
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def _prompt_batch(batch: int, longest: int, new: int, seed: int) -> dict[str, torch.Tensor]:
    """A (batch, longest + new) prompt/completion batch: prompts of 4 to `longest` tokens, labels after them."""
    gen = torch.Generator().manual_seed(seed)
    block = longest + new
    inputs = torch.randint(0, EOS, (batch, block), generator=gen)
    lengths = torch.randint(max(1, longest - 2), longest + 1, (batch,), generator=gen)
    position = torch.arange(block)
    labels = torch.where(position >= lengths[:, None] - 1, inputs.roll(-1, dims=1), IGNORE_INDEX)
    return {INPUTS: inputs, LABELS: labels}


def _with_generate() -> AbstractContextManager[object]:
    """`generate_completions` calling transformers' generate in distil's decoder's place (as it does for a
    model the decoder cannot drive), so both sides of the on-policy table run the same step."""
    return mock.patch.object(completions, "decode_problem", lambda hf: "timed against generate")


def _on_policy_step(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    sampling: Sampling,
) -> int:
    """One on-policy distillation step at lmbda 1 (see the module docstring); returns the generated tokens."""
    made = generate_completions(student, batch, sampling, eos_id=EOS)
    rewritten = made.batch
    with torch.no_grad():
        teacher_logits = teacher(rewritten[INPUTS])
    loss = reverse_kl(student(rewritten[INPUTS]), teacher_logits, 1.0, rewritten[MASK])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return made.generated_tokens


def _on_policy_rates(args: argparse.Namespace) -> dict[tuple[int, str], list[tuple[float, float]]]:
    """Steps/s (wall, CPU) per round of `args.onpolicy_steps` on-policy steps, per (batch, implementation)."""
    torch.manual_seed(1)
    teacher = create_model("hf-causal-lm", num_classes=VOCAB, config=TEACHER).eval().requires_grad_(False)
    torch.manual_seed(2)
    student = create_model("hf-causal-lm", num_classes=VOCAB, config=STUDENT).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    sampling = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=args.new)
    contexts: dict[str, Callable[[], AbstractContextManager[object]]] = {
        "decode": nullcontext,
        "generate": _with_generate,
    }
    batches = {batch: _prompt_batch(batch, args.prompt, args.new, seed=batch) for batch in args.batches}
    rates: dict[tuple[int, str], list[tuple[float, float]]] = {
        (batch, name): [] for batch in args.batches for name in contexts
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generate_completions says it falls back to generate
        for key in rates:  # warm-up
            with contexts[key[1]]():
                _on_policy_step(student, teacher, optimizer, batches[key[0]], sampling)
        for _ in range(args.rounds):
            keys = list(rates)
            random.shuffle(keys)
            for batch, name in keys:
                with contexts[name]():
                    start, cpu = time.perf_counter(), time.process_time()
                    for _ in range(args.onpolicy_steps):
                        _on_policy_step(student, teacher, optimizer, batches[batch], sampling)
                    wall, used = time.perf_counter() - start, time.process_time() - cpu
                rates[(batch, name)].append((args.onpolicy_steps / wall, args.onpolicy_steps / used))
    return rates


def _cell(rates: list[float], digits: int = 0) -> str:
    return f"{statistics.median(rates):,.{digits}f} [{min(rates):,.{digits}f}-{max(rates):,.{digits}f}]"


def _ratio(ours: list[float], theirs: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(theirs):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--prompt", type=int, default=6, help="longest prompt (shortest: 2 fewer)")
    parser.add_argument("--new", type=int, default=6, help="new tokens per completion")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=5, help="calls per timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--onpolicy-steps", type=int, default=3, help="on-policy steps per timing (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = create_model("hf-causal-lm", num_classes=VOCAB, config=STUDENT).eval().hf

    cases = {}
    for batch in args.batches:
        prompts, attention = _prompts(batch, args.prompt, seed=batch)
        for mode, sampling in MODES.items():
            runs = _runners(hf, prompts, attention, sampling, args.new)
            outs = []
            for run in runs.values():  # warm-up, and the check that both say the same
                torch.manual_seed(0)
                outs.append(run())
            if not torch.equal(outs[0], outs[1]):
                raise SystemExit(f"decode and generate disagree at batch {batch}, {mode}")
            for name, run in runs.items():
                cases[(batch, mode, name)] = run
        cases[(batch, "greedy", "forwards")] = _bare_forwards(hf, prompts, attention, args.new)

    rates: dict[tuple[int, str, str], list[tuple[float, float]]] = {key: [] for key in cases}
    with torch.no_grad():
        for _ in range(args.rounds):
            keys = list(cases)
            random.shuffle(keys)
            for key in keys:
                seconds, cpu, tokens = _time(cases[key], args.calls)
                rates[key].append((tokens / seconds, tokens / cpu))

    print(
        f"torch {torch.__version__}, {args.threads} thread(s); prompts <= {args.prompt} tokens, {args.new} new; "
        f"{args.rounds} rounds x {args.calls} calls; tokens/s median [min-max], by the wall clock and by "
        "this process's CPU time"
    )
    print(
        "| batch | mode | decode tok/s | generate tok/s | ratio | decode tok/CPU-s | generate tok/CPU-s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batches:
        for mode in MODES:
            ours, theirs = rates[(batch, mode, "decode")], rates[(batch, mode, "generate")]
            cells = []
            for clock in (0, 1):
                mine, other = [r[clock] for r in ours], [r[clock] for r in theirs]
                cells += [_cell(mine), _cell(other), _ratio(mine, other)]
            print(f"| {batch} | {mode} | {' | '.join(cells)} |")
    print("\nthe floor: bare forward passes (prefill + steps, argmax, nothing else) vs generate, greedy")
    print("| batch | forwards tok/CPU-s | generate tok/CPU-s | a decoder costing nothing would be |")
    print("|---|---|---|---|")
    for batch in args.batches:
        bare = [r[1] for r in rates[(batch, "greedy", "forwards")]]
        theirs_cpu = [r[1] for r in rates[(batch, "greedy", "generate")]]
        print(f"| {batch} | {_cell(bare)} | {_cell(theirs_cpu)} | {_ratio(bare, theirs_cpu)} |")

    if args.onpolicy_steps < 1:
        return
    steps = _on_policy_rates(args)
    print(
        f"\non-policy steps (lmbda 1, sampled, reverse KL, AdamW), {args.onpolicy_steps} per timing; "
        "steps/s median [min-max]"
    )
    print(
        "| batch | decode steps/s | generate steps/s | ratio | decode steps/CPU-s | generate steps/CPU-s | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for batch in args.batches:
        ours, theirs = steps[(batch, "decode")], steps[(batch, "generate")]
        cells = []
        for clock in (0, 1):
            mine, other = [r[clock] for r in ours], [r[clock] for r in theirs]
            cells += [_cell(mine, 1), _cell(other, 1), _ratio(mine, other)]
        print(f"| {batch} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
