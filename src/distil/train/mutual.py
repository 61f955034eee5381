"""Online mutual learning (Zhang et al., CVPR 2018, "Deep Mutual Learning"): no fixed teacher.

Two or more students train together; each minimises

    ce_weight * CE(student_i, y) + kd_weight * mean_{j != i} T^2 * KL(p_j^T || p_i^T)

where the peers' distributions p_j are treated as constants (detached), as in the paper. All
students see the same batches; each has its own optimizer and schedule built from the same recipe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from rich.progress import Progress
from torch import nn

from distil.config import TrainConfig
from distil.data import DataBundle
from distil.data.batch import call_model
from distil.errors import ConfigError
from distil.losses.functional import cross_entropy, kd_kl
from distil.measure import accuracy, predict_split
from distil.train.engine import _check_finite, eval_split, make_accelerator, train_loader
from distil.train.optim import build_optimizer, build_scheduler


@dataclass
class MutualResult:
    """The trained students (unwrapped, in input order) and one record per epoch."""

    models: list[nn.Module]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_accuracies(self) -> list[float]:
        return (
            [self.history[-1][f"s{i}_eval_accuracy"] for i in range(len(self.models))] if self.history else []
        )


def mutual_losses(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    temperature: float,
    kd_weight: float,
    ce_weight: float,
) -> list[dict[str, torch.Tensor]]:
    """Each student's DML loss terms: {"loss", "ce", "kd"} with the peers' outputs detached.

    Args:
        logits: one (B, K) tensor per student.
        labels: (B,) classes.
        temperature: T of the mimicry term (1 in the paper).
        kd_weight: weight of the mimicry term.
        ce_weight: weight of the supervised term.
    """
    out = []
    for i, z in enumerate(logits):
        peers = [p.detach() for j, p in enumerate(logits) if j != i]
        kd = torch.stack([kd_kl(z, p, temperature) for p in peers]).mean()
        ce = cross_entropy(z, labels)
        out.append({"loss": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd})
    return out


def fit_mutual(
    students: Sequence[nn.Module],
    data: DataBundle,
    cfg: TrainConfig,
    *,
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    ce_weight: float = 1.0,
    accelerator: Accelerator | None = None,
    progress: Progress | None = None,
    description: str = "mutual",
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> MutualResult:
    """Train `students` together by deep mutual learning.

    Args:
        students: two or more networks for `data` (they may differ in architecture).
        data: the in-memory dataset.
        cfg: the training recipe, used for every student.
        temperature: softening T of the mimicry term.
        kd_weight, ce_weight: weights of the mimicry and supervised terms.
        accelerator, progress, description, on_epoch_end: as in `distil.train.engine.fit`.

    Returns:
        MutualResult with every student and per-epoch records (`s{i}_eval_accuracy`, `train_s{i}_ce`, ...).

    Raises:
        ConfigError: fewer than two students.
        TrainingError: the loss became NaN/Inf.
    """
    if len(students) < 2:
        raise ConfigError(f"mutual learning needs at least two students, got {len(students)}")
    accelerator = accelerator or make_accelerator()
    torch.manual_seed(cfg.seed)
    loader = train_loader(data, cfg, accelerator)
    steps = len(loader)
    optimizers = [build_optimizer(m, cfg) for m in students]
    schedulers = [build_scheduler(o, cfg, steps) for o in optimizers]
    prepared = accelerator.prepare(*students, *optimizers)
    models, optimizers = list(prepared[: len(students)]), list(prepared[len(students) :])
    device = accelerator.device
    eval_name, eval_data = eval_split(data)
    task = (
        progress.add_task(description, total=cfg.epochs * steps, status="") if progress is not None else None
    )
    history: list[dict[str, Any]] = []
    step = 0
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        for m in models:
            m.train()
        started = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        window, window_start = torch.zeros((), device=device), step
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with accelerator.autocast():
                logits = [call_model(m, batch["inputs"]) for m in models]
            terms = mutual_losses(logits, batch["labels"], temperature, kd_weight, ce_weight)
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            # Peers are detached, so one backward of the sum gives each student its own gradient.
            total = torch.stack([t["loss"] for t in terms]).sum()
            accelerator.backward(total)
            for m, o, s in zip(models, optimizers, schedulers, strict=True):
                if cfg.grad_clip is not None:
                    accelerator.clip_grad_norm_(m.parameters(), cfg.grad_clip)
                o.step()
                s.step()
            step += 1
            for i, t in enumerate(terms):
                for name, value in t.items():
                    key = f"s{i}_{name}"
                    sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()
            window = window + total.detach().float()
            if step % 10 == 0 or step % steps == 0:
                _check_finite(window, window_start, step, cfg)
                window, window_start = torch.zeros((), device=device), step
                if progress is not None and task is not None:
                    progress.update(task, completed=step, status=f"epoch {epoch + 1}/{cfg.epochs}")
        seconds = time.perf_counter() - started
        record: dict[str, Any] = {"stage": description, "epoch": epoch + 1, "seconds": round(seconds, 3)}
        record.update({f"train_{k}": float(v) / steps for k, v in sums.items()})
        for i, m in enumerate(models):
            logits_eval = predict_split(accelerator.unwrap_model(m), eval_data)
            record[f"s{i}_{eval_name}_accuracy"] = accuracy(logits_eval, eval_data.labels)
            record[f"s{i}_eval_accuracy"] = record[f"s{i}_{eval_name}_accuracy"]
        if not all(math.isfinite(v) for k, v in record.items() if k.startswith("train_")):
            _check_finite(torch.tensor(float("nan")), epoch * steps, step, cfg)
        history.append(record)
        if on_epoch_end is not None and accelerator.is_main_process:
            on_epoch_end(record)
    return MutualResult(models=[accelerator.unwrap_model(m) for m in models], history=history)
