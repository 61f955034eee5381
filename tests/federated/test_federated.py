"""The federated simulation: Dirichlet split, weighted averaging, FedAvg/FedDF rounds, `distil federate`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from distil.api import train_model
from distil.cli.app import app
from distil.config import TrainConfig
from distil.data import DataBundle, Split, load_dataset
from distil.errors import ConfigError, DataError
from distil.federated import (
    FederatedConfig,
    average_states,
    dirichlet_split,
    federate,
    federated_data,
    label_skew,
    local_seed,
)
from distil.federated.rounds import ensemble_accuracy
from distil.teachers import ensemble

runner = CliRunner()


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_dataset("digits", val_fraction=0.1, limit=600)


def mlp(seed: int = 0) -> nn.Module:
    """A model with an integer buffer (BatchNorm's num_batches_tracked) and dropout."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 10)
    )


# -- the Dirichlet split ------------------------------------------------------------------------------


def test_dirichlet_split_is_a_partition_of_every_sample() -> None:
    labels = torch.arange(1000) % 10
    shards = dirichlet_split(labels, clients=7, alpha=0.3, seed=1)
    assert len(shards) == 7
    everything = torch.cat(shards).sort().values
    assert torch.equal(everything, torch.arange(1000))  # disjoint and covering
    assert all(len(s) >= 1 for s in shards)
    assert [s.tolist() for s in shards] == [s.tolist() for s in dirichlet_split(labels, 7, 0.3, seed=1)]


def test_dirichlet_split_is_more_skewed_at_small_alpha() -> None:
    labels = torch.arange(2000) % 10
    skew = {a: label_skew(labels, dirichlet_split(labels, 10, a, seed=0), 10) for a in (0.05, 1.0, 100.0)}
    assert skew[0.05] > skew[1.0] > skew[100.0]
    assert skew[100.0] < 0.1 and skew[0.05] > 0.6


def test_every_client_gets_two_samples_even_when_the_draw_leaves_one_empty() -> None:
    labels = torch.zeros(24, dtype=torch.int64)  # one class, 12 clients, tiny alpha: most draws are empty
    shards = dirichlet_split(labels, clients=12, alpha=0.01, seed=3)
    assert sorted(len(s) for s in shards) == [2] * 12
    assert torch.equal(torch.cat(shards).sort().values, torch.arange(24))


def test_a_batchnorm_model_runs_where_the_draw_left_a_client_one_sample() -> None:
    # rev27: alpha 0.01 gave a client a single sample, and BatchNorm crashed round 1 with a raw torch error.
    data = load_dataset("digits", val_fraction=0.1, limit=400)
    cfg = FederatedConfig(clients=10, alpha=0.01, rounds=1, transfer_size=60, methods=("fedavg",), seed=1)
    assert min(len(s) for s in federated_data(data, cfg).shards) == 2
    result = federate(mlp(0), data, cfg, TrainConfig(epochs=1, batch_size=16, augment="none"))
    assert result.runs["fedavg"].final_test_accuracy is not None


@pytest.mark.parametrize(
    ("clients", "alpha", "message"),
    [
        (3, 0.0, "alpha > 0"),
        (3, -1.0, "alpha > 0"),
        (11, 1.0, "10 training samples"),
        (6, 1.0, "needs at least 2 .*at most 5 clients"),
    ],
)
def test_dirichlet_split_refuses_what_cannot_split(clients: int, alpha: float, message: str) -> None:
    with pytest.raises(DataError, match=message):
        dirichlet_split(torch.arange(10) % 2, clients, alpha)


# -- averaging ----------------------------------------------------------------------------------------


def test_average_of_two_models_is_the_hand_computed_weighted_mean() -> None:
    a, b = mlp(0), mlp(1)
    a[2].num_batches_tracked.fill_(3)
    b[2].num_batches_tracked.fill_(10)
    a[2].running_mean.fill_(1.0)
    b[2].running_mean.fill_(4.0)
    avg = average_states([a.state_dict(), b.state_dict()], [30, 10])  # shares 0.75, 0.25
    expected = 0.75 * a[1].weight + 0.25 * b[1].weight
    torch.testing.assert_close(avg["1.weight"], expected.detach(), rtol=0, atol=1e-7)
    torch.testing.assert_close(avg["2.running_mean"], torch.full((16,), 1.75))
    assert avg["2.num_batches_tracked"].dtype == torch.int64
    assert int(avg["2.num_batches_tracked"]) == 5  # 0.75 * 3 + 0.25 * 10 = 4.75, rounded


