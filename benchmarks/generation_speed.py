"""Generated tokens per second: distil's decoder (`distil.measure.lm.decode`) vs transformers' `generate`.

Both generate completions the way `distil.train.completions.generate_completions` does (on-policy
distillation and seq-KD): the same model, the same left-padded prompts with their attention mask, the
same budget, end-of-sequence id and settings (greedy, or sampling at temperature 1 with top-p 0.95 from
the same seed, so both draw the same tokens; the script checks that they agree). The model is the
``lm-arithmetic`` recipe's student (llama, hidden 96, 3 layers, 3 heads, byte vocabulary of 259) with
random weights; prompts of 4 to `--prompt` tokens, `--new` new tokens.

The machine this was written on is shared (2 cores, other jobs): every (batch, mode, implementation)
triple is timed once per round, in a fresh random order each round, each timing `--calls` calls; the
table gives the median tokens/s over the rounds with the spread (min-max), and the ratio of the medians.

    python benchmarks/generation_speed.py                     # batches 16 and 32, greedy and sampled
    python benchmarks/generation_speed.py --batches 16 --rounds 15 --threads 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch

from distil.measure.lm import decode
from distil.models import create_model
from distil.train.completions import Sampling, _hf_generate, completion_lengths, left_padded_prompts

STUDENT = {
    "model_type": "llama",
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 3,
    "num_key_value_heads": 3,
    "max_position_embeddings": 32,
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


def _time(run: Callable[[], torch.Tensor], calls: int) -> tuple[float, int]:
    """(seconds, generated tokens) of `calls` calls, each from seed 0 (so both sides draw alike)."""
    tokens, start = 0, time.perf_counter()
    for _ in range(calls):
        torch.manual_seed(0)
        tokens += int(completion_lengths(run(), EOS).sum())
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--prompt", type=int, default=6, help="longest prompt (shortest: 2 fewer)")
    parser.add_argument("--new", type=int, default=6, help="new tokens per completion")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=5, help="calls per timing")
    parser.add_argument("--threads", type=int, default=1)
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

    rates: dict[tuple[int, str, str], list[float]] = {key: [] for key in cases}
    with torch.no_grad():
        for _ in range(args.rounds):
            keys = list(cases)
            random.shuffle(keys)
            for key in keys:
                seconds, tokens = _time(cases[key], args.calls)
                rates[key].append(tokens / seconds)

    print(
        f"torch {torch.__version__}, {args.threads} thread(s); prompts <= {args.prompt} tokens, {args.new} new; "
        f"{args.rounds} rounds x {args.calls} calls; tokens/s median [min-max]"
    )
    print("| batch | mode | decode tok/s | generate tok/s | decode / generate |")
    print("|---|---|---|---|---|")
    for batch in args.batches:
        for mode in MODES:
            ours, theirs = rates[(batch, mode, "decode")], rates[(batch, mode, "generate")]
            cells = [f"{statistics.median(r):,.0f} [{min(r):,.0f}-{max(r):,.0f}]" for r in (ours, theirs)]
            ratio = statistics.median(ours) / statistics.median(theirs)
            print(f"| {batch} | {mode} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
