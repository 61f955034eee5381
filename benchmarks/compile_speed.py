"""Issue-25 benchmark: `train.compile: true` vs eager, per model family, with distil's own training step.

For each family a worker process (a fresh, empty inductor cache in a temporary directory: a cold
compile, as a user's first run pays it) builds two `distil.train.engine.TrainLoop`s from the same initial
weights, one eager and one with `compile: true` (applied by the loop, `Module.compile()`), and times
`TrainLoop.train_step` (forward, loss, backward, clipping, optimizer and schedule step, loss bookkeeping)
on the same batches:

- compile cost: the first 3 compiled steps less 3 steady compiled steps, plus the first `evaluate()`
  (eval mode and a ragged last batch compile again: every run evaluates each epoch) less a second one;
- steady step time: the median over interleaved rounds (eager, compiled, compiled, eager, ...:
  machine-load drift hits both alike) of each round's mean step, with the spread (min-max) of the
  rounds; the speed-up is the median of the rounds' paired eager/compiled ratios (wall clock, and
  this process's CPU time in the JSON rows);
- break-even: compile cost / (eager step - compiled step), when compiled is faster;
- verdict: on only where every round was faster compiled (a speed-up clear of the noise) and a
  typical run (the recipe's steps) saves more than the cold compile cost.

A second worker reuses the first one's cache directory (`warm`: a later run on the same machine) and
reports its compile cost alone. Data are random tensors of the recipes' shapes (step time does not
depend on the values); the teacher of the KD rows runs live, as with the recipes' random augmentation.
One thread unless `--threads` says otherwise.

    python benchmarks/compile_speed.py                        # every family, 1 thread (~30 min on 2 busy cores)
    python benchmarks/compile_speed.py --families smallnet --rounds 2 --steps 3   # smoke test
    python benchmarks/compile_speed.py --threads 1 2 --families smallnet smallnet-kd
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WARMUP = 3  # steps that may compile: the first (train graph) and any recompile it triggers


@dataclass(frozen=True)
class Family:
    """One row of the table: a model, its data shapes and recipe, and its typical run."""

    model: str
    kwargs: dict[str, Any]
    data: str  # "fashion", "cifar", "text", "lm" (blocks of 128 tokens) or "lm256"
    batch_size: int
    typical_steps: int
    typical_note: str
    teacher: str | None = None  # a live teacher (KD step) of the same data
    train: dict[str, Any] = field(default_factory=dict)


_SGD = {
    "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
    "lr": 0.05,
    "schedule": "cosine",
    "grad_clip": 5.0,
    "channels_last": True,
}
_ADAMW = {
    "optimizer": {"name": "adamw", "weight_decay": 0.01},
    "lr": 3e-3,
    "schedule": "cosine",
    "grad_clip": 1.0,
}
LLAMA = {  # recipes/lm-demo.yaml's student
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}
DOCS_LLAMA = {  # recipes/lm-python-docs.yaml's student
    **LLAMA,
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "max_position_embeddings": 256,
}
FASHION_RUN = (4680, "fashion-mnist recipe: 10 epochs x 468")
FAMILIES: dict[str, Family] = {
    "smallnet": Family("smallnet", {}, "fashion", 128, *FASHION_RUN, train=_SGD),
    "largenet": Family("largenet", {}, "fashion", 128, *FASHION_RUN, train=_SGD),
    "smallnet-nchw": Family(
        "smallnet", {}, "fashion", 128, *FASHION_RUN, train={**_SGD, "channels_last": False}
    ),  # is channels_last what compile loses on?
    "smallnet-kd": Family("smallnet", {}, "fashion", 128, *FASHION_RUN, teacher="largenet", train=_SGD),
    "resnet8": Family("resnet8", {}, "cifar", 64, 187440, "cifar10 recipe: 240 epochs x 781", train=_SGD),
    "resnet20": Family("resnet20", {}, "cifar", 64, 187440, "cifar10 recipe: 240 epochs x 781", train=_SGD),
    "lstm-classifier": Family(
        "lstm-classifier",
        {"embed_dim": 64, "hidden_size": 64, "bidirectional": True, "pooling": "max"},
        "text",
        32,
        561,
        "text_bilstm benchmark: 3 epochs x 187",
        train={**_ADAMW, "lr": 1e-3},
    ),
    "vit-tiny": Family("vit-tiny", {}, "fashion", 128, *FASHION_RUN, train={**_SGD, "channels_last": False}),
    "tiny-llama": Family(
        "hf-causal-lm", {"config": LLAMA}, "lm", 16, 270, "lm-demo student: 15 epochs x 18", train=_ADAMW
    ),
    "docs-llama": Family(
        "hf-causal-lm",
        {"config": DOCS_LLAMA},
        "lm256",
        16,
        2340,
        "lm-python-docs student: 1 epoch, 9.6M tokens / (16 x 256)",
        train=_ADAMW,
    ),
}


# -- the worker: one family, one process, one inductor cache -------------------------------------------


def _bundle(kind: str, batch_size: int) -> Any:
    """A DataBundle of random tensors with the recipe's shapes: 8 training batches, a ragged eval split."""
    import torch

    from distil.data import DataBundle, load_dataset
    from distil.data.bundle import Split

    g = torch.Generator().manual_seed(0)
    if kind in ("lm", "lm256"):  # the lm recipes' shapes, read from this Python's standard library
        block = 256 if kind == "lm256" else 128
        return load_dataset("python-stdlib", options={"block_size": block}, limit=8 * batch_size)
    n_train, n_eval = 8 * batch_size, 600  # 600: eval batches of 64 end with a ragged one, as real splits do
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if kind == "text":
        x = torch.randint(0, 258, (n_train + n_eval, 64), generator=g)
        extra = {"vocab_size": "259", "pad_id": "258"}
        classes, augment, pad = 4, "none", 0
    else:
        shape = (1, 28, 28) if kind == "fashion" else (3, 32, 32)
        x = torch.randn(n_train + n_eval, *shape, generator=g)
        extra, classes = {}, 10
        mean, std = (0.0,) * shape[0], (1.0,) * shape[0]
        augment, pad = "crop_flip", 2 if kind == "fashion" else 4
    y = torch.randint(0, classes, (n_train + n_eval,), generator=g)
    empty = Split(x[:0], y[:0])
    return DataBundle(
        name=f"random-{kind}",
        train=Split(x[:n_train], y[:n_train]),
        val=Split(x[n_train:], y[n_train:]),
        test=empty,
        class_names=[str(i) for i in range(classes)],
        mean=mean,
        std=std,
        augment=augment,
        crop_padding=pad,
        extra=extra,
    )


