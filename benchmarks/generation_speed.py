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

The compiled rows: ``decode(compile_step=True)`` (the one-token step compiled by ``torch.compile``, the
prefill eager, a static cache) and, unless ``--no-hf-compile``, transformers' own compiled generate
(``cache_implementation="static"`` with a ``CompileConfig`` that allows the CPU), each on its own copy of
the model per batch size (a compiled step serves one batch size). Their first call compiles: the script
prints it (wall and process CPU seconds; the compile workers' CPU is not in the latter), the compile cost
(first call minus a steady one) and the break-even (calls and generated tokens after which the compile
has paid for itself against the eager decoder, by the wall clock). Compiled code is cached on disk
(``TORCHINDUCTOR_CACHE_DIR``): point it at an empty folder to time a cold compile, run again for a warm one.

The on-policy table times on-policy distillation steps (``--onpolicy-steps`` per timing, 0 = skip): the
recipe's teacher (llama, hidden 192) and student, a batch of prompts with completions, and per step what
`distil.train.onpolicy.OnPolicy` does at lmbda 1: ``generate_completions`` samples the student's
completions (distil's decoder, eager or with the compiled step, or transformers' ``generate`` in its
place), the teacher scores them, the student's reverse KL on the generated tokens is backpropagated and
AdamW steps (the compiled step keeps serving the updated weights).

    python benchmarks/generation_speed.py                     # batches 16 and 32, greedy and sampled
    python benchmarks/generation_speed.py --batches 16 --rounds 15 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
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
    models: dict[str, Any], prompts: torch.Tensor, attention: torch.Tensor, sampling: Sampling, new: int
) -> dict[str, Callable[[], torch.Tensor]]:
    """The implementations timed, by name; `models` gives each its model ("decode" and "generate" share
    one, the compiled ones have their own copies)."""

    def ours(hf: Any, compiled: bool) -> Callable[[], torch.Tensor]:
        return lambda: decode(
            hf,
            prompts,
            new,
            attention_mask=attention,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop_ids=(EOS,),
            pad_id=PAD,
            compile_step=compiled,
        )[0]

    runs = {
        "decode": ours(models["decode"], False),
        "generate": lambda: _hf_generate(models["decode"], prompts, attention, sampling, new, EOS, PAD),
        "compiled": ours(models["compiled"], True),
    }
    if "generate compiled" in models:
        runs["generate compiled"] = lambda: _compiled_generate(
            models["generate compiled"], prompts, attention, sampling, new
        )
    return runs


def _compiled_generate(
    hf: Any, prompts: torch.Tensor, attention: torch.Tensor, sampling: Sampling, new: int
) -> torch.Tensor:
    """transformers' generate with its static cache and its compiled forward, allowed on the CPU (it
    compiles on accelerators only by default); otherwise `_hf_generate`'s settings."""
    from transformers import CompileConfig

    config = completions._generation_config(sampling, new, EOS, PAD)
    config.cache_implementation = "static"
    config.compile_config = CompileConfig(mode="default", dynamic=False)
    config.compile_config._compile_all_devices = True
    own, hf.generation_config = hf.generation_config, config
    try:
        out = hf.generate(input_ids=prompts, attention_mask=attention, generation_config=config)
    finally:
        hf.generation_config = own
    return out[:, prompts.shape[1] :]


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


