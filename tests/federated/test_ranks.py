"""The federated simulation under torchrun: one share of the clients per rank, the one-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from distil.cli.app import app
from distil.errors import ConfigError
from distil.federated.ranks import SimulationRanks, check_one_process, client_accelerator

runner = CliRunner()

ARGS = [
    "federate",
    "digits",
    "--clients",
    "4",
    "--alpha",
    "0.5",
    "--rounds",
    "2",
    "--transfer-size",
    "100",
    "--server-steps",
    "3",
    "--set",
    "data.limit=400",
    "--set",
    "student_train.batch_size=32",
    "--set",
    "student_train.augment=none",
    "--name",
    "fed",
]


def test_each_rank_trains_every_world_th_client_of_the_round() -> None:
    chosen = [1, 4, 6, 7, 9]
    shares = [SimulationRanks(rank=r, world=2).share(chosen) for r in (0, 1)]
    assert shares == [[1, 6, 9], [4, 7]]
    assert SimulationRanks().share(chosen) == chosen and SimulationRanks().gather([3]) == [3]


def test_clients_train_in_one_process_under_a_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    accelerator = client_accelerator("cpu")
    assert accelerator.num_processes == 1
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"], os.environ["LOCAL_RANK"]) == ("2", "1", "1")
    with pytest.raises(ConfigError, match="spans 2 processes"):
        check_one_process(SimpleNamespace(num_processes=2))  # type: ignore[arg-type]


@pytest.mark.slow
def test_two_torchrun_ranks_give_the_one_process_result_bit_for_bit(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: CPU kernels may sum in another order with more threads
    try:
        one = runner.invoke(app, [*ARGS, "--out", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(threads)
    assert one.exit_code == 0, one.output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTIL_CACHE_DIR": str(tmp_path / "cache")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*launch, "-m", "distil.cli.app", *ARGS, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ranks = tmp_path / "one" / "fed", tmp_path / "two" / "fed"
    for method in ("fedavg", "feddf"):
        a, b = (load_file(d / f"{method}.safetensors") for d in (single, ranks))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), method
    records = [
        [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in (single, ranks)
    ]
    assert records[0] == records[1] and len(records[0]) == 4
    # The bytes are the protocol's (model down and up per client), not the ranks' gathers.
    assert (
        records[1][0]["bytes_round"]
        == 2 * 4 * json.loads((ranks / "federated.json").read_text())["bytes_per_model"]
    )
    # Only rank 0 writes and speaks.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["fed"]
    assert proc.stdout.count("fedavg round   1") == 1, proc.stdout
