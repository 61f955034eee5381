"""Issue-25 item 5: one Fashion-MNIST KD epoch in torchdistill vs distil (live teacher, cached teacher).

The recipe is `recipes/fashion-mnist.yaml` as `benchmarks/kd_fashion_mnist.py` runs it: a LargeNet
teacher, a SmallNet student, batch 128, SGD (lr 0.05, momentum 0.9, weight decay 5e-4), gradient norm
clipped at 5, Hinton KD with T=4, kd_weight 0.9, ce_weight 0.1, channels_last. Augmentation is off
(augment=none): the teacher-output cache serves un-augmented epochs, and torchdistill gets the same
tensors without transforms, so every arm sees the same images. Arms, each one whole call (set-up, one
KD epoch over the training images, then one evaluation pass of the student over the same eval images):

- torchdistill: its `DistillationBox` (`get_distillation_box`) configured as its KD sample configs do
  (`KDLoss` over the models' outputs, `forward_batch_only`, a frozen teacher run live on every batch,
  the optimizer's `max_grad_norm`, a per-step scheduler), over a `torch.utils.data.DataLoader` of the
  same tensors (a `TensorDataset`, RandomSampler, num_workers 0); the epoch is its example
  `train_one_epoch` without the logging (forward_process, post_forward_process, a NaN check). Its
  models get the recipe's channels_last layout (identical work to distil's arms).
- torchdistill nchw: the same, the models left in PyTorch's default layout, as torchdistill ships
  (it has no layout setting): what a torchdistill user runs.
- distil live: `distill(..., teacher_cache=off)`.
- distil cached: `distill(..., teacher_cache=on)`: the teacher's logits come from the on-disk cache,
  built once before the rounds (its build and its opening on a hit are reported apart; each call pays
  the opening).
- floor: a bare PyTorch loop over the same tensors and the cached logits (the same loss, optimizer,
  clipping, schedule and layout, no framework at all): how close the cached epoch is to the student's
  own forward/backward.

Same models and weights (distil's LargeNet/SmallNet; one teacher checkpoint; every arm's student starts
from one initial state), same images and step count (drop_last in every arm), same thread count, one
process. What cannot be identical: the shuffle order (each library draws its own permutation of the
same images), the loss's arithmetic (torchdistill's `KLDivLoss` on probabilities vs distil's on
log-probabilities: the same value), the schedule's shape (torchdistill: `CosineAnnealingLR` per step,
distil: cosine with the recipe's 0.5-epoch warm-up; both one scalar per step), and weight decay on 1-D
parameters (distil exempts biases, torchdistill decays all). Arms are interleaved, each round starting
with the next arm, so drift in machine load hits all alike; wall and CPU time (the steadier measure on
a shared machine) are reported as medians with their min-max, ratios as medians of per-round ratios.

torchdistill needs torchvision, which does not import beside distil's own torch build, so the whole
benchmark runs in its own virtual environment holding torch, torchvision, torchdistill and distil
(editable, from this checkout): both tools on the same torch. torchdistill is not a distil dependency.

    python benchmarks/kd_vs_torchdistill.py --setup             # once: creates /tmp/torchdistill-venv
    nice -n 5 env OMP_NUM_THREADS=1 /tmp/torchdistill-venv/bin/python benchmarks/kd_vs_torchdistill.py \\
        --threads 1 --limit 2000 --rounds 1                     # smoke test
    /tmp/torchdistill-venv/bin/python benchmarks/kd_vs_torchdistill.py --threads 1   # 60k images, 5 rounds
    /tmp/torchdistill-venv/bin/python benchmarks/kd_vs_torchdistill.py --threads 1 --rounds 3 \\
        --arms "distil cached,floor,floor nchw,floor fused-sgd,floor compiled"   # the student step's variants

Before the rounds it checks that torchdistill's loss and distil's agree on one batch (same models), and
stops if they do not. Figures and their reading: docs/scale.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.metadata
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
VENV = Path("/tmp/torchdistill-venv")
# torch and torchvision: the newest pair pip may install here (the local wheels); torchdistill pinned to
# the release measured.
TD_PACKAGES = ("torch==2.14.1", "torchvision==0.29.1", "torchdistill==1.1.5")
ARMS = ("torchdistill", "torchdistill nchw", "distil live", "distil cached", "floor")
# Variants of the floor, on request (--arms): could the student's own step be faster? `compiled`
# compiles one student once (its first call, the warm-up, pays the compilation) and reloads the
# initial weights at each call.
FLOOR_VARIANTS = ("floor nchw", "floor fused-sgd", "floor compiled")
EVAL_BATCH = 512

Timing = tuple[float, float]  # (wall seconds, CPU seconds of this process)


# -- the virtual environment -------------------------------------------------------------------------


def distil_requirements() -> list[str]:
    """distil's runtime dependencies (its installed metadata: no extras), less torch, pinned apart."""
    deps = importlib.metadata.requires("distil") or []
    return [d for d in deps if "extra ==" not in d and _requirement_name(d) != "torch"]