def _on_policy_rates(
    args: argparse.Namespace,
) -> tuple[dict[tuple[int, str], list[tuple[float, float]]], dict[tuple[int, str], float]]:
    """Steps/s (wall, CPU) per round of `args.onpolicy_steps` on-policy steps, per (batch, implementation),
    and the wall seconds of each one's first (warm-up, compiling) step.

    Dynamo's graphs of the decoding tables are dropped first, so the compiled step compiles again here,
    as it would in a new process with inductor's disk cache warm from those tables (the same shapes).
    """
    torch._dynamo.reset()
    torch.manual_seed(1)
    teacher = create_model("hf-causal-lm", num_classes=VOCAB, config=TEACHER).eval().requires_grad_(False)
    torch.manual_seed(2)
    student = create_model("hf-causal-lm", num_classes=VOCAB, config=STUDENT).train()
    sampling = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=args.new)
    contexts: dict[str, Callable[[], AbstractContextManager[object]]] = {
        "decode": nullcontext,
        "generate": _with_generate,
        "compiled": nullcontext,
    }
    shared = (student, torch.optim.AdamW(student.parameters(), lr=1e-4))
    trained = {}  # the compiled step serves one batch size: a student (and optimizer) of its own per batch
    for batch in args.batches:
        own = copy.deepcopy(student)
        trained[(batch, "compiled")] = (own, torch.optim.AdamW(own.parameters(), lr=1e-4))
    settings = {"compiled": replace(sampling, compile_step=True)}
    batches = {batch: _prompt_batch(batch, args.prompt, args.new, seed=batch) for batch in args.batches}
    rates: dict[tuple[int, str], list[tuple[float, float]]] = {
        (batch, name): [] for batch in args.batches for name in contexts
    }
    firsts: dict[tuple[int, str], float] = {}

    def steps(key: tuple[int, str], count: int) -> None:
        model, optimizer = trained.get(key, shared)
        with contexts[key[1]]():
            for _ in range(count):
                _on_policy_step(model, teacher, optimizer, batches[key[0]], settings.get(key[1], sampling))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generate_completions says it falls back to generate
        for key in rates:  # warm-up (the compiled step compiles here)
            start = time.perf_counter()
            steps(key, 1)
            firsts[key] = time.perf_counter() - start
        for _ in range(args.rounds):
            keys = list(rates)
            random.shuffle(keys)
            for key in keys:
                start, cpu = time.perf_counter(), time.process_time()
                steps(key, args.onpolicy_steps)
                wall, used = time.perf_counter() - start, time.process_time() - cpu
                rates[key].append((args.onpolicy_steps / wall, args.onpolicy_steps / used))
    return rates, firsts


def _cell(rates: list[float], digits: int = 0) -> str:
    return f"{statistics.median(rates):,.{digits}f} [{min(rates):,.{digits}f}-{max(rates):,.{digits}f}]"


def _ratio(ours: list[float], theirs: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(theirs):.2f}x"