def _model(family: Family, name: str, data: Any, seed: int) -> Any:
    import torch

    from distil.models import create_model

    torch.manual_seed(seed)
    if data.is_tokens or data.vocab_size:
        return create_model(name, num_classes=data.num_classes, **family.kwargs)
    c, s = data.train.sample_shape[0], data.train.sample_shape[1]
    kwargs = family.kwargs if name == family.model else {}
    return create_model(name, num_classes=data.num_classes, in_channels=c, image_size=s, **kwargs)


def _loop(family: Family, data: Any, compiled: bool, accelerator: Any) -> Any:
    """distil's loop for this family: its loss (label loss, or KD with a live teacher) and recipe."""
    from distil.api import distill_loss
    from distil.config import KDConfig, StudentTrainConfig
    from distil.losses.compose import supervised_loss
    from distil.teachers.source import teacher_source
    from distil.train.engine import TrainLoop

    cfg = StudentTrainConfig(
        **family.train,
        epochs=1,
        max_steps=1_000_000,
        batch_size=family.batch_size,
        augment="auto",
        compile=compiled,
        teacher_cache="off",
    )
    student = _model(family, family.model, data, seed=1)
    teacher_fn = None
    if family.teacher is not None:
        teacher = _model(family, family.teacher, data, seed=0)
        kd = KDConfig(temperature=4.0, kd_weight=0.9, ce_weight=0.1)
        loss: Any = distill_loss(kd, teacher=teacher, student=student, data=data, cfg=cfg)
        teacher_fn, _ = teacher_source([teacher], data, loss, cfg, accelerator, temperature=kd.temperature)
    else:
        loss = supervised_loss(data.task)
    return TrainLoop(
        student,
        data,
        cfg,
        loss,
        teacher=teacher_fn,
        accelerator=accelerator,
        progress=None,
        description="bench",
        on_epoch_end=None,
        log_every=10,
        checkpoint=None,
    )


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _steps(loop: Any, batches: list[dict[str, Any]], n: int, start: int) -> list[float]:
    """Seconds of each of `n` training steps over `batches` (cycled from `start`)."""
    times = []
    for i in range(n):
        batch = dict(batches[(start + i) % len(batches)])  # a copy: the step may replace its inputs
        begin = time.perf_counter()
        loop.train_step(batch, 0)
        times.append(time.perf_counter() - begin)
    return times


