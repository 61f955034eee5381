"""Forward + backward time of the token-level divergences (kd, rkl, js, tvd) as ratios to kd, old vs new.

Each divergence runs through `distil.losses.chunked.row_loss` (the one chunked path every logit loss
takes) on the same (B, T, V) student and teacher logits with a padding mask (about 10% of the positions
padded), temperature 2, js at beta 0.5. Two implementations side by side, in one process:

- old: `src/distil/losses/chunked.py` as it is at git ref `--old-ref` (default main), loaded as a module
  of its own (the file imports nothing of distil);
- new: the working tree's.

The machine this was written on is shared (2 cores, other jobs): every (implementation, divergence)
pair is timed once per round, in a fresh random order each round, and the table gives the median over
the rounds with the spread (min-max), so a burst of load hits all pairs alike. The ratios divide
medians of the same implementation. The losses of old and new are printed too (they must agree).

`--memory` adds the peak memory of one step per pair, each in a fresh subprocess (CPU: VmHWM - VmRSS
around the step with a fixed glibc mmap threshold, as benchmarks/token_loss_memory.py; CUDA:
max_memory_allocated); it includes the one (B, T, V) gradient every pair produces.

    python benchmarks/divergence_speed.py                           # 8x256x4096 and 4x128x32000, fp32
    python benchmarks/divergence_speed.py --shapes 8x256x4096 --rounds 11 --memory
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"kd": "kl", "rkl": "rkl", "js": "jsd", "tvd": "tvd"}  # the term's name -> its row kernel
IMPLS = ("old", "new")
MiB = 1024 * 1024


def load_old(ref: str) -> ModuleType:
    """`chunked.py` at git `ref`, imported under a name of its own."""
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:src/distil/losses/chunked.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"cannot read chunked.py at git ref {ref!r}: {err.stderr.strip()}") from err
    path = Path(tempfile.mkdtemp(prefix="divspeed-")) / "old_chunked.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_chunked", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def modules(ref: str) -> dict[str, ModuleType]:
    sys.path.insert(0, str(ROOT / "src"))
    from distil.losses import chunked

    return {"old": load_old(ref), "new": chunked}


def make_inputs(
    shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, V) student and teacher logit rows and (N,) mean weights over the unpadded positions."""
    g = torch.Generator().manual_seed(0)
    b, t, v = shape
    student = (torch.randn(b * t, v, generator=g) * 2).to(device=device, dtype=dtype)
    teacher = (torch.randn(b * t, v, generator=g) * 2).to(device=device, dtype=dtype)
    keep = (torch.rand(b * t, generator=g) > 0.1).float().to(device)
    return student, teacher, keep / keep.sum()


def stepper(
    module: ModuleType, kind: str, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], temperature: float
) -> Callable[[], float]:
    """One forward + backward of `kind` by `module.row_loss`, returning the loss."""
    student, teacher, weights = inputs

    def step() -> float:
        x = student.detach().requires_grad_(True)
        loss = module.row_loss(KINDS[kind], x, teacher, weights, temperature=temperature, beta=0.5)
        loss.backward()
        return float(loss.detach())

    return step


def timed(step: Callable[[], float], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_one(args: argparse.Namespace) -> None:
    """In a fresh process: the peak extra memory of one step of one pair, as JSON on stdout."""
    device = torch.device(args.device)
    mods = modules(args.old_ref)
    inputs = make_inputs(parse_shape(args.one_shape), getattr(torch, args.dtype), device)
    step = stepper(mods[args.one_impl], args.one_kind, inputs, args.temperature)
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
        base = status("VmRSS")
        step()
        peak = status("VmHWM") - base
    print(json.dumps({"peak_mib": peak / MiB}))


def status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_mib(args: argparse.Namespace, shape: str, impl: str, kind: str) -> float:
    cmd = [sys.executable, __file__, "--one-shape", shape, "--one-impl", impl, "--one-kind", kind]
    cmd += ["--old-ref", args.old_ref, "--dtype", args.dtype, "--device", args.device]
    cmd += ["--threads", str(args.threads), "--temperature", str(args.temperature)]
    # Every buffer over 128 KiB its own mapping, returned on free: RSS follows the live tensor bytes.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def parse_shape(text: str) -> tuple[int, int, int]:
    b, t, v = (int(x) for x in text.lower().split("x"))
    return b, t, v


def run_shape(args: argparse.Namespace, mods: dict[str, ModuleType], shape_text: str) -> None:
    device = torch.device(args.device)
    inputs = make_inputs(parse_shape(shape_text), getattr(torch, args.dtype), device)
    steps = {(i, k): stepper(mods[i], k, inputs, args.temperature) for i in IMPLS for k in KINDS}
    losses = {pair: step() for pair, step in steps.items()}  # warm-up round, and the values
    times: dict[tuple[str, str], list[float]] = {pair: [] for pair in steps}
    order = list(steps)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for pair in order:
            times[pair].append(timed(steps[pair], device))
    med = {pair: statistics.median(ts) for pair, ts in times.items()}
    peaks = {pair: peak_mib(args, shape_text, *pair) for pair in steps} if args.memory else {}

    print(f"\n(B, T, V) = {shape_text}, {args.dtype}, {args.rounds} rounds, ms per forward + backward")
    cols = [f"{impl + ' ms (min-max)':>18} {'x kd':>5}" for impl in IMPLS]
    head = f"{'loss':>4} | {cols[0]} | {cols[1]} | {'new/old':>7}"
    if peaks:
        head += f" | {'old MiB':>7} {'new MiB':>7}"
    print(head + f" | {'loss old':>10} {'loss new':>10}")
    for kind in KINDS:
        cells = []
        for impl in IMPLS:
            ts = times[(impl, kind)]
            spread = f"{med[(impl, kind)] * 1e3:.0f} ({min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f})"
            cells.append(f"{spread:>18} {med[(impl, kind)] / med[(impl, 'kd')]:>5.2f}")
        line = f"{kind:>4} | {cells[0]} | {cells[1]} | {med[('new', kind)] / med[('old', kind)]:>7.2f}"
        if peaks:
            line += f" | {peaks[('old', kind)]:>7.0f} {peaks[('new', kind)]:>7.0f}"
        print(line + f" | {losses[('old', kind)]:>10.6f} {losses[('new', kind)]:>10.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="8x256x4096,4x128x32000", help="BxTxV, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--old-ref", default="main", help="git ref of the old chunked.py")
    ap.add_argument("--memory", action="store_true", help="also the peak memory, one subprocess per pair")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one-shape", help=argparse.SUPPRESS)  # internal: one pair's peak, in a subprocess
    ap.add_argument("--one-impl", help=argparse.SUPPRESS)
    ap.add_argument("--one-kind", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one_shape:
        peak_one(args)
        return
    mods = modules(args.old_ref)
    print(f"device={args.device} threads={args.threads} T_soft={args.temperature} old={args.old_ref}")
    for shape in args.shapes.split(","):
        run_shape(args, mods, shape)


if __name__ == "__main__":
    main()