def test_average_refuses_other_architectures_and_bad_weights() -> None:
    with pytest.raises(ConfigError, match="shape"):
        average_states([nn.Linear(3, 2).state_dict(), nn.Linear(4, 2).state_dict()], [1, 1])
    with pytest.raises(ConfigError, match="non-negative weights"):
        average_states([nn.Linear(3, 2).state_dict()], [0])


# -- the rounds -----------------------------------------------------------------------------------------


def test_fedavg_with_one_client_equals_plain_training(digits: DataBundle) -> None:
    """One client, one round, nothing held out: the loop is train_model with the client's seed, exactly."""
    local = TrainConfig(lr=0.05, batch_size=32, augment="none", schedule="constant")
    cfg = FederatedConfig(clients=1, rounds=1, local_epochs=2, transfer_size=0, methods=("fedavg",), seed=5)
    result = federate(mlp(), digits, cfg, local)
    plain = train_model(
        mlp(), digits, local.model_copy(update={"epochs": 2, "seed": local_seed(5, 0, 0)})
    ).model
    fed = result.runs["fedavg"].model.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(fed[key], value), key


def test_clients_share_the_data_and_the_server_gets_unlabelled_samples(digits: DataBundle) -> None:
    cfg = FederatedConfig(clients=4, alpha=0.5, transfer_size=100)
    fed = federated_data(digits, cfg)
    assert len(fed.server.train) == 100 and bool((fed.server.train.labels == -100).all())
    assert sum(len(c.train) for c in fed.clients) == len(digits.train) - 100
    given = Split(torch.zeros(7, *digits.input_shape), torch.full((7,), -100))
    fed = federated_data(digits, cfg, transfer=given)
    assert fed.server.train is given and sum(len(c.train) for c in fed.clients) == len(digits.train)


def test_one_feddf_round_records_accuracy_and_equal_bytes(digits: DataBundle) -> None:
    cfg = FederatedConfig(clients=3, alpha=0.5, rounds=1, transfer_size=100, server_steps=3)
    seen: list[dict] = []
    result = federate(mlp(), digits, cfg, TrainConfig(epochs=1, batch_size=32), on_round_end=seen.append)
    assert [r["method"] for r in seen] == ["fedavg", "feddf"]
    avg, df = result.runs["fedavg"].history[0], result.runs["feddf"].history[0]
    assert avg["bytes_round"] == df["bytes_round"] == 2 * 3 * result.bytes_per_model
    assert 0 <= df["test_accuracy"] <= 1 and df["server_steps"] == 3 and "distilled_kept" in df
    assert 0 <= df["ensemble_val_accuracy"] <= 1
    assert avg["clients"] == df["clients"] == [0, 1, 2]


def test_the_ensemble_accuracy_is_the_mean_logits_or_mean_probabilities_argmax() -> None:
    # Two "clients" that each favour one class; the more confident one decides both samples.
    a, b = nn.Linear(1, 2), nn.Linear(1, 2)
    with torch.no_grad():
        a.weight.zero_(), b.weight.zero_()
        a.bias.copy_(torch.tensor([4.0, 0.0])), b.bias.copy_(torch.tensor([0.0, 3.0]))
    split = Split(torch.zeros(2, 1), torch.tensor([0, 1]))
    assert ensemble_accuracy([a, b], split, "logits", 1.0) == 0.5  # mean logits (2, 1.5): class 0 for both
    assert ensemble_accuracy([a, b], split, "probs", 1.0) == 0.5  # mean probabilities (0.51, 0.49)
    assert ensemble_accuracy([b], split, "probs", 1.0) == 0.5
    assert ensemble_accuracy([a], split, "logits", 1.0) == 0.5
    assert (
        ensemble_accuracy([a, b], Split(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)), "logits", 1.0)
        is None
    )


