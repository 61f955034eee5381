"""`distil federate`: a recipe's data and student model through `federate`, saved as a run directory.

The run directory holds `metrics.jsonl` (one record per method and round), `federated.json` (the
settings, the split and every method's final accuracy and bytes), `rounds.png` (accuracy per round)
and one distil checkpoint per method (`fedavg.safetensors` + `.json`, ...). It appears whole or not at
all: it is built in a temporary directory and renamed when the simulation ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil.config import Recipe
from distil.errors import ConfigError
from distil.federated.config import FederatedConfig
from distil.federated.plot import plot_rounds
from distil.federated.rounds import FederatedResult, RoundCallback, federate
from distil.fileio import append_jsonl, atomic_dir, atomic_write_json
from distil.train.build import build_model
from distil.train.checkpoint import save_checkpoint
from distil.train.engine import make_accelerator

SUMMARY = "federated.json"


@dataclass(frozen=True)
class FederatedRunDir:
    """Where a federated run was saved and what it produced."""

    run_dir: Path
    result: FederatedResult


def federate_recipe(
    recipe: Recipe,
    cfg: FederatedConfig,
    out: str | Path = "runs",
    *,
    run_name: str | None = None,
    on_round_end: RoundCallback | None = None,
) -> FederatedRunDir:
    """Simulate federated training of the recipe's student on the recipe's data, and save the run.

    The global model is `recipe.student` (a registered net or the user's `pkg.module:factory`, with
    `checkpoint` as its initial weights: a distil checkpoint or a safetensors state_dict); each client
    trains with `recipe.student_train` (its `epochs` replaced by `cfg.local_epochs`) on `recipe.device`.

    Args:
        recipe: data, student model, local training recipe, device.
        cfg: the federated settings.
        out: the directory that receives the run directory.
        run_name: the run directory's name (default `federated-{recipe.name}`).
        on_round_end: also called with each round's record.

    Returns:
        The run directory and the result.

    Raises:
        ConfigError: the run directory exists already; or what `federate` refuses.
    """
    from distil.run.pipeline import load_data  # the run package imports the API: load it when called

    run_dir = Path(out) / (run_name or f"federated-{recipe.name}")
    if run_dir.exists():
        raise ConfigError(f"run directory {str(run_dir)!r} exists already; pass another --name or remove it.")
    data = load_data(recipe)
    model, spec = build_model(recipe.student, data, seed=cfg.seed, trust_code=recipe.trust_code)
    accelerator = make_accelerator(recipe.device, recipe.mixed_precision)
    with atomic_dir(run_dir, lambda d: (d / SUMMARY).is_file()) as tmp:

        def record(r: dict[str, Any]) -> None:
            append_jsonl(tmp / "metrics.jsonl", r)
            if on_round_end is not None:
                on_round_end(r)

        result = federate(
            model, data, cfg, recipe.student_train, accelerator=accelerator, on_round_end=record
        )
        for method, run in result.runs.items():
            meta = {"data": data.describe(), "federated": cfg.model_dump(), "history": run.history}
            save_checkpoint(tmp / method, run.model, spec, meta)
        curves = {m: [[h["test_accuracy"] for h in run.history]] for m, run in result.runs.items()}
        plot_rounds(
            {f"{data.name}, {cfg.clients} clients, Dirichlet alpha {cfg.alpha:g}": curves}, tmp / "rounds.png"
        )
        atomic_write_json(tmp / SUMMARY, summary(recipe, cfg, result))
    return FederatedRunDir(run_dir=run_dir, result=result)


def summary(recipe: Recipe, cfg: FederatedConfig, result: FederatedResult) -> dict[str, Any]:
    """The run's settings, split and each method's final accuracies and bytes (federated.json)."""
    return {
        "recipe": recipe.name,
        "student": recipe.student.model,
        "federated": cfg.model_dump(),
        "shard_sizes": result.shard_sizes,
        "skew": result.skew,
        "transfer": result.transfer,
        "bytes_per_model": result.bytes_per_model,
        "final": {
            m: {k: run.history[-1][k] for k in ("test_accuracy", "val_accuracy", "bytes_total")}
            for m, run in result.runs.items()
        },
    }