def _requirement_name(requirement: str) -> str:
    """The distribution name of a requirement string ("torch>=2.3" -> "torch")."""
    for i, ch in enumerate(requirement):
        if not (ch.isalnum() or ch in "-_."):
            return requirement[:i].lower()
    return requirement.lower()


def setup_commands(venv: Path, repo: Path = REPO) -> list[list[str]]:
    """The commands that build the benchmark's environment: torch + torchvision + torchdistill, then
    distil's runtime dependencies and distil itself (editable, no dependency resolution of its own)."""
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    return [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, *TD_PACKAGES, *distil_requirements()],
        [*pip, "--no-deps", "-e", str(repo)],
    ]


def setup(venv: Path) -> None:
    """Create (or complete) the environment, then check that both tools import in it."""
    for cmd in setup_commands(venv):
        if cmd[1:3] == ["-m", "venv"] and (venv / "bin" / "python").exists():
            continue
        subprocess.run(cmd, check=True)
    check = (
        "import torch, torchvision, torchdistill, distil; print(torch.__version__, torchdistill.__version__)"
    )
    subprocess.run([str(venv / "bin" / "python"), "-c", check], check=True)


# -- the torchdistill arm ----------------------------------------------------------------------------


def torchdistill_train_config(
    *,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    grad_clip: float,
    temperature: float,
    kd_weight: float,
    ce_weight: float,
    steps: int,
    dataset_id: str,
) -> dict[str, Any]:
    """The `train` section of a torchdistill YAML config for this recipe, as the dict its YAML loads to.

    Mirrors its KD sample configs (`configs/sample/cifar10/kd/*.yaml`): `KDLoss` on the models' outputs
    (torchdistill's `alpha` weighs cross-entropy, `beta` the T^2-scaled KL), a frozen teacher, SGD; the
    recipe's clipping (`max_grad_norm`) and a per-step cosine schedule (`scheduling_step: 1`).
    """
    return {
        "num_epochs": 1,
        "train_data_loader": {
            "dataset_id": dataset_id,
            "requires_supp": True,  # batches as (inputs, targets, supp_dict), as its epoch loop reads them
            "sampler": {"class_or_func": torch.utils.data.RandomSampler, "kwargs": {}},
            "kwargs": {"batch_size": batch_size, "num_workers": 0, "drop_last": True},
        },
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": True},
        "optimizer": {
            "key": "SGD",
            "kwargs": {"lr": lr, "momentum": momentum, "weight_decay": weight_decay},
            "max_grad_norm": grad_clip,
        },
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": steps}, "scheduling_step": 1},
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {
                "sub_terms": {
                    "kd": {
                        "criterion": {
                            "key": "KDLoss",
                            "kwargs": {
                                "student_module_path": ".",
                                "student_module_io": "output",
                                "teacher_module_path": ".",
                                "teacher_module_io": "output",
                                "temperature": temperature,
                                "alpha": ce_weight,
                                "beta": kd_weight,
                                "reduction": "batchmean",
                            },
                        },
                        "weight": 1.0,
                    }
                }
            },
        },
    }


def torchdistill_epoch(
    teacher: nn.Module,
    student: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    evaluation: tuple[torch.Tensor, torch.Tensor],
    config: dict[str, Any],
    seed: int,
) -> float:
    """One KD epoch through torchdistill's DistillationBox, then the student's eval accuracy."""
    from torchdistill.core.distillation import get_distillation_box

    torch.manual_seed(seed)  # its RandomSampler's permutation
    dataset_id = config["train_data_loader"]["dataset_id"]
    datasets = {dataset_id: torch.utils.data.TensorDataset(*train)}
    box = get_distillation_box(
        teacher, student, datasets, copy.deepcopy(config), torch.device("cpu"), None, False, 1
    )
    box.pre_epoch_process(epoch=0)
    for sample_batch, targets, supp_dict in box.train_data_loader:
        loss = box.forward_process(sample_batch, targets, supp_dict)
        box.post_forward_process(loss=loss)
        if not math.isfinite(loss.item()):  # its example loop's per-step check
            raise SystemExit(f"torchdistill's KD loss became {loss.item()}")
    box.clean_modules()
    return evaluate(student, *evaluation)