def test_feddf_distills_from_the_mean_of_the_client_logits_by_default(
    digits: DataBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rev27: the server step mixed the clients' probabilities; the paper averages their logits.
    assert FederatedConfig().ensemble == "logits"
    calls: list[int] = []
    original = ensemble.mean_logits

    def recording(logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
        calls.append(len(logits))
        return original(logits, weights)

    monkeypatch.setattr(ensemble, "mean_logits", recording)
    cfg = FederatedConfig(clients=2, rounds=1, transfer_size=60, server_steps=2, methods=("feddf",))
    federate(mlp(), digits, cfg, TrainConfig(epochs=1, batch_size=32))
    assert calls and set(calls) == {2}  # every server batch: the mean of both clients' logits
    calls.clear()
    federate(
        mlp(), digits, cfg.model_copy(update={"ensemble": "probs"}), TrainConfig(epochs=1, batch_size=32)
    )
    assert not calls


def test_refuses_what_the_simulation_cannot_run(digits: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="transfer_size=0"):
        federated_data(digits, FederatedConfig(transfer_size=0))
    with pytest.raises(ConfigError, match="validation split"):
        federated_data(
            replace(digits, val=digits.val.take(torch.arange(0))), FederatedConfig(transfer_size=10)
        )
    with pytest.raises(DataError, match="no single label"):
        federated_data(replace(digits, task="language-modeling"), FederatedConfig())
    with pytest.raises(DataError, match="leaves none"):
        federated_data(digits, FederatedConfig(transfer_size=len(digits.train)))
    hidden = Split(digits.train.x, torch.full_like(digits.train.y, -100))
    with pytest.raises(DataError, match="no label"):
        federated_data(replace(digits, train=hidden), FederatedConfig(transfer_size=10))
    # Under torchrun each process trains at least one client per round: more processes would idle.
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="launched on 4 processes, but each round trains only 3"):
        federated_data(digits, FederatedConfig(clients=5, clients_per_round=3, transfer_size=10))


# -- the command ----------------------------------------------------------------------------------------

FAST = ["--clients", "3", "--alpha", "0.5", "--rounds", "2", "--transfer-size", "100", "--server-steps", "3"]
SETS = [
    "--set",
    "data.limit=400",
    "--set",
    "student_train.batch_size=32",
    "--set",
    "student_train.augment=none",
]


def test_federate_command_writes_the_run_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["federate", "digits", *FAST, *SETS, "--out", str(tmp_path), "--name", "fed"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "fed"
    for name in ("metrics.jsonl", "federated.json", "rounds.png", "fedavg.safetensors", "feddf.json"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["method"], r["round"]) for r in records] == [
        ("fedavg", 1),
        ("fedavg", 2),
        ("feddf", 1),
        ("feddf", 2),
    ]
    summary = json.loads((run / "federated.json").read_text())
    assert summary["final"]["fedavg"]["bytes_total"] == summary["final"]["feddf"]["bytes_total"] > 0
    assert "feddf: final test accuracy" in result.output


def test_federate_command_uses_a_synthetic_set_as_the_transfer_set(tmp_path: Path) -> None:
    from distil.cli.common import recipe_from
    from distil.run.pipeline import load_data
    from distil.synth import SyntheticSet, write_synthetic

    data = load_data(recipe_from("digits", ["data.limit=400"]))
    inputs = torch.randn(40, *data.input_shape, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 10
    path = write_synthetic(
        tmp_path / "synth", SyntheticSet(inputs, labels, labels, "deepinversion", 0, 0.0, {}), data
    )
    args = ["federate", "digits", *FAST, *SETS, "--methods", "feddf", "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*args, "--transfer", str(path), "--name", "fed"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "fed" / "federated.json").read_text())
    assert summary["transfer"] == "given split of 40 samples" and summary["transfer_file"] == str(path)
    assert sum(summary["shard_sizes"]) == len(data.train)  # none held out: all go to the clients
    # A set made for other data (another normalization) is refused before anything is written.
    other = write_synthetic(
        tmp_path / "other",
        SyntheticSet(inputs, labels, labels, "deepinversion", 0, 0.0, {}),
        replace(data, mean=(0.5,), std=(2.0,)),
    )
    result = runner.invoke(app, [*args, "--transfer", str(other), "--name", "bad"])
    assert result.exit_code != 0 and "standardized with mean (0.5,)" in result.output
    assert not (tmp_path / "runs" / "bad").exists()


def test_federate_runs_a_users_own_factory_from_safetensors(tmp_path: Path) -> None:
    """A `pkg.module:factory` model with its initial weights in a plain safetensors state_dict."""
    from tests.models.user_factory import make_conv

    weights = tmp_path / "init.safetensors"
    save_file(make_conv(num_classes=10, in_channels=1, image_size=8).state_dict(), str(weights))
    own = [
        "--set",
        "student.model=tests.models.user_factory:make_conv",
        "--set",
        f"student.checkpoint={weights}",
    ]
    result = runner.invoke(
        app, ["federate", "digits", *FAST, *SETS, *own, "--out", str(tmp_path / "o"), "--name", "f"]
    )
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "o" / "f" / "feddf.json").read_text())
    assert "user_factory:make_conv" in json.dumps(sidecar)


def test_federate_command_explains_bad_options(tmp_path: Path) -> None:
    result = runner.invoke(app, ["federate", "digits", "--alpha", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--alpha" in result.output
    result = runner.invoke(app, ["federate", "digits", "--transfer-size", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "transfer_size=0" in result.output
    result = runner.invoke(app, ["federate", "digits", "--ensemble", "median", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--ensemble" in result.output
    assert not any(tmp_path.iterdir())  # nothing half-written
