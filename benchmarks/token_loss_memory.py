"""Peak memory and time of the per-token KD loss, forward + backward: chunked (distil) vs naive, side by side.

Variants, each on the same (B, T, V) student and teacher logits with a padding mask (about 10% of the
positions padded, as in packed LM batches):

- naive: the textbook loss (select the valid rows, up-cast to fp32, two full log-softmaxes, KL), autograd.
- checkpoint: the naive formula per chunk of rows under `torch.utils.checkpoint` (no fp32 saved either;
  autograd recomputes each chunk in backward and assembles the gradient from the chunks).
- recompute: distil's chunked function with backward="recompute" (keeps only (N,) logsumexps from forward;
  backward recomputes each chunk's softmaxes).
- chunked: `distil.losses.kd_kl` as the loss terms call it ((B, T, V) path, backward="stored": the gradient
  is written during forward, chunk by chunk, into one tensor of the logits' dtype).

How peak memory is measured. On CUDA: `torch.cuda.max_memory_allocated` minus the allocation before the
step. On CPU, torch has no allocator statistics and `tracemalloc` does not see its buffers; each
variant therefore runs in a fresh subprocess (no cache or fragmentation from another variant), makes
its inputs, runs the step once to warm up, resets the kernel's peak-RSS mark (`echo 5 >
/proc/self/clear_refs`), and reports VmHWM - VmRSS around one step (the gradient included, since an
optimizer would need it). The subprocess runs with a fixed glibc mmap threshold (128 KiB), so every
tensor buffer is its own mapping, returned to the kernel on free: RSS then follows the live tensor
bytes (checked: the chunked fp32 peak is the one (B, T, V) gradient plus its few chunk temporaries).
The size of one (B, T, V) tensor is printed with each table, so the extra memory can be read off.

    python benchmarks/token_loss_memory.py                      # B=4, T=512, V in {32000, 50257}, fp32 + bf16
    python benchmarks/token_loss_memory.py --batch 2 --seq 128  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

VARIANTS = ("naive", "checkpoint", "recompute", "chunked")
MiB = 1024 * 1024


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def naive_kd(s: torch.Tensor, t: torch.Tensor, temperature: float, mask: torch.Tensor) -> torch.Tensor:
    rows_s, rows_t = s[mask].float(), t[mask].float()  # boolean selection: a host sync on a GPU
    log_q = F.log_softmax(rows_s / temperature, dim=1)
    log_p = F.log_softmax(rows_t / temperature, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * temperature**2


def checkpoint_kd(
    s: torch.Tensor, t: torch.Tensor, temperature: float, mask: torch.Tensor, rows: int
) -> torch.Tensor:
    from torch.utils.checkpoint import checkpoint

    flat_s, flat_t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
    w = mask.reshape(-1).float()
    w = w / w.sum().clamp(min=1)

    def chunk(a: torch.Tensor, b: torch.Tensor, wc: torch.Tensor) -> torch.Tensor:
        log_q = F.log_softmax(a.float() / temperature, dim=1)
        log_p = F.log_softmax(b.float() / temperature, dim=1)
        return ((log_p.exp() * (log_p - log_q)).sum(1) * wc).sum()

    total = torch.zeros((), device=s.device)
    for i in range(0, flat_s.shape[0], rows):
        sl = slice(i, i + rows)
        total = total + checkpoint(chunk, flat_s[sl], flat_t[sl], w[sl], use_reentrant=False)
    return total * temperature**2


def one_variant(args: argparse.Namespace) -> dict[str, float]:
    """Run in a fresh process: peak extra memory and the median time of forward + backward."""
    from distil.losses import kd_kl
    from distil.losses.chunked import chunk_rows, row_loss
    from distil.losses.functional import position_weights

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    shape = (args.batch, args.seq, args.vocab)
    s = (torch.randn(shape, device=device) * 2).to(dtype).requires_grad_(True)
    t = (torch.randn(shape, device=device) * 2).to(dtype)
    mask = torch.rand(shape[:2], device=device) > 0.1
    rows = chunk_rows(args.vocab, args.chunk)

    def step() -> float:
        s.grad = None
        if args.variant == "naive":
            loss = naive_kd(s, t, args.temperature, mask)
        elif args.variant == "checkpoint":
            loss = checkpoint_kd(s, t, args.temperature, mask, rows)
        elif args.variant == "recompute":
            w = position_weights(mask.shape, mask, device=device)
            flat_s, flat_t = s.reshape(-1, args.vocab), t.reshape(-1, args.vocab)
            loss = row_loss(
                "kl", flat_s, flat_t, w, temperature=args.temperature, chunk_size=rows, backward="recompute"
            )
        else:
            loss = kd_kl(s, t, args.temperature, mask=mask, chunk_size=args.chunk)
        loss.backward()
        return float(loss)

    value = step()  # warm-up (and the value, to check the variants agree)
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    s.grad = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
        base = _status("VmRSS")
        step()
        peak = _status("VmHWM") - base
    times.sort()
    return {"peak_mib": peak / MiB, "seconds": times[len(times) // 2], "loss": value}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--vocabs", default="32000,50257")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--chunk", type=int, default=None, help="rows per chunk (default: about 8M logits)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one subprocess
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(one_variant(args)))
        return

    rows = []
    print(
        f"B={args.batch} T={args.seq} T_soft={args.temperature} device={args.device} threads={args.threads}"
    )
    header = f"{'V':>6} {'dtype':>5} {'variant':>10} {'peak MiB':>9} {'x naive':>8} {'s/step':>7} {'x naive':>8} {'loss':>9}"
    print(header)
    for vocab in [int(v) for v in args.vocabs.split(",")]:
        for dtype in args.dtypes.split(","):
            logits_mib = args.batch * args.seq * vocab * (4 if dtype == "fp32" else 2) / MiB
            results = {}
            for variant in VARIANTS:
                cmd = [
                    sys.executable,
                    __file__,
                    "--variant",
                    variant,
                    "--vocab",
                    str(vocab),
                    "--dtype",
                    dtype,
                ]
                cmd += [
                    "--batch",
                    str(args.batch),
                    "--seq",
                    str(args.seq),
                    "--temperature",
                    str(args.temperature),
                ]
                cmd += [
                    "--repeats",
                    str(args.repeats),
                    "--device",
                    args.device,
                    "--threads",
                    str(args.threads),
                ]
                if args.chunk:
                    cmd += ["--chunk", str(args.chunk)]
                # A fixed mmap threshold: every buffer over 128 KiB is its own mapping, returned on free, so
                # RSS is the live bytes (glibc otherwise raises the threshold and keeps freed heap pages).
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                results[variant] = json.loads(out.strip().splitlines()[-1])
            ref = results["naive"]
            for variant, r in results.items():
                print(
                    f"{vocab:>6} {dtype:>5} {variant:>10} {r['peak_mib']:>9.0f} {r['peak_mib'] / ref['peak_mib']:>8.2f} "
                    f"{r['seconds']:>7.2f} {r['seconds'] / ref['seconds']:>8.2f} {r['loss']:>9.5f}"
                )
                rows.append(
                    {"vocab": vocab, "dtype": dtype, "variant": variant, "logits_mib": logits_mib, **r}
                )
            print(
                f"{'':>6} {'':>5} (one (B, T, V) {dtype} tensor = {logits_mib:.0f} MiB; the gradient is one of them)"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
