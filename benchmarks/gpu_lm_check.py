"""Issue-13 GPU check: a ~100M-parameter llama teacher and a ~4.8x smaller student built from configs
(random init), bf16 autocast, one process, one GPU.

Prints, measured side by side in one run (arms interleaved step by step, so drift hits all alike):

- tokens/s of a KD step (live teacher forward under no_grad + student forward + distil's chunked
  per-token KD and CE + backward + AdamW step) vs a student-only step (the same without the teacher and
  the KD term), and their ratio;
- the peak GPU memory of each step, and of the KD step with the textbook loss (two fp32 log-softmaxes of
  the whole (B, T, V) batch and ``F.kl_div``) instead of distil's chunked one.

The losses are distil's own (`distil.losses.functional.kd_kl` and `cross_entropy`, what the `kd` and
`ce` terms call on (B, T, V) logits); the models are distil's `hf-causal-lm`. The loop around them is
written out here so that only the model, the loss and the precision are compared; distil's loop against
a hand-written one is `benchmarks/lm_loop_speed.py` (CPU).

    python benchmarks/gpu_lm_check.py                        # on a GPU: B=8, T=1024, V=32000, 20 steps/arm
    python benchmarks/gpu_lm_check.py --smoke                # tiny models on the CPU (checks the script)

Nothing is downloaded: the models are random, the tokens are random ids.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from distil.losses.functional import cross_entropy, kd_kl
from distil.models import create_model

TEACHER = {
    "model_type": "llama",
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
STUDENT = {
    **TEACHER,
    "hidden_size": 384,
    "intermediate_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
}
SMOKE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 2}  # fmt: skip
KD_WEIGHT, CE_WEIGHT, TEMPERATURE = 0.7, 0.3, 1.0


def naive_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The textbook per-token KD loss: whole-batch fp32 log-softmaxes, autograd through all of them."""
    s = F.log_softmax(student.flatten(0, 1).float() / temperature, dim=-1)
    t = F.log_softmax(teacher.flatten(0, 1).float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per arm (after 3 warm-up steps)")
    ap.add_argument("--smoke", action="store_true", help="tiny models, B=2, T=64, V=512, on the CPU")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.seq, args.vocab, args.steps = 2, 64, 512, 3
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("no GPU here: run with --smoke to check the script on the CPU")
    teacher_cfg = {**TEACHER, **SMOKE} if args.smoke else TEACHER
    student_cfg = {**STUDENT, **{k: max(1, v // 2) for k, v in SMOKE.items()}} if args.smoke else STUDENT

    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=args.vocab, config=teacher_cfg).to(device)
    teacher.requires_grad_(False).eval()
    teacher.to(torch.bfloat16)  # a frozen teacher needs no fp32 master weights
    student = create_model("hf-causal-lm", num_classes=args.vocab, config=student_cfg).to(device)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=device.type == "cuda")
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_student = sum(p.numel() for p in student.parameters())

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g).to(device)
    inputs, labels = ids[:, :-1], ids[:, 1:]
    mask = torch.ones_like(labels, dtype=torch.bool)
    mask[:, -args.seq // 10 :] = False  # ~10% padded positions, as in packed batches with a ragged end

    def step(kind: str) -> None:
        teacher_logits = None
        if kind != "student-only":
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                teacher_logits = teacher(inputs)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = student(inputs)
        loss = CE_WEIGHT * cross_entropy(logits, labels, mask=mask)
        if kind == "KD (distil, chunked)":
            assert teacher_logits is not None
            loss = loss + KD_WEIGHT * kd_kl(logits, teacher_logits, TEMPERATURE, mask)
        elif kind == "KD (naive loss)":
            assert teacher_logits is not None
            keep = mask.reshape(-1)
            s, t = logits.flatten(0, 1)[keep], teacher_logits.flatten(0, 1)[keep]
            loss = loss + KD_WEIGHT * naive_kd(s[None], t[None], TEMPERATURE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()

    arms: dict[str, Callable[[], None]] = {
        k: (lambda k=k: step(k)) for k in ("student-only", "KD (distil, chunked)", "KD (naive loss)")
    }
    times: dict[str, list[float]] = {k: [] for k in arms}
    peaks: dict[str, float] = {}
    for k, fn in arms.items():  # warm-up, then each arm's peak memory from a clean mark
        for _ in range(3):
            fn()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            sync(device)
            peaks[k] = (torch.cuda.max_memory_allocated() - base) / 2**20
    for _ in range(args.steps):  # interleaved: A, B, C, A, B, C, ...
        for k, fn in arms.items():
            sync(device)
            started = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - started)

    tokens = args.batch * args.seq
    base_time = statistics.median(times["student-only"])
    print(
        f"{device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU smoke test'}), bf16 "
        f"autocast; teacher {n_teacher / 1e6:.1f}M params, student {n_student / 1e6:.1f}M "
        f"({n_teacher / n_student:.1f}x fewer); B={args.batch}, T={args.seq}, V={args.vocab}; "
        f"median of {args.steps} steps per arm\n"
    )
    print("| step | ms (median) | tokens/s | vs student-only | peak memory above the models (MiB) |")
    print("|---|---|---|---|---|")
    results = {}
    for k, ts in times.items():
        med = statistics.median(ts)
        peak = f"{peaks[k]:.0f}" if k in peaks else "n/a (CPU)"
        print(f"| {k} | {med * 1e3:.1f} | {tokens / med:,.0f} | {med / base_time:.2f}x | {peak} |")
        results[k] = {"ms": med * 1e3, "tokens_per_s": tokens / med, "peak_mib": peaks.get(k)}
    if peaks:
        ratio = peaks["KD (distil, chunked)"] / peaks["KD (naive loss)"]
        print(f"\npeak memory of the KD step, chunked / naive loss: {ratio:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "params": [n_teacher, n_student], "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