def same_loss(
    teacher: nn.Module, student: nn.Module, config: dict[str, Any], kd: Any, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    """(torchdistill's, distil's) KD loss on one batch (x, y) with the same models: proof that the arms
    optimise the same objective. torchdistill's comes from a DistillationBox built from `config`."""
    from torchdistill.core.distillation import get_distillation_box

    from distil.losses.compose import build_loss

    datasets = {config["train_data_loader"]["dataset_id"]: torch.utils.data.TensorDataset(x, y)}
    box = get_distillation_box(
        teacher, student, datasets, copy.deepcopy(config), torch.device("cpu"), None, False, 1
    )
    box.pre_epoch_process(epoch=0)
    theirs = float(box.forward_process(x, y, {}).detach())
    box.clean_modules()
    loss = build_loss(kd, student=student, teacher=teacher, sample_x=x[:2], num_classes=10)
    with torch.no_grad():
        ours = float(loss(student(x), teacher(x), {"inputs": x, "labels": y})["loss"])
    return theirs, ours


# -- the floor ---------------------------------------------------------------------------------------


def floor_epoch(
    student: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    teacher_logits: torch.Tensor,
    evaluation: tuple[torch.Tensor, torch.Tensor],
    cfg: Any,
    kd: Any,
    *,
    channels_last: bool = True,
    fused: bool = False,
) -> float:
    """The same KD epoch as a bare PyTorch loop over in-memory tensors and precomputed teacher logits.

    `channels_last` False keeps PyTorch's default layout; `fused` uses SGD's fused kernel (the
    variants that ask whether the student's own step could be faster than distil's defaults).
    """
    from kd_loop_overhead import plain_sgd  # the plain loop's optimizer, shared with that benchmark

    layout = torch.channels_last if channels_last else torch.contiguous_format
    opt = plain_sgd(student, cfg, fused)
    x_all, y_all = train
    steps = len(y_all) // cfg.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    student.to(memory_format=layout).train()  # type: ignore[call-overload]
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(cfg.seed))
    t = kd.temperature
    total = torch.zeros(())
    for b in range(steps):
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x = x_all[idx].contiguous(memory_format=layout)
        s_logits = student(x)
        kl = F.kl_div(
            F.log_softmax(s_logits / t, dim=1),
            F.log_softmax(teacher_logits[idx] / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        loss = kd.kd_weight * t * t * kl + kd.ce_weight * F.cross_entropy(s_logits, y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        total += loss.detach()
    if not math.isfinite(float(total)):
        raise SystemExit("the floor loop diverged")
    return evaluate(student, *evaluation)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of `model` on (x, y), in batches of EVAL_BATCH."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(y), EVAL_BATCH):
            out = model(x[start : start + EVAL_BATCH])
            correct += int((out.argmax(1) == y[start : start + EVAL_BATCH]).sum())
    return correct / max(len(y), 1)


# -- timing and the table ----------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> Timing:
    """(wall seconds, CPU seconds of this process) of `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def round_order(arms: Sequence[str], round_index: int) -> list[str]:
    """The arms of one round, rotated by the round's index: each arm leads a round in turn."""
    k = round_index % len(arms)
    return [*arms[k:], *arms[:k]]


def _spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """'median (min-max)' of `values`."""
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def ratios(times: dict[str, list[Timing]], arm: str, baseline: str) -> tuple[list[float], list[float]]:
    """Per-round (CPU, wall) time ratios of `arm` to `baseline` (the same round's runs)."""
    pairs = list(zip(times[arm], times[baseline], strict=True))
    return [a[1] / b[1] for a, b in pairs], [a[0] / b[0] for a, b in pairs]


def table(times: dict[str, list[Timing]], baseline: str, samples: int) -> list[str]:
    """Markdown rows: each arm's epoch seconds (wall and CPU: median (min-max)), images per CPU-second,
    and its ratio to `baseline` by CPU and by wall time (median (min-max) of the per-round ratios)."""
    rows = [
        f"| arm (1 KD epoch + eval) | wall s | CPU s | images/CPU-s | vs {baseline} (CPU) | vs {baseline} (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in times.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        ratio_cpu, ratio_wall = ratios(times, name, baseline)
        rows.append(
            f"| {name} | {_spread(walls)} | {_spread(cpus)} | {samples / statistics.median(cpus):,.0f} | "
            f"{_spread(ratio_cpu, '{:.3f}x')} | {_spread(ratio_wall, '{:.3f}x')} |"
        )
    return rows


# -- main --------------------------------------------------------------------------------------------


def load_teacher(path: Path, data: Any, recipe: Any, epochs: int) -> nn.Module:
    """The teacher checkpoint `path` (.safetensors + .json); trained (`epochs` epochs of the recipe) and saved there first
    when missing. Timings do not depend on the weights; accuracy of the students does."""
    from distil.api import train_model
    from distil.train.build import build_model
    from distil.train.checkpoint import load_checkpoint, save_checkpoint

    if not Path(f"{path}.safetensors").exists():  # a distil checkpoint: NAME.safetensors + NAME.json
        cfg = recipe.teacher_train.model_copy(update={"epochs": epochs})
        teacher, spec = build_model(recipe.teacher, data, seed=cfg.seed)
        started = time.perf_counter()
        model = train_model(teacher, data, cfg).model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        save_checkpoint(path, model, spec, {"data": data.describe(), "epochs": epochs})
        print(f"teacher: trained {epochs} epoch(s) in {time.perf_counter() - started:.0f} s, saved to {path}")
    teacher, _ = load_checkpoint(path)
    return teacher.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="create the virtual environment and exit")
    ap.add_argument("--venv", type=Path, default=VENV)
    ap.add_argument(
        "--limit", type=int, default=None, help="train on at most this many images (default: all 60k)"
    )
    ap.add_argument("--eval-images", type=int, default=1000, help="test images each arm evaluates on")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher", type=Path, default=REPO / "benchmarks/out/kd_vs_torchdistill/teacher")
    ap.add_argument("--teacher-epochs", type=int, default=1, help="when the teacher checkpoint is missing")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    ap.add_argument(
        "--arms", default=",".join(ARMS), help="comma-separated, of " + ",".join((*ARMS, *FLOOR_VARIANTS))
    )
    args = ap.parse_args()
    if args.setup:
        setup(args.venv)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    """Load everything, build the cache, warm every arm up, then the interleaved rounds and the table."""
    from distil.api import distill
    from distil.config import TeacherCacheConfig, load_recipe
    from distil.data import Split, load_dataset
    from distil.models import create_model
    from distil.recipes import resolve_recipe
    from distil.teachers.cache import open_or_build
    from distil.train.engine import make_accelerator

    arms = [a.strip() for a in args.arms.split(",")]
    unknown = sorted(set(arms) - set(ARMS) - set(FLOOR_VARIANTS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {[*ARMS, *FLOOR_VARIANTS]}")
    if any(a.startswith("torchdistill") for a in arms):
        try:
            import torchdistill
        except ImportError as exc:
            raise SystemExit(
                f"torchdistill does not import here ({exc}): run this script with {args.venv}/bin/python "
                f"after `python {Path(__file__).name} --setup`"
            ) from None
    torch.set_num_threads(args.threads)
    recipe = load_recipe(resolve_recipe("fashion-mnist"), ["student_train.augment=none"])
    cfg, kd = recipe.student_train, recipe.kd
    data = load_dataset("fashion-mnist", val_fraction=0.0, limit=args.limit)
    full_train, full_test = data.train, data.test
    if not (isinstance(full_train, Split) and isinstance(full_test, Split)):
        raise SystemExit("the Fashion-MNIST splits are not in memory: every arm indexes the same tensors")
    n_eval = min(args.eval_images, len(full_test))
    test = Split(full_test.x[:n_eval], full_test.y[:n_eval])
    data = dataclasses.replace(data, test=test)
    teacher = load_teacher(args.teacher, data, recipe, args.teacher_epochs)
    torch.manual_seed(cfg.seed)
    init = create_model("smallnet", num_classes=10, in_channels=1, image_size=28).state_dict()

    def student() -> nn.Module:
        model = create_model("smallnet", num_classes=10, in_channels=1, image_size=28)
        model.load_state_dict(init)
        return model

    one_compiled: list[nn.Module] = []

    def compiled() -> nn.Module:
        """The one compiled student, back at the initial weights."""
        if not one_compiled:
            one_compiled.append(student().to(memory_format=torch.channels_last))  # type: ignore[call-overload]
            one_compiled[0].compile()
        one_compiled[0].load_state_dict(init)
        return one_compiled[0]

    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="kd-vs-torchdistill-"))
    live_cfg, cached_cfg = (
        cfg.model_copy(
            update={"epochs": 1, "teacher_cache": TeacherCacheConfig(dir=str(cache_dir), mode=mode)}
        )
        for mode in ("off", "on")
    )
    accelerator = make_accelerator("cpu")
    # One teacher copy per arm: distil puts its teacher in channels_last in place.
    teachers = {arm: copy.deepcopy(teacher) for arm in arms}
    _, built = open_or_build(teacher, data, cache_dir=cache_dir, channels_last=True)
    cached, opened = open_or_build(teacher, data, cache_dir=cache_dir, channels_last=True)
    logits = cached.values.float()
    train, evaluation = (full_train.x, full_train.y), (test.x, test.y)
    steps = len(data.train) // cfg.batch_size
    td_config = torchdistill_train_config(
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        momentum=cfg.optimizer.momentum,
        weight_decay=cfg.optimizer.weight_decay,
        grad_clip=cfg.grad_clip or math.inf,
        temperature=kd.temperature,
        kd_weight=kd.kd_weight,
        ce_weight=kd.ce_weight,
        steps=steps,
        dataset_id="fashion_mnist/train",
    )

    def td_call(arm: str, layout: torch.memory_format) -> float:
        t = teachers[arm].to(memory_format=layout)  # type: ignore[call-overload]
        s = student().to(memory_format=layout)  # type: ignore[call-overload]
        return torchdistill_epoch(t, s, train, evaluation, td_config, cfg.seed)

    calls: dict[str, Callable[[], object]] = {
        # The recipe's layout, as distil's arms (identical work); and torchdistill as it ships (NCHW).
        "torchdistill": lambda: td_call("torchdistill", torch.channels_last),
        "torchdistill nchw": lambda: td_call("torchdistill nchw", torch.contiguous_format),
        "distil live": lambda: distill(
            teachers["distil live"], student(), data, live_cfg, kd, accelerator=accelerator
        ),
        "distil cached": lambda: distill(
            teachers["distil cached"], student(), data, cached_cfg, kd, accelerator=accelerator
        ),
        "floor": lambda: floor_epoch(student(), train, logits, evaluation, cfg, kd),
        "floor nchw": lambda: floor_epoch(student(), train, logits, evaluation, cfg, kd, channels_last=False),
        "floor fused-sgd": lambda: floor_epoch(student(), train, logits, evaluation, cfg, kd, fused=True),
        "floor compiled": lambda: floor_epoch(compiled(), train, logits, evaluation, cfg, kd),
    }
    versions = f"torch {torch.__version__}"
    if any(a.startswith("torchdistill") for a in arms):
        versions += f", torchdistill {torchdistill.__version__}"
    print(
        f"fashion-mnist: {len(data.train)} train images, {n_eval} eval images, batch {cfg.batch_size}, "
        f"{steps} steps/epoch, {torch.get_num_threads()} thread(s), largenet -> smallnet, channels_last, "
        f"augment=none, T={kd.temperature:g} kd {kd.kd_weight:g} ce {kd.ce_weight:g}; {versions}"
    )
    print(
        f"distil cache: built in {built.seconds:.2f} s (one teacher pass), opened on a hit in "
        f"{opened.seconds:.2f} s ({built.rows} x {built.num_classes} fp16)"
    )
    if "torchdistill" in arms:
        probe = (full_train.x[: cfg.batch_size], full_train.y[: cfg.batch_size])
        theirs, ours = same_loss(copy.deepcopy(teacher), student(), td_config, kd, *probe)
        print(f"KD loss on one batch, same models: torchdistill {theirs:.7f}, distil {ours:.7f}")
        if not math.isclose(theirs, ours, rel_tol=1e-4):
            raise SystemExit(
                "torchdistill's and distil's KD losses differ: the arms would not do the same work"
            )
    for arm in arms:  # warm-up: lazy initialisation, oneDNN kernel selection
        calls[arm]()
    times: dict[str, list[Timing]] = {arm: [] for arm in arms}
    for r in range(args.rounds):
        for arm in round_order(arms, r):
            times[arm].append(timed(calls[arm]))
        print(
            f"round {r + 1}: "
            + "  ".join(f"{a} {v[-1][0]:.2f}s wall {v[-1][1]:.2f}s cpu" for a, v in times.items())
        )
    print()
    baseline = "torchdistill" if "torchdistill" in arms else arms[0]
    print("\n".join(table(times, baseline, steps * cfg.batch_size)))
    if {"distil cached", "torchdistill nchw"} <= set(arms):
        cpu, wall = ratios(times, "distil cached", "torchdistill nchw")
        print(
            f"distil cached / torchdistill nchw (as it ships): CPU {_spread(cpu, '{:.3f}x')}, "
            f"wall {_spread(wall, '{:.3f}x')}"
        )


if __name__ == "__main__":
    main()
