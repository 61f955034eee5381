"""Issue-13 item 5: sequence teacher caches (full / top-k / sampled) on a real teacher LM and real text.

A small llama teacher (hf-causal-lm, byte tokenizer) is trained once on the Python documentation's
reStructuredText sources (real English, /usr/share/doc/python3.11/html/_sources) and saved under
--out. Then, with caches built by `distil.teachers.seqcache.open_or_build_sequence`:

(a) bias on held-out blocks: the KD loss (T=1, forward KL) and its gradient w.r.t. the student logits
    from top-k (renormalised, and tail bucket) and sampled targets at equal bytes per token, against
    the full-logit loss: relative loss error, gradient cosine and relative norm error. Sampled targets
    are drawn R times: "1 draw" is the mean over single draws (variance included), "mean of R" the
    error of the R-draw average (what remains is bias + variance / R).
(b) a ~5x smaller student trained for the same steps (pure KD, kd weight 1, no CE) from each cache,
    and with plain cross-entropy: held-out perplexity.
(c) step time (cache lookup + student forward + loss + backward + optimizer step) of cached KD vs
    the student-only CE step, interleaved step by step in one run (ratios of medians).

    python benchmarks/seq_cache_bias.py --student-steps 150 --train-ks 8   # the run in docs/lm-cache.md
    python benchmarks/seq_cache_bias.py --smoke          # a few minutes: tiny budgets, no claims

The run in docs/lm-cache.md took 12 min (teacher, reused afterwards from --out) + 6 min (caches) + 40 min
(bias, step times, four students) on 2 CPU cores shared at load ~13; the teacher's 12-minute cap gave
only 56 steps there (--teacher-minutes, --teacher-steps for a stronger one on a free machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.data.text import load_text
from distil.losses.functional import cross_entropy, kd_kl
from distil.losses.logit import KDTerm
from distil.losses.registry import TermContext, TermInputs
from distil.losses.sparse import SparseTargets, sparse_kd
from distil.models import create_model
from distil.teachers.seqcache import bytes_per_token, open_or_build_sequence, sparse_rows, vocab_size
from distil.teachers.store import Sampled

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
TEACHER = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256}  # fmt: skip
STUDENT = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
           "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256}  # fmt: skip


def params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def train(
    model: nn.Module,
    data: Any,
    steps: int,
    batch: int,
    lr: float,
    teacher_fn: Any = None,
    seed: int = 0,
    minutes: float | None = None,
) -> list[float]:
    """`steps` AdamW steps over shuffled train blocks: CE without a teacher, else the kd term only.

    With `minutes`, training stops early when that much wall time has passed (the teacher's budget on a
    shared machine; the students always run their full, equal step budget).
    """

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    started, budget = time.perf_counter(), 60 * minutes if minutes is not None else math.inf
    term, losses = KDTerm(TermContext()), []
    n = len(data.train)
    order, at = torch.randperm(n, generator=g), 0
    for step in range(steps):
        # Linear warm-up over the first 5%, then cosine decay to 0 by the step or time budget's end.
        progress = min(1.0, max(step / steps, (time.perf_counter() - started) / budget))
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (progress + 1e-9) / 0.05) * 0.5 * (1 + math.cos(math.pi * progress))
        if at + batch > n:  # a new epoch: a new order
            order, at = torch.randperm(n, generator=g), 0
        index, at = order[at : at + batch], at + batch
        b = next(iter(data.train.take(index).batches(batch)))
        model.train()
        logits = model(b["inputs"])
        if teacher_fn is None:
            loss = cross_entropy(logits, b["labels"])
        else:
            target = teacher_fn({"index": index, "labels": b["labels"]})
            loss = term(TermInputs(logits, target, b["labels"], temperature=1.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if time.perf_counter() - started > budget:
            break
    return losses


@torch.no_grad()
def perplexity(model: nn.Module, split: Any, batch: int = 32) -> float:
    model.eval()
    total, count = 0.0, 0
    for b in split.batches(batch):
        logits = model(b["inputs"])
        keep = b["labels"] != -100
        total += float(cross_entropy(logits, b["labels"])) * int(keep.sum())
        count += int(keep.sum())
    return math.exp(total / count)


def teacher_model(
    out: Path, data: Any, steps: int, batch: int, minutes: float
) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher, trained once and saved as safetensors + JSON (reused when the file exists)."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=vocab_size(data), config=TEACHER)
    weights, record = out / "teacher.safetensors", out / "teacher.json"
    if weights.exists() and record.exists():
        teacher.load_state_dict(load_file(str(weights)))
        return teacher, json.loads(record.read_text())
    start = time.perf_counter()
    losses = train(teacher, data, steps, batch, lr=3e-3, minutes=minutes)
    info = {"params": params(teacher), "steps": len(losses), "batch": batch, "train_seconds": time.perf_counter() - start,
            "final_train_loss": statistics.mean(losses[-20:]), "val_ppl": perplexity(teacher, data.val)}  # fmt: skip
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(weights))
    record.write_text(json.dumps(info, indent=2))
    return teacher, info


def grad_of(loss_fn: Any, student_logits: torch.Tensor) -> tuple[float, torch.Tensor]:
    s = student_logits.detach().clone().requires_grad_(True)
    loss = loss_fn(s)
    (g,) = torch.autograd.grad(loss, s)
    return loss.item(), g.flatten()


def bias_table(
    teacher: nn.Module, student: nn.Module, split: Any, ks: list[int], draws: int
) -> list[dict[str, Any]]:
    """(a): loss and gradient error of each sparse form against the full logits, on held-out blocks."""
    with torch.no_grad():
        b = next(iter(split.batches(len(split))))
        z, s = teacher(b["inputs"]).float(), student(b["inputs"]).float()
    v = z.shape[-1]
    full_loss, full_g = grad_of(lambda x: kd_kl(x, z, 1.0), s)
    rows = []
    cos = torch.nn.functional.cosine_similarity

    def record(name: str, k: int, loss: float, g: torch.Tensor, **extra: Any) -> None:
        rows.append({"form": name, "k": k, "bytes_per_token": bytes_per_token(name.split()[0], v, k),
                     "loss_rel_err": (loss - full_loss) / full_loss, "grad_cos": float(cos(g, full_g, 0)),
                     "grad_rel_err": float((g - full_g).norm() / full_g.norm()), **extra})  # fmt: skip

    for k in ks:
        ids, logw, aux = sparse_rows(z, "topk", k, 1.0)
        t = SparseTargets("topk", ids, logw.half().float(), aux, 1.0, v)
        for tail in ("renormalize", "bucket"):
            loss, g = grad_of(lambda x, tail=tail, t=t: sparse_kd(x, t, 1.0, tail=tail), s)
            record(f"topk ({tail})", k, loss, g)
        # The rows a sampled cache stores (distinct ids + counts), read back as the store reads them.
        fmt, positions = Sampled(k, 1.0, seed=k), torch.arange(z.shape[0] * z.shape[1])
        fmt.begin()
        losses, grads = [], []
        for _ in range(draws):
            arrays = {n: torch.from_numpy(a) for n, a in fmt.encode(z.reshape(-1, v)).items()}
            t = fmt.sparse(arrays, positions, 1.0, v)
            loss, g = grad_of(lambda x, t=t: sparse_kd(x.reshape(-1, v), t, 1.0), s)
            losses.append(loss)
            grads.append(g)
        single = [((lv - full_loss) / full_loss, float(cos(g, full_g, 0)), float((g - full_g).norm() / full_g.norm()))
                  for lv, g in zip(losses, grads, strict=True)]  # fmt: skip
        rows.append({"form": "sampled (1 draw)", "k": k, "bytes_per_token": bytes_per_token("sampled", v, k),
                     "loss_rel_err": statistics.mean(r[0] for r in single),
                     "loss_rel_err_sd": statistics.stdev(r[0] for r in single),
                     "loss_rel_err_se": statistics.stdev(r[0] for r in single) / math.sqrt(draws),
                     "grad_cos": statistics.mean(r[1] for r in single),
                     "grad_rel_err": statistics.mean(r[2] for r in single)})  # fmt: skip
        record(f"sampled (mean of {draws})", k, statistics.mean(losses), torch.stack(grads).mean(0))
    rows.insert(0, {"form": "full", "k": v, "bytes_per_token": 2 * v, "loss_rel_err": 0.0, "grad_cos": 1.0,
                    "grad_rel_err": 0.0, "full_loss": full_loss})  # fmt: skip
    return rows


def step_times(data: Any, caches: dict[str, Any], steps: int, batch: int) -> dict[str, float]:
    """(c): median seconds per step of each arm, interleaved so machine load hits all alike."""
    arms = ["student-only", *caches]
    models = {a: create_model("hf-causal-lm", num_classes=vocab_size(data), config=STUDENT) for a in arms}
    opts = {a: torch.optim.AdamW(m.parameters(), lr=1e-3) for a, m in models.items()}
    term = KDTerm(TermContext())
    times: dict[str, list[float]] = {a: [] for a in arms}
    g = torch.Generator().manual_seed(0)
    n = len(data.train)
    for step in range(steps + 3):
        index = torch.randint(0, n, (batch,), generator=g)
        for arm in arms if step % 2 else reversed(arms):
            start = time.perf_counter()
            b = next(iter(data.train.take(index).batches(batch)))  # reading the tokens: in every arm
            logits = models[arm](b["inputs"])
            if arm == "student-only":
                loss = cross_entropy(logits, b["labels"])
            else:
                target = caches[arm]({"index": index, "labels": b["labels"]})
                loss = term(TermInputs(logits, target, b["labels"], temperature=1.0))
            opts[arm].zero_grad(set_to_none=True)
            loss.backward()
            opts[arm].step()
            if step >= 3:  # warm-up steps are not timed
                times[arm].append(time.perf_counter() - start)
    return {a: statistics.median(t) for a, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/work/bench/seqcache"))
    ap.add_argument("--teacher-steps", type=int, default=2000)
    ap.add_argument(
        "--teacher-minutes", type=float, default=12.0, help="wall-time cap of the teacher's training"
    )
    ap.add_argument("--student-steps", type=int, default=300)
    ap.add_argument("--blocks", type=int, default=6000, help="train blocks of 128 bytes for the teacher")
    ap.add_argument("--student-blocks", type=int, default=1024, help="train blocks cached for the students")
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--train-ks", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--timing-steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.teacher_steps, args.student_steps, args.blocks, args.student_blocks = 4, 10, 300, 64
        args.ks, args.train_ks, args.draws, args.timing_steps = [8], [8], 3, 3
        args.out = args.out / "smoke"
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_text(
        DOCS, name="python-docs", block_size=128, limit=args.blocks, cache_dir=args.out / "tokens"
    )
    teacher, tinfo = teacher_model(args.out, data, args.teacher_steps, 32, args.teacher_minutes)
    teacher.eval()
    sub = dataclasses.replace(
        data, train=data.train.take(torch.arange(min(args.student_blocks, len(data.train))))
    )
    heldout = data.val.take(torch.arange(min(64, len(data.val))))
    results: dict[str, Any] = {"teacher": tinfo, "args": {k: str(v) for k, v in vars(args).items()}}
    print(f"teacher: {tinfo}", flush=True)

    caches: dict[str, Any] = {}
    build: dict[str, float] = {}
    for form, k in [("full", 0)] + [(f, k) for k in args.train_ks for f in ("topk", "sampled")]:
        name = form if form == "full" else f"{form} k={k}"
        cached, info = open_or_build_sequence(
            teacher, sub, form=form, k=max(k, 1), cache_dir=args.out / "caches"
        )
        caches[name], build[name] = cached, info.bytes_per_token or 0.0
        print(
            f"cache {name}: {info.bytes_per_token} B/token, hit={info.hit}, {info.seconds:.1f} s, "
            f"build {info.build}",
            flush=True,
        )

    out_json = args.out / ("results-smoke.json" if args.smoke else "results.json")
    results["bytes_per_token"] = build
    results["teacher_ppl"], results["teacher_params"] = perplexity(teacher, data.val), params(teacher)

    def student_arm(arm: str) -> nn.Module:
        torch.manual_seed(1)  # the same initial student for every arm
        student = create_model("hf-causal-lm", num_classes=vocab_size(data), config=STUDENT)
        start = time.perf_counter()
        train(student, sub, args.student_steps, 16, 3e-3, caches.get(arm), seed=1)
        results.setdefault("ppl", {})[arm] = perplexity(student, data.val)
        results["student_params"] = params(student)
        print(
            f"student {arm}: val ppl {results['ppl'][arm]:.3f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        out_json.write_text(json.dumps(results, indent=2))
        return student

    # Cheap and most important first, so a run cut short still has them: the bias table (with the
    # CE-trained student as the one whose gradient is taken), the step times, then the KD students.
    ce_student = student_arm("student-only (CE)")
    results["bias"] = bias = bias_table(teacher, ce_student, heldout, args.ks, args.draws)
    out_json.write_text(json.dumps(results, indent=2))
    print(f"\nteacher {results['teacher_params']} params, val ppl {results['teacher_ppl']:.3f}; "
          f"student {results['student_params']} params; V={vocab_size(data)}; {len(heldout)} held-out blocks "
          f"of 128\n")  # fmt: skip
    print("| form | k | bytes/token | KD loss rel. error | grad cosine | grad rel. error |")
    print("|---|---|---|---|---|---|")
    for r in bias:
        sd = (
            f" (sd {r['loss_rel_err_sd']:.4f}, se {r['loss_rel_err_se']:.4f})"
            if "loss_rel_err_sd" in r
            else ""
        )
        print(f"| {r['form']} | {r['k']} | {r['bytes_per_token']} | {r['loss_rel_err']:+.4f}{sd} | "
              f"{r['grad_cos']:.4f} | {r['grad_rel_err']:.4f} |", flush=True)  # fmt: skip

    timing_caches = {n: c for n, c in caches.items() if n == "full" or n.endswith(f"k={args.train_ks[0]}")}
    results["step_seconds"] = times = step_times(sub, timing_caches, args.timing_steps, 16)
    out_json.write_text(json.dumps(results, indent=2))
    base = times["student-only"]
    print("\n| step (batch 16 x 128) | median s | vs student-only |\n|---|---|---|")
    for arm, t in times.items():
        print(f"| {arm} | {t:.4f} | {t / base:.2f}x |", flush=True)

    for arm in caches:
        student_arm(arm)
    print(f"\n| arm ({args.student_steps} steps, batch 16) | bytes/token | held-out ppl |\n|---|---|---|")
    for arm, p in results["ppl"].items():
        print(f"| {arm} | {build.get(arm, 0):.0f} | {p:.3f} |")


if __name__ == "__main__":
    main()
