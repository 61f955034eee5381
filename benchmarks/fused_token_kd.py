"""Token-level KD, one training step: the fused LM head (distil) vs today's chunked path vs naive vs TRL.

The work, identical in every arm: a llama teacher (hidden 512, 4 layers, bf16 weights, frozen) and a
llama student (hidden 256, 2 layers, fp32 weights trained with AdamW, forward under bf16 autocast when
the CPU has bf16 matrix instructions, else everything fp32), both built from configs; one batch of
B x T random tokens, every position trained; the loss is the generalized Jensen-Shannon divergence
(beta 0.5, T = 1, mean over the tokens) - TRL GKD's loss, so its trainer at lmbda 0 does the same work.
One step = teacher forward + student forward + loss + backward + optimizer step.

Arms:

- fused: `kd.fused` - the student and the teacher give hidden states and head (``head=False``) and
  `distil.losses.fused` makes both models' logits chunk by chunk; no (B, T, V) tensor exists.
- chunked: today's path - both models return their (B, T, V) logits; distil's chunked `js` term.
- naive: the same logits and the textbook loss (fp32 log-softmaxes, KL to the mixture, autograd).
- trl (``--trl``): TRL's `GKDTrainer.training_step` at lmbda 0 (seq_kd off, gradient checkpointing off,
  bf16 as the other arms) and its optimizer's step, in a separate virtual environment made by
  ``--setup-trl`` (``python -m venv /tmp/trl-venv``; pip install torch==2.13.0 trl==1.16.* transformers):
  TRL is not a dependency of distil.

Memory, as `benchmarks/token_loss_memory.py` measures it (its helper is imported here): each arm runs in
a fresh subprocess with a fixed glibc mmap threshold, does one warm-up step (the optimizer's states then
exist), resets the peak-RSS mark and reports, around each timed step, `peak` = the step's VmHWM (the
whole process: weights, optimizer states, activations) and `extra` = VmHWM - VmRSS before the step
(what the step itself adds). Time: the median over the timed steps and the rounds; the arms run
interleaved (each round starts with another arm), so the machine's load drifts over all of them.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/fused_token_kd.py --vocabs 32000,128000 --seq 1024
    python benchmarks/fused_token_kd.py --setup-trl && python benchmarks/fused_token_kd.py --trl
    python benchmarks/fused_token_kd.py --vocabs 4096 --seq 128 --rounds 1 --trl   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from token_loss_memory import MiB, _status

ARMS = ("fused", "chunked", "naive")
TRL_VENV = Path("/tmp/trl-venv")
TRL_PACKAGES = ("torch==2.13.0", "trl==1.16.*", "transformers")
BETA = 0.5

TEACHER = {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 8}
STUDENT = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}


def llama_config(sizes: dict[str, int], vocab: int, seq: int) -> dict[str, Any]:
    """A llama config dict (the same in every arm and environment)."""
    heads = sizes["num_attention_heads"]
    return {
        "model_type": "llama",
        **sizes,
        "num_key_value_heads": heads,
        "vocab_size": vocab,
        "max_position_embeddings": max(seq + 1, 2048),
        "tie_word_embeddings": False,
    }


def bf16_usable() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX): a bf16 matmul must not be
    much slower than fp32 (emulated bf16 is several times slower, and then fp32 is the fair choice)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    a = torch.randn(512, 512)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        start = time.perf_counter()
        for _ in range(5):
            x @ x
        times[dtype] = time.perf_counter() - start
    return times[torch.bfloat16] < 1.5 * times[torch.float32]


def batch(vocab: int, batch_size: int, seq: int) -> torch.Tensor:
    """(B, T + 1) token ids: inputs are [:, :-1], next-token labels [:, 1:]."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (batch_size, seq + 1), generator=g)


