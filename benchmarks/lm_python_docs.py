"""Issue-13 benchmark: a byte-level LM teacher on the Python documentation, a 4x smaller student, KD vs scratch.

Corpus: the reStructuredText sources of Debian's python3.11-doc package (dataset ``python-docs``, about
500 files, 11 MB of English; whole files held out as val and test by a hash of their path). The teacher
(a llama-style model of ~1.9M parameters) is trained once on CPU for a fixed step budget and saved under
``--out``; then, for each seed, two students of ~0.5M parameters (3.8x fewer) start from the same initial
weights and train for the same number of steps on the same blocks: one on the next-token labels alone
(scratch), one distilled from the teacher (token-level KD: kd_weight * KL(teacher || student) + ce_weight *
CE). Held-out perplexity is measured on every third test block (spread over all held-out files), the same
blocks for every model, in one process.

The defaults (teacher 2,400 steps, students 400) are the measured run in docs/lm.md: KD pays once the
teacher has trained several times the students' budget (at 1-3x it showed no gain).

    python benchmarks/lm_python_docs.py                        # everything (~35 min on 2 idle cores)
    python benchmarks/lm_python_docs.py --stage teacher        # or the stages one by one
    python benchmarks/lm_python_docs.py --stage students --seeds 0 1 2

Smoke test: ``--teacher-steps 4 --student-steps 3 --seeds 0 --out /tmp/lmbench``. Results are written as
they come: ``OUT/teacher_result.json``, ``OUT/students.jsonl`` (one line per student) and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from distil.api import distill, train_model
from distil.config import KDConfig, StudentTrainConfig, TrainConfig
from distil.data import DataBundle, load_dataset
from distil.measure import count_parameters, split_metrics
from distil.models import build_from_spec, model_spec
from distil.train.checkpoint import load_checkpoint, save_checkpoint

TEACHER = {
    "model_type": "llama",
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
}
STUDENT = {
    **TEACHER,
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}
BATCH = 16
BLOCK = 256


def train_cfg(steps: int, seed: int, lr: float) -> TrainConfig:
    return StudentTrainConfig(
        optimizer={"name": "adamw", "weight_decay": 0.01},
        lr=lr,
        schedule={"name": "cosine", "warmup_epochs": 0.05},
        epochs=1,
        batch_size=BATCH,
        grad_clip=1.0,
        teacher_cache="off",
        seed=seed,
    )


def budget(data: DataBundle, steps: int, seed: int) -> DataBundle:
    """`steps` batches of train blocks drawn at random from the whole corpus (one epoch = the budget)."""
    g = torch.Generator().manual_seed(1000 + seed)
    pick = torch.randperm(len(data.train), generator=g)[: steps * BATCH]
    val = data.val.take(torch.arange(0, len(data.val), max(1, len(data.val) // 64)))
    return dataclasses.replace(data, train=data.train.take(pick.sort().values), val=val)


def held_out(data: DataBundle) -> Any:
    return data.test.take(torch.arange(0, len(data.test), 3))


def evaluate(model: torch.nn.Module, test: Any, reference: torch.Tensor | None) -> tuple[dict, torch.Tensor]:
    metrics, preds = split_metrics(
        model, test, "language-modeling", reference=reference, batch_size=32, keep_predictions=True
    )
    assert preds is not None
    return metrics, preds


def stage_teacher(data: DataBundle, out: Path, steps: int) -> None:
    spec = model_spec(
        "hf-causal-lm", num_classes=data.num_classes, in_channels=1, image_size=1, config=TEACHER
    )
    torch.manual_seed(0)
    teacher = build_from_spec(spec)
    cfg = train_cfg(steps, 0, 3e-3)
    started = time.perf_counter()
    result = train_model(teacher, budget(data, steps, seed=99), cfg, description="teacher")
    seconds = time.perf_counter() - started
    metrics, _ = evaluate(result.model, held_out(data), None)
    save_checkpoint(out / "teacher", result.model, spec, {"data": data.describe(), "history": result.history})
    record = {
        "params": count_parameters(result.model),
        "steps": steps,
        "tokens": steps * BATCH * BLOCK,
        "train_seconds": round(seconds, 1),
        "tokens_per_s": result.history[-1].get("tokens_per_s"),
        "test": metrics,
    }
    (out / "teacher_result.json").write_text(json.dumps(record, indent=2))
    print(f"teacher: {record}", flush=True)


def stage_students(data: DataBundle, out: Path, steps: int, seeds: list[int]) -> None:
    teacher, _ = load_checkpoint(out / "teacher")
    test = held_out(data)
    _, reference = evaluate(teacher, test, None)
    kd = KDConfig(temperature=1.0, kd_weight=0.7, ce_weight=0.3)
    spec = model_spec(
        "hf-causal-lm", num_classes=data.num_classes, in_channels=1, image_size=1, config=STUDENT
    )
    for seed in seeds:
        part = budget(data, steps, seed)
        cfg = train_cfg(steps, seed, 3e-3)
        for method in ("scratch", "kd"):
            torch.manual_seed(seed)
            student = build_from_spec(spec)  # the same initial weights for both methods of a seed
            started = time.perf_counter()
            if method == "scratch":
                result = train_model(student, part, cfg, description="student_scratch")
            else:
                result = distill(teacher, student, part, cfg, kd, description="student_kd")
            seconds = time.perf_counter() - started
            metrics, _ = evaluate(result.model, test, reference)
            record = {
                "seed": seed,
                "method": method,
                "params": count_parameters(result.model),
                "steps": steps,
                "train_seconds": round(seconds, 1),
                "tokens_per_s": result.history[-1].get("tokens_per_s"),
                "test": metrics,
            }
            with (out / "students.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"student: {record}", flush=True)


def stage_table(out: Path) -> str:
    teacher = json.loads((out / "teacher_result.json").read_text())
    rows = [json.loads(line) for line in (out / "students.jsonl").read_text().splitlines() if line.strip()]
    t_ppl = teacher["test"]["perplexity"]
    lines = [
        f"Teacher: {teacher['params']:,} parameters, {teacher['steps']} steps x {BATCH} blocks x {BLOCK} "
        f"tokens ({teacher['tokens']:,} tokens, {teacher['train_seconds']:.0f} s on CPU): held-out "
        f"perplexity {t_ppl:.3f}, next-token accuracy {teacher['test']['accuracy']:.2%}.",
        "",
        "| student | seeds | params | held-out perplexity (mean ± std) | minus teacher's | next-token acc | "
        "agreement with teacher |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in ("scratch", "kd"):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        ppl = [r["test"]["perplexity"] for r in mine]
        acc = [r["test"]["accuracy"] for r in mine]
        agr = [r["test"]["agreement"] for r in mine]
        sd = statistics.stdev(ppl) if len(ppl) > 1 else 0.0
        lines.append(
            f"| {method} | {len(mine)} ({', '.join(str(r['seed']) for r in mine)}) | {mine[0]['params']:,} | "
            f"{statistics.mean(ppl):.3f} ± {sd:.3f} | +{statistics.mean(ppl) - t_ppl:.3f} | "
            f"{statistics.mean(acc):.2%} | {statistics.mean(agr):.2%} |"
        )
    per_seed = {}
    for r in rows:
        per_seed.setdefault(r["seed"], {})[r["method"]] = r["test"]["perplexity"]
    wins = [s for s, v in per_seed.items() if "kd" in v and "scratch" in v and v["kd"] < v["scratch"]]
    both = [s for s, v in per_seed.items() if "kd" in v and "scratch" in v]
    lines += ["", f"KD student lower perplexity than scratch in {len(wins)} of {len(both)} seeds."]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=["all", "teacher", "students", "table"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-steps", type=int, default=2400)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("/work/bench/lm"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "table":
        stage_table(args.out)
        return
    data = load_dataset("python-docs", options={"block_size": BLOCK})
    if args.stage in ("all", "teacher") and not (args.out / "teacher.safetensors").is_file():
        stage_teacher(data, args.out, args.teacher_steps)
    if args.stage in ("all", "students"):
        stage_students(data, args.out, args.student_steps, args.seeds)
    if args.stage == "all":
        stage_table(args.out)


if __name__ == "__main__":
    main()
