"""`distil federate`: FedAvg and FedDF over non-IID clients, side by side (`distil.federated`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from distil.cli.common import check_out, recipe_from, run_console, user_errors
from distil.cli.options import OutOption, SetOption, TrustCodeOption
from distil.federated.config import METHODS, FederatedConfig


def _help(name: str) -> str:
    """The setting's own documentation (`FederatedConfig`), so --help and the API say the same."""
    return str(FederatedConfig.model_fields[name].description)


@user_errors
def federate(
    recipe: Annotated[
        str | None, typer.Argument(help="Recipe file or bundled name: data, student, student_train.")
    ] = None,
    clients: Annotated[int, typer.Option(help=_help("clients"))] = 10,
    alpha: Annotated[float, typer.Option(help=_help("alpha"))] = 1.0,
    rounds: Annotated[int, typer.Option(help=_help("rounds"))] = 20,
    clients_per_round: Annotated[int | None, typer.Option(help=_help("clients_per_round"))] = None,
    local_epochs: Annotated[int, typer.Option(help=_help("local_epochs"))] = 1,
    transfer_size: Annotated[int, typer.Option(help=_help("transfer_size"))] = 5000,
    server_steps: Annotated[int, typer.Option(help=_help("server_steps"))] = 100,
    temperature: Annotated[float, typer.Option(help=_help("temperature"))] = 1.0,
    ensemble: Annotated[str, typer.Option(help=_help("ensemble"))] = "logits",
    keep_best: Annotated[bool, typer.Option("--keep-best/--no-keep-best", help=_help("keep_best"))] = True,
    methods: Annotated[
        str, typer.Option(help="Comma-separated fusions to compare: " + ", ".join(METHODS))
    ] = ",".join(METHODS),
    seed: Annotated[int, typer.Option(help=_help("seed"))] = 0,
    transfer: Annotated[
        str | None,
        typer.Option(
            help="An .npz file (e.g. distil synthesize's transfer.npz) whose inputs are the server's transfer "
            "set instead of --transfer-size held-out training images; it must record the data's mean/std."
        ),
    ] = None,
    overrides: SetOption = None,
    out: OutOption = "runs",
    name: Annotated[str | None, typer.Option(help="Run directory name (default federated-RECIPE).")] = None,
    trust_code: TrustCodeOption = False,
) -> None:
    """Split the training data among non-IID clients and compare FedAvg with FedDF round by round.

    The student of the recipe is the global model; clients train with student_train (epochs replaced by
    --local-epochs); FedDF distills the clients' ensemble on --transfer-size held-out training images with
    their labels dropped.

    Example: distil federate digits --clients 5 --alpha 0.1 --rounds 5 --transfer-size 300

    Under torchrun (torchrun --nproc_per_node N -m distil.cli.app federate ...) each process trains every
    N-th client of a round and rank 0 fuses and writes: the same result as one process.
    """
    from distil.federated.run import federate_recipe

    check_out(out)
    cfg = _config(
        clients=clients,
        alpha=alpha,
        rounds=rounds,
        clients_per_round=clients_per_round,
        local_epochs=local_epochs,
        transfer_size=transfer_size,
        server_steps=server_steps,
        temperature=temperature,
        ensemble=ensemble,
        keep_best=keep_best,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        seed=seed,
    )
    console = run_console("plain")

    def show(r: dict[str, Any]) -> None:
        console.print(
            f"{r['method']:>6} round {r['round']:>3}: test {r['test_accuracy']:.2%}"
            + (f" val {r['val_accuracy']:.2%}" if r["val_accuracy"] is not None else "")
            + f", {r['bytes_total'] / 1e6:.2f} MB sent",
            highlight=False,
        )

    done = federate_recipe(
        recipe_from(recipe, overrides, trust_code=trust_code),
        cfg,
        out,
        run_name=name,
        on_round_end=show,
        transfer=transfer,
    )
    for method, run in done.result.runs.items():
        console.print(f"{method}: final test accuracy {run.final_test_accuracy:.2%}", highlight=False)
    console.print(f"saved: {done.run_dir}", highlight=False)


def _config(**fields: Any) -> FederatedConfig:
    """The options as a FederatedConfig; invalid values become a usage error naming the option."""
    from pydantic import ValidationError

    try:
        return FederatedConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(e['loc'][0]).split('_'))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems) from None