def naive_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float) -> torch.Tensor:
    """The textbook generalized JSD, mean over positions: beta KL(p || m) + (1 - beta) KL(q || m),
    m = beta p + (1 - beta) q, from whole fp32 log-softmaxes."""
    log_q = F.log_softmax(student.float().flatten(0, 1), dim=-1)
    log_p = F.log_softmax(teacher.float().flatten(0, 1), dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
    kl_p = F.kl_div(log_m, log_p, reduction="batchmean", log_target=True)
    kl_q = F.kl_div(log_m, log_q, reduction="batchmean", log_target=True)
    return beta * kl_p + (1 - beta) * kl_q


def distil_step(args: argparse.Namespace) -> Any:
    """The step of one distil arm, set up (models, loss, optimizer); returns the step function."""
    from distil.config import KDConfig
    from distil.losses.compose import build_loss
    from distil.losses.fused import FusedPlan
    from distil.models import create_model
    from distil.teachers.live import LiveTeacher

    torch.manual_seed(0)
    vocab, seq = args.vocab, args.seq
    teacher = create_model("hf-causal-lm", num_classes=vocab, config=llama_config(TEACHER, vocab, seq))
    student = create_model("hf-causal-lm", num_classes=vocab, config=llama_config(STUDENT, vocab, seq))
    teacher.to(torch.bfloat16 if args.bf16 else torch.float32)
    ids = batch(vocab, args.batch, seq)
    data = {"inputs": ids[:, :-1], "labels": ids[:, 1:]}
    kd = KDConfig(terms={"js": 1.0}, options={"js": {"beta": BETA}}, temperature=1.0)
    loss = build_loss(kd, student=student, teacher=teacher, sample_x=ids[:1, :8], num_classes=vocab)
    loss.fused = FusedPlan(student=True, teacher=True) if args.arm == "fused" else None
    source = LiveTeacher(teacher, loss.model_call_options("teacher"))
    options = loss.model_call_options("student")
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)

    def step() -> float:
        teacher_out = source(data)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            student_out = student(data["inputs"], **options)
        if args.arm == "naive":
            value = naive_jsd(student_out, teacher_out, BETA)
        else:
            value = loss(student_out, teacher_out, data)["loss"]
        del student_out, teacher_out
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        return float(value.detach())

    return step


def trl_step(args: argparse.Namespace) -> Any:
    """TRL's GKD step at lmbda 0 on the same models and batch (runs in the TRL virtual environment)."""
    import transformers
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.manual_seed(0)
    vocab, seq = args.vocab, args.seq

    def build(sizes: dict[str, int]) -> Any:
        cfg = dict(llama_config(sizes, vocab, seq))
        del cfg["model_type"]
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))

    teacher, student = build(TEACHER), build(STUDENT)
    teacher.to(torch.bfloat16 if args.bf16 else torch.float32)
    ids = batch(vocab, args.batch, seq)
    config = GKDConfig(
        output_dir="/tmp/trl-gkd-bench",
        lmbda=0.0,
        beta=BETA,
        temperature=1.0,
        seq_kd=False,
        bf16=args.bf16,
        use_cpu=True,
        per_device_train_batch_size=args.batch,
        learning_rate=1e-4,
        optim="adamw_torch",
        report_to=[],
        max_steps=10,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    tokenizer = _tiny_tokenizer(vocab)
    rows = Dataset.from_dict({"messages": [[{"role": "user", "content": "x"}]]})
    trainer = GKDTrainer(
        model=student, teacher_model=teacher, args=config, processing_class=tokenizer, train_dataset=rows
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    model = trainer.accelerator.prepare(trainer.model)
    trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets before its steps
    # One prompt token, then B x T trained positions: GKD's loss covers the logits of positions
    # prompt_len - 1 .. -1 against labels[:, prompt_len:], i.e. exactly T positions per row.
    full = torch.cat([ids[:, :1], ids], dim=1)
    labels = full.clone()
    labels[:, :1] = -100
    inputs = {
        "input_ids": full,
        "attention_mask": torch.ones_like(full),
        "labels": labels,
        "prompts": full[:, :1],
        "prompt_attention_mask": torch.ones_like(full[:, :1]),
    }
    optimizer = trainer.optimizer

    def step() -> float:
        model.train()
        value = trainer.training_step(model, inputs)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(value)

    return step


def _tiny_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer of `vocab` ids (GKDTrainer needs a processing class; the batch is made here)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="w0")))
    tok.pad_token, tok.eos_token = "w0", "w1"
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    return tok


