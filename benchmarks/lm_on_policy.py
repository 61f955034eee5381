"""Issue-23 benchmark: where a language-model student's training completions come from, on a task whose
answers can be checked (recipe ``lm-arithmetic``: 2-digit addition, answers least-significant digit first).

One teacher (the recipe's, 1.43M parameters; trained here or given with ``--teacher``) and, per seed, one
student per arm (the recipe's, 3.7x smaller). As in GKD (which first fine-tunes its students on the
gold data), every arm of a seed starts from the same student trained ``--warmup-steps`` (1200) steps
of SFT on the gold answers, then trains ``--steps`` (700) more, the same number for every arm; with
``--warmup-steps 0`` every arm starts from the same random initialisation instead:

* ``sft``: cross-entropy on the gold answers (no teacher);
* ``kd``: supervised KD, forward KL(teacher || student) per token on the gold answers (lmbda 0);
* ``seq-kd``: cross-entropy on the teacher's greedy answers, generated once and cached (Kim & Rush 2016);
* ``rkl`` / ``jsd``: reverse KL / generalized JSD (beta 0.5) on the gold answers (lmbda 0: the supervised
  counterparts of the on-policy arms);
* ``onpolicy-rkl-0.5`` / ``-1``: reverse KL on the student's own sampled answers for half / all batches;
* ``onpolicy-jsd-0.5`` / ``-1``: generalized JSD (beta 0.5) likewise (GKD, Agarwal et al. 2024).

Each student is scored on the 500 held-out problems (greedy): exact match, agreement of its answers with
the teacher's, and bits per byte of the gold answers; with the wall-clock seconds its training took.
Arms run interleaved (seed by seed, every arm in turn), so machine load hits them alike.

    python benchmarks/lm_on_policy.py --out /tmp/onpolicy                    # teacher + 7 arms x 3 seeds
    python benchmarks/lm_on_policy.py --teacher RUN/teacher --arms kd onpolicy-rkl-1 --seeds 0

``--format chat``: the same problems as chat conversations (a JSONL of ``{"messages": [user: "07+35=",
assistant: "24"]}`` written from the task's train and val problems, read by the ``chat`` dataset with the
built-in template, the loss on the assistant's tokens only, blocks of 48 tokens); the teacher is trained on
them, and the held-out problems are asked as the rendered user turn.

Smoke test: ``--steps 3 --warmup-steps 2 --seeds 0 --train-size 200 --teacher-epochs 1``. Results are written as they
come: ``OUT/students.jsonl`` (one line per student) and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from distil.api import distill, train_model
from distil.config import GenerationConfig, KDConfig, Recipe, StudentTrainConfig, load_recipe
from distil.data import DataBundle
from distil.data.tokenize import get_tokenizer
from distil.data.verifiable import Problem, verifiable_task
from distil.measure.generation import check_generation
from distil.recipes import resolve_recipe
from distil.run.pipeline import load_data
from distil.train.build import build_model
from distil.train.checkpoint import load_checkpoint, save_checkpoint

ARMS: dict[str, dict[str, Any]] = {
    "sft": {"terms": {"ce": 1.0}},
    "kd": {"terms": {"kd": 1.0}},
    "seq-kd": {"terms": {"ce": 1.0}, "generation": {"seq_kd": True, "temperature": 0.0}},
    "rkl": {"terms": {"rkl": 1.0}},
    "jsd": {"terms": {"js": 1.0}},
    "onpolicy-rkl-0.5": {"terms": {"rkl": 1.0}, "generation": {"lmbda": 0.5}},
    "onpolicy-rkl-1": {"terms": {"rkl": 1.0}, "generation": {"lmbda": 1.0}},
    "onpolicy-jsd-0.5": {"terms": {"js": 1.0}, "generation": {"lmbda": 0.5}},
    "onpolicy-jsd-1": {"terms": {"js": 1.0}, "generation": {"lmbda": 1.0}},
}


CHAT_BLOCK = 48  # "<|user|>\n07+35=\n<|assistant|>\n24" + EOS: 34 tokens


def _recipe(args: argparse.Namespace) -> Recipe:
    overrides = []
    if args.train_size:
        overrides.append(f"data.train_size={args.train_size}")
    if args.teacher_epochs:
        overrides.append(f"teacher_train.epochs={args.teacher_epochs}")
    return load_recipe(resolve_recipe("lm-arithmetic"), overrides)


def _as_chat(recipe: Recipe, task: Any, out: Path) -> Recipe:
    """The recipe on the task's train and val problems written as chat conversations (test held out)."""
    path = out / "arithmetic-chat.jsonl"
    with path.open("w") as f:
        for problem in task.all_problems()[len(task.test_problems()) :]:
            messages = [
                {"role": "user", "content": problem.prompt},
                {"role": "assistant", "content": problem.completion.rstrip("\n")},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    raw = recipe.model_dump(mode="json")
    raw["data"] = {
        "name": "chat",
        "root": str(path),
        "block_size": CHAT_BLOCK,
        "tokenizer": "byte",
        "chat_template": "builtin",
        "val_fraction": recipe.data.val_fraction,
    }
    for model in ("teacher", "student"):
        raw[model]["kwargs"]["config"]["max_position_embeddings"] = CHAT_BLOCK
    return Recipe.model_validate(raw)


def _chat_problems(task: Any) -> tuple[list[Problem], Any]:
    """The held-out problems asked as the built-in template's user turn, and their check."""
    asked = {f"<|user|>\n{p.prompt}\n<|assistant|>\n": p.prompt for p in task.test_problems()}
    problems = [
        Problem(prompt=chat, completion=original_completion)
        for chat, original_completion in zip(
            asked, (p.completion.rstrip("\n") for p in task.test_problems()), strict=True
        )
    ]
    return problems, lambda prompt, answer: task.check(asked[prompt], answer)


def _teacher(recipe: Recipe, data: DataBundle, args: argparse.Namespace) -> Any:
    path = Path(args.teacher) if args.teacher else args.out / "teacher"
    if path.with_suffix(".json").is_file():
        return load_checkpoint(path)[0]
    model, spec = build_model(recipe.teacher, data, seed=recipe.teacher_train.seed)
    started = time.perf_counter()
    trained = train_model(model, data, recipe.teacher_train).model
    print(f"teacher trained in {time.perf_counter() - started:.0f} s", flush=True)
    save_checkpoint(path, trained, spec, {"data": data.describe()})
    return trained


def _config(recipe: Recipe, seed: int, steps: int, generation: dict[str, Any]) -> StudentTrainConfig:
    raw = recipe.student_train.model_dump()
    return StudentTrainConfig.model_validate(
        {**raw, "seed": seed, "max_steps": steps, "generation": GenerationConfig(**generation).model_dump()}
    )


def _warm_start(recipe: Recipe, data: DataBundle, seed: int, steps: int) -> dict[str, Any] | None:
    """The student of `seed` after `steps` of SFT on the gold answers (None for 0): every arm starts there."""
    if steps == 0:
        return None
    model, _ = build_model(recipe.student, data, seed=seed)
    trained = train_model(model, data, _config(recipe, seed, steps, {})).model
    return {k: v.clone() for k, v in trained.state_dict().items()}


def _student(
    recipe: Recipe,
    data: DataBundle,
    teacher: Any,
    arm: str,
    seed: int,
    steps: int,
    start: dict[str, Any] | None,
) -> tuple[Any, list]:
    settings = ARMS[arm]
    model, _ = build_model(recipe.student, data, seed=seed)
    if start is not None:
        model.load_state_dict(start)
    cfg = _config(recipe, seed, steps, settings.get("generation", {}))
    if arm == "sft":
        return train_model(model, data, cfg).model, []
    kd = KDConfig(temperature=1.0, terms=settings["terms"])
    result = distill(teacher, model, data, cfg, kd)
    return result.model, result.history


def _table(rows: list[dict[str, Any]], teacher_exact: float) -> str:
    lines = [
        f"Teacher exact match: {teacher_exact:.1%}.",
        "",
        "| arm | exact match per seed | mean | gap to teacher | answer agreement | train s (mean) | gen tok/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        exact = [r["exact_match"] for r in mine]
        mean = statistics.mean(exact)
        agree = statistics.mean(r["answer_agreement"] for r in mine)
        seconds = statistics.mean(r["seconds"] for r in mine)
        rates = [r["generated_tokens_per_s"] for r in mine if r.get("generated_tokens_per_s")]
        rate = f"{statistics.mean(rates):.0f}" if rates else "-"
        per_seed = " / ".join(f"{e:.1%}" for e in exact)
        lines.append(
            f"| {arm} | {per_seed} | {mean:.1%} | {mean - teacher_exact:+.1%} | {agree:.1%} | {seconds:.0f} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lm-on-policy"))
    parser.add_argument("--teacher", help="a distil checkpoint of the recipe's teacher (default: train one)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=700, help="optimizer steps of every arm")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=1200,
        help="SFT steps every arm of a seed starts from (0: from scratch)",
    )
    parser.add_argument("--train-size", type=int, help="override the recipe's data.train_size")
    parser.add_argument("--teacher-epochs", type=int, help="override the recipe's teacher_train.epochs")
    parser.add_argument(
        "--format", choices=["plain", "chat"], default="plain", help="problems as text or as chat"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    recipe = _recipe(args)
    task = verifiable_task(load_data(recipe))
    assert task is not None, "lm-arithmetic is a verifiable task"
    problems, check = task.test_problems(), task.check
    if args.format == "chat":
        recipe = _as_chat(recipe, task, args.out)
        problems, check = _chat_problems(task)
    data = load_data(recipe)
    tokenizer = get_tokenizer(str(recipe.data.tokenizer))
    teacher = _teacher(recipe, data, args)
    reference = check_generation(teacher, tokenizer, problems, check)
    print(f"teacher exact match {reference.exact_match:.1%}", flush=True)

    rows: list[dict[str, Any]] = []
    log = args.out / "students.jsonl"
    for seed in args.seeds:
        started = time.perf_counter()
        start = _warm_start(recipe, data, seed, args.warmup_steps)
        if start is not None:
            print(
                f"seed {seed}: {args.warmup_steps} SFT steps in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        for arm in args.arms:
            started = time.perf_counter()
            student, history = _student(recipe, data, teacher, arm, seed, args.steps, start)
            seconds = time.perf_counter() - started
            checked = check_generation(student, tokenizer, problems, check, reference=reference.answers)
            generated = sum(r.get("generated_tokens", 0) for r in history)
            gen_seconds = sum(r.get("generation_seconds", 0.0) for r in history)
            row = {
                "arm": arm,
                "seed": seed,
                "warmup_steps": args.warmup_steps,
                "steps": args.steps,
                "seconds": round(seconds, 1),
                "generated_tokens_per_s": round(generated / gen_seconds, 1) if gen_seconds else None,
                **checked.metrics(),
            }
            rows.append(row)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            (args.out / "results.md").write_text(_table(rows, reference.exact_match))
    print(_table(rows, reference.exact_match))


if __name__ == "__main__":
    main()
