"""`distil federate`: a recipe's data and student model through `federate`, saved as a run directory.

The run directory holds `metrics.jsonl` (one record per method and round), `federated.json` (the
settings, the split and every method's final accuracy and bytes), `rounds.png` (accuracy per round)
and one distil checkpoint per method (`fedavg.safetensors` + `.json`, ...). It appears whole or not at
all: it is built in a temporary directory and renamed when the simulation ends. Under torchrun only rank 0
writes it; the other ranks train their share of the clients (`distil.federated.ranks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distil.config import Recipe
from distil.data import DataBundle, Split
from distil.data.batch import IGNORE_INDEX
from distil.errors import ConfigError, DataError
from distil.federated.config import FederatedConfig
from distil.federated.plot import plot_rounds
from distil.federated.ranks import client_accelerator
from distil.federated.rounds import FederatedResult, RoundCallback, federate
from distil.fileio import append_jsonl, atomic_dir, atomic_write_json
from distil.train.build import build_model
from distil.train.checkpoint import save_checkpoint
from distil.train.distributed import is_main_process

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
    transfer: str | Path | None = None,
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
        transfer: an .npz file whose inputs are the server's transfer set (e.g. `distil synthesize`'s
            transfer.npz), instead of `cfg.transfer_size` held-out training samples (`transfer_file`).

    Returns:
        The run directory and the result.

    Raises:
        ConfigError: the run directory exists already; or what `federate` refuses.
        DataError: a transfer file that is not in the recipe data's input space (`transfer_file`).
    """
    from distil.run.pipeline import load_data  # the run package imports the API: load it when called

    run_dir = Path(out) / (run_name or f"federated-{recipe.name}")
    if run_dir.exists():
        raise ConfigError(f"run directory {str(run_dir)!r} exists already; pass another --name or remove it.")
    data = load_data(recipe)
    server_inputs = transfer_file(transfer, data) if transfer is not None else None
    model, spec = build_model(recipe.student, data, seed=cfg.seed, trust_code=recipe.trust_code)
    accelerator = client_accelerator(recipe.device, recipe.mixed_precision)
    if not is_main_process():  # under torchrun: this rank trains its clients, rank 0 writes
        result = federate(
            model, data, cfg, recipe.student_train, transfer=server_inputs, accelerator=accelerator
        )
        return FederatedRunDir(run_dir=run_dir, result=result)
    with atomic_dir(run_dir, lambda d: (d / SUMMARY).is_file()) as tmp:

        def record(r: dict[str, Any]) -> None:
            append_jsonl(tmp / "metrics.jsonl", r)
            if on_round_end is not None:
                on_round_end(r)

        result = federate(
            model,
            data,
            cfg,
            recipe.student_train,
            transfer=server_inputs,
            accelerator=accelerator,
            on_round_end=record,
        )
        save_outputs(tmp, recipe, cfg, result, data, spec, transfer)
    return FederatedRunDir(run_dir=run_dir, result=result)


def save_outputs(
    tmp: Path,
    recipe: Recipe,
    cfg: FederatedConfig,
    result: FederatedResult,
    data: DataBundle,
    spec: Any,
    transfer: str | Path | None,
) -> None:
    """Write each method's checkpoint, the accuracy plot and federated.json into the run directory `tmp`."""
    for method, run in result.runs.items():
        meta = {"data": data.describe(), "federated": cfg.model_dump(), "history": run.history}
        save_checkpoint(tmp / method, run.model, spec, meta)
    curves = {m: [[h["test_accuracy"] for h in run.history]] for m, run in result.runs.items()}
    plot_rounds(
        {f"{data.name}, {cfg.clients} clients, Dirichlet alpha {cfg.alpha:g}": curves}, tmp / "rounds.png"
    )
    record_summary = summary(recipe, cfg, result)
    if transfer is not None:
        record_summary["transfer_file"] = str(transfer)
    atomic_write_json(tmp / SUMMARY, record_summary)


def transfer_file(path: str | Path, data: DataBundle) -> Split:
    """The inputs of an .npz file as an unlabelled transfer set in `data`'s input space.

    The file must record `data`'s normalization (arrays `mean`/`std`, as `distil synthesize` writes for
    a teacher trained on the same data): inputs standardized otherwise would mean other images to the
    global model.

    Args:
        path: the .npz file (`distil.data.npz`).
        data: the federated run's data.

    Returns:
        Its training inputs with every label IGNORE_INDEX (FedDF distills on unlabelled inputs).

    Raises:
        DataError: the file cannot be read, or its normalization is not `data`'s.
    """
    from distil.data import load_dataset

    bundle = load_dataset("npz", path, val_fraction=0.0)
    same = len(bundle.mean) == len(data.mean) and all(
        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        for a, b in zip((*bundle.mean, *bundle.std), (*data.mean, *data.std), strict=True)
    )
    if not same:
        raise DataError(
            f"transfer file {path}: its inputs are standardized with mean {bundle.mean}, std {bundle.std}, "
            f"but the run's data {data.name!r} uses mean {data.mean}, std {data.std}, so the global model "
            "would see other images. Fix: synthesize the set with a teacher trained on this recipe's data "
            "(distil synthesize records its normalization), or save the data's mean/std arrays in the npz."
        )
    x = bundle.train.x  # type: ignore[attr-defined]
    return Split(x, torch.full((len(x),), IGNORE_INDEX, dtype=torch.int64))


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