def one_arm(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: a warm-up step, then the timed steps with their peak memory."""
    torch.set_num_threads(args.threads)
    step = trl_step(args) if args.arm == "trl" else distil_step(args)
    value = step()  # warm-up: the optimizer's states exist from here on
    times, peaks, extras = [], [], []
    for _ in range(args.steps):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
        base = _status("VmRSS")
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
        peak = _status("VmHWM")
        peaks.append(peak / MiB)
        extras.append((peak - base) / MiB)
    return {"seconds": times, "peak_mib": max(peaks), "extra_mib": max(extras), "loss": value}


def run_arm(arm: str, vocab: int, args: argparse.Namespace) -> dict[str, Any]:
    """One arm in its own subprocess (the TRL one with the TRL environment's python)."""
    python = str(TRL_VENV / "bin" / "python") if arm == "trl" else sys.executable
    cmd = [python, __file__, "--arm", arm, "--vocab", str(vocab), "--seq", str(args.seq)]
    cmd += ["--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
    cmd += ["--bf16" if args.bf16 else "--fp32"]
    # A fixed mmap threshold: every buffer over 128 KiB is its own mapping, returned on free, so RSS is
    # the live bytes (token_loss_memory.py's method).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    if arm != "trl":
        src = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"arm {arm} at V={vocab} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def setup_trl() -> None:
    """Create the TRL virtual environment (torch from the local wheel, as distil's)."""
    if not (TRL_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([str(TRL_VENV / "bin" / "pip"), "install", "-q", *TRL_PACKAGES], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocabs", default="32000,128000")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (a fresh process per arm each)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process, after one warm-up")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", default=",".join(ARMS), help="the distil arms to run, of " + ",".join(ARMS))
    ap.add_argument("--trl", action="store_true", help="add the TRL GKDTrainer arm (needs --setup-trl once)")
    ap.add_argument("--setup-trl", action="store_true", help="create the TRL virtual environment and exit")
    ap.add_argument("--fp32", action="store_true", help="fp32 even where bf16 is native")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--arm", choices=(*ARMS, "trl"), help=argparse.SUPPRESS)  # internal: one subprocess
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.setup_trl:
        setup_trl()
        return
    if args.arm:
        print(json.dumps(one_arm(args)))
        return
    args.bf16 = not args.fp32 and bf16_usable()
    arms = [a for a in args.arms.split(",") if a in ARMS] + (["trl"] if args.trl else [])
    if args.trl and not (TRL_VENV / "bin" / "python").exists():
        raise SystemExit(f"no TRL environment at {TRL_VENV}: run with --setup-trl first")
    dtype = "bf16 autocast (teacher bf16)" if args.bf16 else "fp32"
    print(
        f"B={args.batch} T={args.seq} {dtype} threads={args.threads} rounds={args.rounds} steps={args.steps}"
    )
    rows = []
    for vocab in [int(v) for v in args.vocabs.split(",")]:
        found: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for r in range(args.rounds):
            for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:  # each round starts elsewhere
                found[arm].append(run_arm(arm, vocab, args))
        tokens = args.batch * args.seq
        print(
            f"V={vocab}: {'arm':>8} {'tokens/s':>9} {'s/step':>7} {'peak MiB':>9} {'extra MiB':>9} {'loss':>8}"
        )
        summary = {}
        for arm, runs in found.items():
            seconds = statistics.median(s for run in runs for s in run["seconds"])
            summary[arm] = {
                "vocab": vocab,
                "arm": arm,
                "tokens_per_s": tokens / seconds,
                "seconds": seconds,
                "peak_mib": statistics.median(run["peak_mib"] for run in runs),
                "extra_mib": statistics.median(run["extra_mib"] for run in runs),
                "loss": runs[-1]["loss"],
            }
            s = summary[arm]
            print(
                f"{'':>8} {arm:>8} {s['tokens_per_s']:>9.0f} {seconds:>7.2f} {s['peak_mib']:>9.0f} "
                f"{s['extra_mib']:>9.0f} {s['loss']:>8.4f}"
            )
        if "trl" in summary and "fused" in summary:
            ref, ours = summary["trl"], summary["fused"]
            print(
                f"{'':>8} fused vs trl: {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x tokens/s, "
                f"{ours['peak_mib'] / ref['peak_mib']:.2f}x peak, {ours['extra_mib'] / ref['extra_mib']:.2f}x extra"
            )
        rows.extend(summary.values())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
