"""benchmarks/kd_vs_torchdistill.py: its environment, its torchdistill config, its floor loop and its table,
without torchdistill (which only its own virtual environment has)."""

import argparse
import math
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from distil.config import KDConfig
from distil.models import create_model
from tests.benchmarks.scripts import load_benchmark


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_benchmark("kd_vs_torchdistill", monkeypatch)


def test_setup_installs_both_tools_and_distil_on_one_torch(bench: ModuleType, tmp_path: Path) -> None:
    """The venv gets the pinned torch/torchvision/torchdistill, distil's runtime deps but not a second
    torch requirement, and distil itself editable without resolving its dependencies again."""
    venv = tmp_path / "venv"
    create, install, editable = bench.setup_commands(venv)
    assert create[-2:] == ["venv", str(venv)]
    assert install[0] == str(venv / "bin" / "python")
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(install)
    assert any(a.startswith("torchdistill==") for a in install)
    assert any(a.startswith("accelerate") for a in install) and any(a.startswith("pydantic") for a in install)
    assert not any("extra ==" in a or a.startswith("torchvision>") for a in install)  # no optional extras
    assert [a for a in install if a.startswith("torch") and bench._requirement_name(a) == "torch"] == [
        "torch==2.14.1"
    ]
    assert editable[-3:] == ["--no-deps", "-e", str(bench.REPO)]


def test_requirement_name(bench: ModuleType) -> None:
    assert bench._requirement_name("torch>=2.3") == "torch"
    assert bench._requirement_name("PyYAML>=6") == "pyyaml"
    assert bench._requirement_name("scikit-learn") == "scikit-learn"


def test_torchdistill_config_is_the_recipe(bench: ModuleType) -> None:
    """torchdistill's KDLoss weighs CE by alpha and the T^2 KL by beta: they must be the recipe's ce_weight
    and kd_weight (not its sample configs' alpha 0.9), with the recipe's clip, batch and step count."""
    cfg = bench.torchdistill_train_config(
        batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4, grad_clip=5.0,
        temperature=4.0, kd_weight=0.9, ce_weight=0.1, steps=468, dataset_id="d/train",
    )  # fmt: skip
    loss = cfg["criterion"]["kwargs"]["sub_terms"]["kd"]["criterion"]
    assert loss["key"] == "KDLoss"
    assert loss["kwargs"]["alpha"] == 0.1 and loss["kwargs"]["beta"] == 0.9
    assert loss["kwargs"]["temperature"] == 4.0
    loader = cfg["train_data_loader"]
    assert loader["dataset_id"] == "d/train" and loader["requires_supp"] is True
    assert loader["kwargs"] == {"batch_size": 128, "num_workers": 0, "drop_last": True}
    assert cfg["optimizer"]["max_grad_norm"] == 5.0
    assert cfg["optimizer"]["kwargs"] == {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    assert cfg["scheduler"]["kwargs"]["T_max"] == 468 and cfg["scheduler"]["scheduling_step"] == 1
    assert cfg["teacher"]["requires_grad"] is False


def test_torchdistill_kd_formula_equals_distils(bench: ModuleType) -> None:
    """The value torchdistill's KDLoss computes with that config (its formula written out: KLDivLoss on
    probabilities) equals distil's Hinton loss on the same logits: both arms optimise the same thing."""
    from distil.losses.compose import build_loss

    torch.manual_seed(0)
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    temp, alpha, beta = 4.0, 0.1, 0.9
    kl = F.kl_div(torch.log_softmax(s / temp, 1), torch.softmax(t / temp, 1), reduction="batchmean")
    theirs = alpha * F.cross_entropy(s, y) + beta * temp**2 * kl
    model = create_model("smallnet", num_classes=10, in_channels=1, image_size=28)
    loss = build_loss(
        KDConfig(temperature=temp, kd_weight=beta, ce_weight=alpha),
        student=model, teacher=model, sample_x=torch.zeros(2, 1, 28, 28), num_classes=10,
    )  # fmt: skip
    ours = loss(s, t, {"inputs": torch.zeros(16, 1, 28, 28), "labels": y})["loss"]
    assert torch.allclose(ours, theirs, rtol=1e-5)


def test_round_order_rotates(bench: ModuleType) -> None:
    arms = ["a", "b", "c"]
    assert [bench.round_order(arms, r)[0] for r in range(4)] == ["a", "b", "c", "a"]
    assert sorted(bench.round_order(arms, 2)) == arms


def test_table_ratios_are_per_round_medians(bench: ModuleType) -> None:
    times = {
        "torchdistill": [(2.0, 1.0), (4.0, 2.0), (3.0, 1.0)],
        "distil": [(1.0, 0.5), (1.0, 0.4), (3.0, 0.3)],
    }
    rows = bench.table(times, "torchdistill", samples=1000)
    assert rows[0].startswith("| arm") and len(rows) == 4
    assert (
        "| torchdistill | 3.00 (2.00-4.00) | 1.00 (1.00-2.00) | 1,000 | 1.000x (1.000x-1.000x) |" in rows[2]
    )
    # CPU ratios per round 0.5, 0.2, 0.3 -> median 0.3; wall 0.5, 0.25, 1.0 -> median 0.5
    assert "| 0.300x (0.200x-0.500x) | 0.500x (0.250x-1.000x) |" in rows[3]


@pytest.mark.parametrize(("channels_last", "fused"), [(True, False), (False, False), (True, True)])
def test_floor_epoch_trains_on_cached_logits(bench: ModuleType, channels_last: bool, fused: bool) -> None:
    """The bare loop (and its layout/fused-SGD variants) trains the student on tiny data and returns an
    accuracy."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    logits = torch.nn.functional.one_hot(y, 10).float() * 5
    cfg = SimpleNamespace(
        optimizer=SimpleNamespace(weight_decay=5e-4, momentum=0.9),
        lr=0.05,
        batch_size=16,
        seed=0,
        grad_clip=5.0,
    )
    kd = KDConfig(temperature=4.0, kd_weight=0.9, ce_weight=0.1)
    student = create_model("smallnet", num_classes=10, in_channels=1, image_size=28)
    before = [p.detach().clone() for p in student.parameters()]
    acc = bench.floor_epoch(
        student, (x, y), logits, (x, y), cfg, kd, channels_last=channels_last, fused=fused
    )
    assert 0.0 <= acc <= 1.0 and math.isfinite(acc)
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters(), strict=True))


def test_missing_torchdistill_says_how_to_set_it_up(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchdistill", None)  # import fails, as outside its venv
    args = argparse.Namespace(arms="torchdistill,distil cached", venv=Path("/tmp/some-venv"))
    with pytest.raises(SystemExit, match=r"/tmp/some-venv/bin/python.*--setup"):
        bench.run(args)


def test_unknown_arm_is_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match=r"unknown arms.*'distil cachd'.*floor compiled"):
        bench.run(argparse.Namespace(arms="distil cachd", venv=Path("/x")))
