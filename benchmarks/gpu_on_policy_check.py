"""Issue-23 GPU check: on-policy distillation's cost, generation and training measured apart.

A ~100M-parameter llama teacher and a ~4x smaller student built from configs (random init, nothing is
downloaded), bf16 autocast, one GPU, on generated arithmetic problems (``arithmetic`` dataset, 6-digit
operands, byte tokenizer: prompts of ~14 tokens, completions up to 8). For lmbda in 0, 0.5 and 1 the
student is distilled by ``distil.api.distill`` for the same number of steps (reverse KL on the student's
own completions where a batch is generated; the teacher live), and the epoch records give, side by side:

- ``tokens_per_s``: trained positions per second of the time not spent generating;
- ``generated_tokens_per_s``: tokens the student generated per second of generation (transformers'
  ``generate`` with the KV cache, sampling at temperature 1);
- the seconds per step and the peak GPU memory of each arm.

    python benchmarks/gpu_on_policy_check.py                 # on a GPU: batch 64, 60 steps per arm
    python benchmarks/gpu_on_policy_check.py --smoke         # tiny models on the CPU (checks the script)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from distil.api import distill
from distil.config import KDConfig, StudentTrainConfig
from distil.data import load_dataset
from distil.models import create_model
from distil.train.engine import make_accelerator

TEACHER = {
    "model_type": "llama",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 11,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "max_position_embeddings": 64,
}
STUDENT = {**TEACHER, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
           "num_key_value_heads": 8}  # fmt: skip
SMOKE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 2}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="tiny models, 4 steps, on the CPU")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    steps = 4 if args.smoke else args.steps
    options = {"digits": 6, "operations": "+-*", "train_size": 20_000, "test_size": 64, "tokenizer": "byte"}
    data = load_dataset("arithmetic", options=options, val_fraction=0.01)
    configs = (
        {**TEACHER, **SMOKE} if args.smoke else TEACHER,
        {**STUDENT, **SMOKE} if args.smoke else STUDENT,
    )
    torch.manual_seed(0)
    teacher = create_model("hf-causal-lm", num_classes=data.num_classes, config=configs[0])
    sizes = {"teacher": sum(p.numel() for p in teacher.parameters())}
    accelerator = make_accelerator("cuda" if cuda else "cpu", "bf16" if cuda else "no")
    rows = []
    for lmbda in (0.0, 0.5, 1.0):
        torch.manual_seed(1)
        student = create_model("hf-causal-lm", num_classes=data.num_classes, config=configs[1])
        sizes["student"] = sum(p.numel() for p in student.parameters())
        cfg = StudentTrainConfig(
            max_steps=steps,
            batch_size=args.batch,
            lr=3e-4,
            optimizer="adamw",
            teacher_cache={"mode": "off"},
            generation={"lmbda": lmbda, "temperature": 1.0},
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        history = distill(teacher, student, data, cfg, KDConfig(temperature=1.0, terms={"rkl": 1.0}),
                          accelerator=accelerator).history  # fmt: skip
        seconds = time.perf_counter() - started
        last = history[-1]
        rows.append(
            {
                "lmbda": lmbda,
                "s_per_step": round(seconds / steps, 3),
                "train_tokens_per_s": last.get("tokens_per_s"),
                "generated_tokens_per_s": last.get("generated_tokens_per_s"),
                "generation_seconds": last.get("generation_seconds"),
                "on_policy_batches": last.get("on_policy_batches"),
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(json.dumps({"device": device, "params": sizes, "steps": steps, "batch": args.batch}))


if __name__ == "__main__":
    main()