def _rate_table(
    rates: dict[tuple[int, str, str], list[tuple[float, float]]], batches: list[int], name: str
) -> None:
    """One implementation's tokens/s against generate's, by the wall clock and by CPU time."""
    print(
        f"| batch | mode | {name} tok/s | generate tok/s | ratio | {name} tok/CPU-s | generate tok/CPU-s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch in batches:
        for mode in MODES:
            ours, theirs = rates[(batch, mode, name)], rates[(batch, mode, "generate")]
            cells = []
            for clock in (0, 1):
                mine, other = [r[clock] for r in ours], [r[clock] for r in theirs]
                cells += [_cell(mine), _cell(other), _ratio(mine, other)]
            print(f"| {batch} | {mode} | {' | '.join(cells)} |")


def _seconds_per_call(rates: list[tuple[float, float]], tokens: float, clock: int) -> float:
    return tokens / statistics.median(r[clock] for r in rates)


def _compile_table(
    rates: dict[tuple[int, str, str], list[tuple[float, float]]],
    first_calls: dict[tuple[int, str], tuple[float, float]],
    greedy_tokens: dict[int, int],
    args: argparse.Namespace,
    compiled: list[str],
) -> None:
    """What compiling costs (its first call minus a steady one) and after how many calls it has paid, by
    the wall clock, against the eager implementation it replaces (greedy calls)."""
    print(
        "\ncompile cost: the first (compiling) call minus a steady one; break-even: calls (and generated "
        "tokens) after which the compiled one has saved its compile time, by the wall clock, greedy"
    )
    print(
        "| batch | implementation | first call s (wall / process CPU) | compile s (wall) | steady call ms "
        "(wall) | eager call ms (wall) | break-even calls | break-even tokens |"
    )
    print("|---|---|---|---|---|---|---|---|")
    eager = {"compiled": "decode", "generate compiled": "generate"}
    for batch in args.batches:
        call_tokens = greedy_tokens[batch]
        for name in compiled:
            wall, cpu = first_calls[(batch, name)]
            steady = _seconds_per_call(rates[(batch, "greedy", name)], call_tokens, 0)
            before = _seconds_per_call(rates[(batch, "greedy", eager[name])], call_tokens, 0)
            cost = wall - steady
            saved = before - steady
            calls = f"{cost / saved:,.0f}" if saved > 0 else "never"
            made = f"{cost / saved * call_tokens:,.0f}" if saved > 0 else "never"
            print(
                f"| {batch} | {name} | {wall:.1f} / {cpu:.1f} | {cost:.1f} | {steady * 1e3:.1f} | "
                f"{before * 1e3:.1f} | {calls} | {made} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--prompt", type=int, default=6, help="longest prompt (shortest: 2 fewer)")
    parser.add_argument("--new", type=int, default=6, help="new tokens per completion")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=5, help="calls per timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--onpolicy-steps", type=int, default=3, help="on-policy steps per timing (0: skip)")
    parser.add_argument(
        "--no-hf-compile", action="store_true", help="skip transformers' compiled static-cache generate"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = create_model("hf-causal-lm", num_classes=VOCAB, config=STUDENT).eval().hf

    compiled = ["compiled"] + ([] if args.no_hf_compile else ["generate compiled"])
    cases: dict[tuple[int, str, str], Callable[[], torch.Tensor]] = {}
    first_calls: dict[tuple[int, str], tuple[float, float]] = {}  # (wall, CPU) s of a compiled first call
    greedy_tokens: dict[int, int] = {}  # generated tokens of one greedy call per batch
    for batch in args.batches:
        prompts, attention = _prompts(batch, args.prompt, seed=batch)
        models = {"decode": hf, **{name: copy.deepcopy(hf) for name in compiled}}
        for mode, sampling in MODES.items():
            runs = _runners(models, prompts, attention, sampling, args.new)
            outs = {}
            for name, run in runs.items():  # warm-up (compiling), and the check that all say the same
                torch.manual_seed(0)
                start, cpu = time.perf_counter(), time.process_time()
                outs[name] = run()
                first_calls.setdefault(
                    (batch, name), (time.perf_counter() - start, time.process_time() - cpu)
                )
            for name, out in outs.items():
                if not torch.equal(out, outs["decode"]):
                    raise SystemExit(f"{name} and decode disagree at batch {batch}, {mode}")
            if mode == "greedy":
                greedy_tokens[batch] = int(completion_lengths(outs["decode"], EOS).sum())
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
    _rate_table(rates, args.batches, "decode")
    for name in compiled:
        print()
        _rate_table(rates, args.batches, name)
    print("\nthe floor: bare forward passes (prefill + steps, argmax, nothing else) vs generate, greedy")
    print("| batch | forwards tok/CPU-s | generate tok/CPU-s | a decoder costing nothing would be |")
    print("|---|---|---|---|")
    for batch in args.batches:
        bare = [r[1] for r in rates[(batch, "greedy", "forwards")]]
        theirs_cpu = [r[1] for r in rates[(batch, "greedy", "generate")]]
        print(f"| {batch} | {_cell(bare)} | {_cell(theirs_cpu)} | {_ratio(bare, theirs_cpu)} |")
    _compile_table(rates, first_calls, greedy_tokens, args, compiled)

    if args.onpolicy_steps < 1:
        return
    steps, firsts = _on_policy_rates(args)
    print(
        f"\non-policy steps (lmbda 1, sampled, reverse KL, AdamW), {args.onpolicy_steps} per timing; "
        "steps/s median [min-max]"
    )
    for name in ("decode", "compiled"):
        print(
            f"| batch | {name} steps/s | generate steps/s | ratio | {name} steps/CPU-s | generate steps/CPU-s "
            "| ratio |"
        )
        print("|---|---|---|---|---|---|---|")
        for batch in args.batches:
            ours, theirs = steps[(batch, name)], steps[(batch, "generate")]
            cells = []
            for clock in (0, 1):
                mine, other = [r[clock] for r in ours], [r[clock] for r in theirs]
                cells += [_cell(mine, 1), _cell(other, 1), _ratio(mine, other)]
            print(f"| {batch} | {' | '.join(cells)} |")
        print()
    print("compiled step's compile, inductor's disk cache warm (as in a second process of the same run)")
    print(
        "| batch | compiled first step s (wall) | compile s: first minus a steady step | break-even steps |"
    )
    print("|---|---|---|---|")
    for batch in args.batches:
        steady = 1 / statistics.median(r[0] for r in steps[(batch, "compiled")])
        eager = 1 / statistics.median(r[0] for r in steps[(batch, "decode")])
        cost = firsts[(batch, "compiled")] - steady
        even = f"{cost / (eager - steady):,.0f}" if eager > steady else "never"
        print(f"| {batch} | {firsts[(batch, 'compiled')]:.2f} | {cost:.2f} | {even} |")


if __name__ == "__main__":
    main()