def worker(name: str, threads: int, rounds: int, steps: int, warm: bool) -> dict[str, Any]:
    """Measure one family in this process (its inductor cache is the caller's TORCHINDUCTOR_CACHE_DIR)."""
    import torch

    from distil.train.engine import make_accelerator

    torch.set_num_threads(threads)
    family = FAMILIES[name]
    data = _bundle(family.data, family.batch_size)
    accelerator = make_accelerator("cpu")
    compiled = _loop(family, data, True, accelerator)
    compiled.loader.set_epoch(0)
    batches = list(compiled.loader)  # the same augmented batches for both arms
    first = _steps(compiled, batches, WARMUP, 0)
    eval_first, eval_again = _timed(compiled.evaluate), _timed(compiled.evaluate)
    compiled.model.train()
    out: dict[str, Any] = {
        "family": name,
        "threads": threads,
        "first_steps_s": first,
        "eval_s": [eval_first, eval_again],
    }
    if warm:  # only the compile cost of a warm cache; a few steps for the steady compiled step
        step = statistics.median(_steps(compiled, batches, steps, WARMUP))
        out.update(compiled_ms=step * 1e3, compile_s=sum(first) - WARMUP * step + eval_first - eval_again)
        return out
    eager = _loop(family, data, False, accelerator)
    _steps(eager, batches, WARMUP, 0)  # oneDNN primitive caches, allocator: untimed for both arms
    eager.evaluate()
    eager.model.train()
    per_round: dict[str, list[float]] = {"eager": [], "compiled": []}
    cpu_round: dict[str, list[float]] = {"eager": [], "compiled": []}  # this process's CPU s per step
    for r in range(rounds):
        for arm, loop in (
            (("eager", eager), ("compiled", compiled))
            if r % 2 == 0
            else (("compiled", compiled), ("eager", eager))
        ):
            cpu = time.process_time()
            per_round[arm].append(statistics.mean(_steps(loop, batches, steps, WARMUP + r * steps)))
            cpu_round[arm].append((time.process_time() - cpu) / steps)
    e, c = (statistics.median(per_round[a]) for a in ("eager", "compiled"))
    # Each round's pair ran back to back: their ratio is steadier than the ratio of the medians; CPU
    # time (one thread) counts the work done, not the waits for a core of this shared machine.
    ratios = [a / b for a, b in zip(per_round["eager"], per_round["compiled"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(cpu_round["eager"], cpu_round["compiled"], strict=True)]
    out.update(
        paired_ratio=statistics.median(ratios),
        paired_ratio_spread=[min(ratios), max(ratios)],
        cpu_ratio=statistics.median(cpu_ratios),
        cpu_ratio_spread=[min(cpu_ratios), max(cpu_ratios)],
        eager_cpu_ms=statistics.median(cpu_round["eager"]) * 1e3,
        compiled_cpu_ms=statistics.median(cpu_round["compiled"]) * 1e3,
        eager_ms=e * 1e3,
        compiled_ms=c * 1e3,
        eager_spread_ms=[min(per_round["eager"]) * 1e3, max(per_round["eager"]) * 1e3],
        compiled_spread_ms=[min(per_round["compiled"]) * 1e3, max(per_round["compiled"]) * 1e3],
        compile_s=sum(first) - WARMUP * c + eval_first - eval_again,
    )
    return out


# -- the driver: one worker per family (and a warm one), then the table --------------------------------


def run_worker(name: str, threads: int, rounds: int, steps: int, cache: str, warm: bool) -> dict[str, Any]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", name, "--threads", str(threads), "--rounds", str(rounds)]
    cmd += ["--steps", str(steps)] + (["--warm"] if warm else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"family": name, "threads": threads, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def clear_speedup(row: dict[str, Any]) -> bool:
    """Whether compiled steps were faster beyond this machine's noise: in every interleaved round (or,
    for a row without paired rounds, every compiled round faster than every eager one)."""
    if "paired_ratio_spread" in row:
        return bool(row["paired_ratio_spread"][0] > 1.0)
    return bool(row["compiled_spread_ms"][1] < row["eager_spread_ms"][0])


def verdict(row: dict[str, Any]) -> tuple[str, str]:
    """(break-even steps, verdict) of a measured row over its family's typical run.

    "on" needs a speed-up clear of the noise (`clear_speedup`) that saves more than the cold compile
    costs over the family's typical run.
    """
    family = FAMILIES[row["family"]]
    saved_per_step = (row["eager_ms"] - row["compiled_ms"]) / 1e3
    if saved_per_step <= 0:
        return "never", "off: compiled steps are slower"
    breakeven = row["compile_s"] / saved_per_step
    gain = family.typical_steps * saved_per_step - row["compile_s"]
    if gain <= 0:
        return f"{breakeven:.0f}", f"off: the run is too short (costs {-gain:.0f} s more)"
    if not clear_speedup(row):
        return f"{breakeven:.0f}", f"off: would save {gain:.0f} s, but the speed-up is within the noise"
    return f"{breakeven:.0f}", f"on: saves {gain:.0f} s"


def _ratio(row: dict[str, Any]) -> str:
    """eager/compiled step time: the median of the rounds' paired ratios (their spread), when recorded."""
    if "paired_ratio" not in row:
        return f"{row['eager_ms'] / row['compiled_ms']:.2f}x"
    low, high = row["paired_ratio_spread"]
    return f"{row['paired_ratio']:.2f}x ({low:.2f}-{high:.2f})"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| family | threads | eager step ms (spread) | compiled step ms (spread) | speed-up (spread) "
        "| compile s cold (warm) "
        "| break-even steps | typical run steps | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        family = FAMILIES[row["family"]]
        if "error" in row:
            lines.append(
                f"| {row['family']} | {row['threads']} | compile failed: {row['error']} | | | | | | |"
            )
            continue
        even, wins = verdict(row)
        es, cs = row["eager_spread_ms"], row["compiled_spread_ms"]
        warm = f" ({row['warm_compile_s']:.1f})" if "warm_compile_s" in row else ""
        lines.append(
            f"| {row['family']} | {row['threads']} | {row['eager_ms']:.1f} ({es[0]:.1f}-{es[1]:.1f}) "
            f"| {row['compiled_ms']:.1f} ({cs[0]:.1f}-{cs[1]:.1f}) | {_ratio(row)} "
            f"| {row['compile_s']:.1f}{warm} | {even} | {family.typical_steps} ({family.typical_note}) | {wins} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds per arm")
    ap.add_argument("--steps", type=int, default=8, help="steps per round")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-cache compile measurement")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--table", default=None, help="print the table of rows written by --json, and exit")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads[0], args.rounds, args.steps, args.warm)))
        return
    rows = []
    for threads in args.threads:
        for name in args.families:
            with tempfile.TemporaryDirectory(prefix="distil-inductor-") as cache:
                row = run_worker(name, threads, args.rounds, args.steps, cache, warm=False)
                if "error" not in row and not args.no_warm:
                    warm = run_worker(name, threads, args.rounds, args.steps, cache, warm=True)
                    if "error" not in warm:
                        row["warm_compile_s"] = warm["compile_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
