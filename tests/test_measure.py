"""Tests for distil.measure: each number checked against an independent hand computation."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from distil.data.batch import IGNORE_INDEX
from distil.errors import CheckpointError, ConfigError, DataError
from distil.measure import (
    LATENCY_ROUNDS,
    MAX_LATENCY_SPREAD,
    LatencyResult,
    ModelMetrics,
    accuracy,
    agreement,
    compare,
    count_macs,
    count_parameters,
    latency_conflicts,
    measure_latencies,
    measure_latency,
    measure_model,
    measure_onnx_latency,
    per_class_accuracy,
    predict,
    state_dict_bytes,
    time_models,
    weights_bytes,
)

FAST = 0.01  # seconds per latency measurement: enough to exercise the code, not to benchmark


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


# ------------------------------------------------------------------ size


def test_count_parameters_counts_shared_parameter_once() -> None:
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied weights
    model = nn.Sequential(a, b)
    # a: 16 weights + 4 bias, b: shared weight (not counted again) + 4 bias
    assert count_parameters(model) == 16 + 4 + 4


def test_count_parameters_trainable_only() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4 * 3 + 3 + 3 * 2 + 2
    assert count_parameters(model, trainable_only=True) == 3 * 2 + 2


def test_state_dict_bytes_is_params_times_four_plus_header() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    params = count_parameters(model)
    size = state_dict_bytes(model)
    assert params * 4 < size <= params * 4 + 2048


def test_state_dict_bytes_stores_tied_weights_once() -> None:
    a, b = nn.Linear(16, 16, bias=False), nn.Linear(16, 16, bias=False)
    untied = state_dict_bytes(nn.Sequential(a, b))
    b.weight = a.weight
    tied = state_dict_bytes(nn.Sequential(a, b))
    assert untied - tied >= 16 * 16 * 4  # one weight matrix fewer


def test_weights_bytes_matches_file_and_state_dict_bytes(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 5))
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert weights_bytes(path) == path.stat().st_size
    assert weights_bytes(str(path)) == state_dict_bytes(model)


def test_weights_bytes_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        weights_bytes(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------ compute


def test_count_macs_linear() -> None:
    in_features, out_features = 10, 5
    model = nn.Linear(in_features, out_features)
    assert count_macs(model, (in_features,)) == in_features * out_features  # 50


def test_count_macs_conv_no_padding() -> None:
    in_ch, out_ch, k, size = 1, 2, 3, 5
    model = nn.Conv2d(in_ch, out_ch, k)
    out_hw = size - k + 1  # 3x3 output without padding
    expected = out_ch * out_hw * out_hw * in_ch * k * k  # 2 * 9 * 9 = 162
    assert count_macs(model, (in_ch, size, size)) == expected == 162


def test_count_macs_restores_training_mode() -> None:
    model = _mlp().train()
    model[2].eval()  # a submodule deliberately frozen: must stay so
    count_macs(model, (12,))
    assert model.training
    assert not model[2].training
    assert model[1].training


# ------------------------------------------------------------------ speed


def test_measure_latency_fields_and_restores_state() -> None:
    model = _mlp().train()
    threads_before = torch.get_num_threads()
    result = measure_latency(model, (12,), batch_size=4, threads=1, min_run_time=FAST)
    assert isinstance(result, LatencyResult)
    assert result.batch_size == 4
    assert result.median_ms > 0
    assert result.iqr_ms >= 0
    assert result.throughput == pytest.approx(4 / (result.median_ms / 1e3))
    assert result.threads == 1
    assert model.training
    assert torch.get_num_threads() == threads_before


class _Machine:
    """A fake clock that models advance: each call costs its model's base time, times a load factor
    that is `busy` during calls number `burst` (counted over all models: load from another process)."""

    def __init__(self, burst: range = range(0), busy: float = 1.0) -> None:
        self.now = 0.0
        self.calls: list[str] = []
        self.burst, self.busy = burst, busy

    def __call__(self) -> float:
        return self.now


class _Timed(nn.Module):
    """A fake model whose call `i` lasts `base * factors[i % len(factors)]` seconds on `machine`."""

    def __init__(
        self, name: str, machine: _Machine, base: float, factors: tuple[float, ...] = (1.0,)
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # a device and dtype for the dummy inputs
        self.name, self.machine, self.base, self.factors = name, machine, base, itertools.cycle(factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        load = self.machine.busy if len(self.machine.calls) in self.machine.burst else 1.0
        self.machine.calls.append(self.name)
        self.machine.now += self.base * next(self.factors) * load
        return x


def _row(name: str, params: int = 10) -> ModelMetrics:
    return ModelMetrics(name, 0.5, None, params=params, bytes=4 * params, macs=params)


def test_measure_latencies_times_models_in_interleaved_rounds() -> None:
    machine = _Machine()
    fast, slow = _Timed("a", machine, 1e-3), _Timed("b", machine, 3e-3)
    results = measure_latencies([fast, slow], (1,), min_run_time=0.1, clock=machine)
    # After warming up, each round times a then b: the models alternate at least once per round.
    switches = sum(x != y for x, y in itertools.pairwise(machine.calls))
    assert switches >= 2 * LATENCY_ROUNDS - 1
    assert [r.median_ms for r in results] == [pytest.approx(1.0), pytest.approx(3.0)]
    assert all(len(r.samples_ms) >= LATENCY_ROUNDS and r.spread == pytest.approx(0.0) for r in results)
    assert results[1].throughput == pytest.approx(1 / 3e-3)
    # One model is the same routine with a list of one.
    single = measure_latencies([fast], (1,), min_run_time=0.1, clock=machine)[0]
    assert single.median_ms == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="at least one model"):
        measure_latencies([], (1,))


def test_each_model_can_be_timed_on_its_own_inputs_in_the_one_measurement() -> None:
    """A teacher with its own tokenizer reads blocks of its own ids: `per_model` gives each model its
    shape and id range, still interleaved with the others."""
    machine = _Machine()
    seen: dict[str, tuple[tuple[int, ...], int]] = {}

    class _Ids(_Timed):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen[self.name] = (tuple(x.shape), int(x.max()))
            return super().forward(x)

    student, teacher = _Ids("s", machine, 1e-3), _Ids("t", machine, 2e-3)
    per_model = [((16,), 259), ((6,), 4)]
    results = measure_latencies(
        [student, teacher], (16,), min_run_time=0.1, clock=machine, per_model=per_model
    )
    assert seen["s"][0] == (1, 16) and seen["t"][0] == (1, 6) and seen["t"][1] < 4
    assert [r.median_ms for r in results] == [pytest.approx(1.0), pytest.approx(2.0)]
    with pytest.raises(ConfigError, match="give one each"):
        measure_latencies([student, teacher], (16,), per_model=per_model[:1])


def test_a_burst_of_load_shows_as_spread_in_both_twins_not_as_one_median() -> None:
    # Timed one after another, a burst of load during the first model's turn lands on it alone: two
    # identical nets then "measure" 1 ms and 20 ms (the digits demo's 71.95 vs 0.606 ms).
    machine = _Machine(burst=range(0, 14), busy=20.0)
    a, b = _Timed("a", machine, 1e-3), _Timed("b", machine, 1e-3)
    sequential = [measure_latencies([m], (1,), min_run_time=0.1, clock=machine)[0].median_ms for m in (a, b)]
    assert sequential[0] > 10 * sequential[1]

    # Interleaved, the burst falls on rounds of both: equal medians, a large spread, both flagged noisy.
    machine = _Machine(burst=range(30, 90), busy=20.0)
    a, b = _Timed("a", machine, 1e-3), _Timed("b", machine, 1e-3)
    rows = [_row("a"), _row("b")]
    time_models(rows, [a, b], (1,), throughput=False, min_run_time=0.1, clock=machine)
    assert rows[0].latency_b1_ms == pytest.approx(rows[1].latency_b1_ms)
    assert all(r.latency_b1_spread is not None and r.latency_b1_spread > MAX_LATENCY_SPREAD for r in rows)
    assert not rows[0].latency_reliable and not rows[1].latency_reliable
    assert latency_conflicts(rows) == []  # equal medians: noisy, but not contradicting each other


def test_a_noisy_model_is_flagged_and_a_steady_one_is_not() -> None:
    machine = _Machine()
    steady = _Timed("steady", machine, 1e-3)
    noisy = _Timed("noisy", machine, 1e-3, factors=(1.0,) * 20 + (3.0,) * 10)  # every third round slow
    rows = [_row("steady"), _row("noisy", params=20)]
    time_models(rows, [steady, noisy], (1,), throughput=False, min_run_time=0.1, clock=machine)
    assert rows[0].latency_reliable and rows[0].latency_b1_spread == pytest.approx(0.0)
    assert not rows[1].latency_reliable and rows[1].latency_b1_spread > MAX_LATENCY_SPREAD
    assert rows[1].to_dict()["latency_reliable"] is False


def test_identical_architectures_with_different_medians_are_both_flagged() -> None:
    machine = _Machine()
    models = [
        _Timed("scratch", machine, 1e-3),
        _Timed("kd", machine, 30e-3),
        _Timed("teacher", machine, 30e-3),
    ]
    rows = [_row("scratch"), _row("kd"), _row("teacher", params=1000)]
    time_models(rows, models, (1,), throughput=False, min_run_time=0.1, clock=machine)
    assert all(r.latency_b1_spread == pytest.approx(0.0) for r in rows)  # each steady on its own...
    assert [(a.name, b.name) for a, b in latency_conflicts(rows)] == [("scratch", "kd")]
    assert [r.latency_reliable for r in rows] == [False, False, True]  # ...but the twins contradict


def test_twins_agree_within_their_spread_or_the_tolerance() -> None:
    def timed(name: str, ms: float, spread: float) -> ModelMetrics:
        row = _row(name)
        row.latency_b1_ms, row.latency_b1_spread = ms, spread
        return row

    assert latency_conflicts([timed("a", 1.0, 0.0), timed("b", 1.45, 0.0)]) == []  # within 50%
    assert latency_conflicts([timed("a", 1.0, 1.0), timed("b", 1.6, 0.2)]) == []  # 1.5 >= 1.44: overlap
    assert len(latency_conflicts([timed("a", 1.0, 0.1), timed("b", 1.6, 0.1)])) == 1
    other = timed("c", 1.6, 0.0)
    other.macs = 99  # a different network may well be slower
    assert latency_conflicts([timed("a", 1.0, 0.0), other]) == []
    untimed = _row("d")  # rows without a spread (ONNX Runtime rows, old runs) are not compared
    untimed.latency_b1_ms = 9.0
    assert latency_conflicts([timed("a", 1.0, 0.0), untimed]) == []


def test_measure_latencies_on_real_models_restores_state() -> None:
    models = [_mlp().train(), nn.Sequential(nn.Flatten(), nn.Linear(12, 3))]
    threads_before = torch.get_num_threads()
    results = measure_latencies(models, (12,), batch_size=2, threads=1, min_run_time=FAST)
    assert all(r.median_ms > 0 and r.spread >= 0 and len(r.samples_ms) >= LATENCY_ROUNDS for r in results)
    assert models[0].training and torch.get_num_threads() == threads_before


def test_measure_latency_rejects_bad_batch_size() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        measure_latency(_mlp(), (12,), batch_size=0, min_run_time=FAST)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
# The TorchScript exporter is deprecated but needs no extra packages and exports a tiny MLP in ms.
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_measure_onnx_latency(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 6),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    result = measure_onnx_latency(path, (6,), batch_size=3, min_run_time=FAST, threads=1)
    assert result.batch_size == 3
    assert result.median_ms > 0
    assert result.iqr_ms >= 0
    assert result.throughput == pytest.approx(3 / (result.median_ms / 1e3))
    assert result.threads == 1


# ------------------------------------------------------------------ quality


def test_predict_matches_eval_forward_and_restores_mode() -> None:
    model = _mlp().train()
    x = torch.randn(10, 3, 4)
    logits = predict(model, x, batch_size=3)  # uneven batches: 3+3+3+1
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model(x)
    assert logits.shape == (10, 3)
    torch.testing.assert_close(logits, expected)


def test_predict_empty_input() -> None:
    model = _mlp()
    assert predict(model, torch.empty(0, 12)).shape == (0, 3)


def test_accuracy_from_logits_and_preds() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, y) == pytest.approx(0.75)
    assert accuracy(torch.tensor([0, 0, 0, 0]), y) == pytest.approx(0.25)


def test_accuracy_rejects_mismatch_and_empty() -> None:
    with pytest.raises(DataError, match="samples"):
        accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="0 samples"):
        accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_agreement() -> None:
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    teacher = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 9.0], [0.0, 0.0, 9.0], [0.0, 9.0, 0.0]])
    assert agreement(student, teacher) == pytest.approx(0.5)
    assert agreement(teacher, teacher) == 1.0


def test_per_class_accuracy() -> None:
    preds = torch.tensor([0, 0, 1, 1, 1, 0])
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    # class 0: samples 0,1,4 -> 2 correct of 3; class 1: samples 2,3,5 -> 2 of 3; class 2: none
    result = per_class_accuracy(preds, y, num_classes=3)
    assert result[0] == pytest.approx(2 / 3)
    assert result[1] == pytest.approx(2 / 3)
    assert math.isnan(result[2])
    with pytest.raises(DataError, match="num_classes"):
        per_class_accuracy(preds, y, num_classes=1)


# ------------------------------------------------------------------ composition


def test_measure_model() -> None:
    model = _mlp().train()
    x = torch.randn(20, 12)
    y = torch.randint(0, 3, (20,))
    model.eval()
    with torch.no_grad():
        teacher_logits = model(x)
    model.train()
    metrics = measure_model(
        "student", model, x, y, input_shape=(12,), teacher_logits=teacher_logits, min_run_time=FAST
    )
    assert metrics.name == "student"
    assert metrics.agreement == 1.0  # same model as its own teacher
    assert metrics.accuracy == pytest.approx(accuracy(teacher_logits, y))
    assert metrics.params == count_parameters(model)
    assert metrics.bytes == state_dict_bytes(model)
    assert metrics.macs == 12 * 8 + 8 * 3
    assert metrics.latency_b1_ms is not None and metrics.latency_b1_ms > 0
    assert metrics.throughput_b256 is not None and metrics.throughput_b256 > 0
    assert model.training
    assert set(metrics.to_dict()) == {
        "name",
        "accuracy",
        "agreement",
        "params",
        "bytes",
        "macs",
        "latency_b1_ms",
        "throughput_b256",
        "latency_b1_spread",
        "latency_reliable",
    }
    assert metrics.latency_b1_spread is not None and metrics.latency_b1_spread >= 0


def test_measure_model_without_latency_uses_weights_file(tmp_path: Path) -> None:
    model = _mlp()
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 123)
    metrics = measure_model(
        "t",
        model,
        torch.randn(5, 12),
        torch.zeros(5, dtype=torch.long),
        input_shape=(12,),
        weights_path=path,
        latency=False,
    )
    assert metrics.bytes == 123
    assert metrics.agreement is None
    assert metrics.latency_b1_ms is None and metrics.throughput_b256 is None


def test_compare_ratios() -> None:
    teacher = ModelMetrics(
        "t", 0.90, None, params=1000, bytes=4000, macs=10_000, latency_b1_ms=2.0, throughput_b256=100.0
    )
    student = ModelMetrics(
        "s", 0.85, 0.95, params=250, bytes=1000, macs=2_000, latency_b1_ms=0.5, throughput_b256=300.0
    )
    ratios = compare(teacher, student)
    assert ratios["compression"] == pytest.approx(4.0)
    assert ratios["bytes_ratio"] == pytest.approx(4.0)
    assert ratios["params_ratio"] == pytest.approx(4.0)
    assert ratios["macs_ratio"] == pytest.approx(5.0)
    assert ratios["speedup_b1"] == pytest.approx(4.0)
    assert ratios["throughput_ratio"] == pytest.approx(3.0)
    assert ratios["accuracy_change"] == pytest.approx(-5.0)


def test_compare_without_latency_gives_none() -> None:
    teacher = ModelMetrics("t", 0.5, None, params=10, bytes=40, macs=10)
    student = ModelMetrics("s", 0.6, 0.7, params=5, bytes=20, macs=5)
    ratios = compare(teacher, student)
    assert ratios["speedup_b1"] is None
    assert ratios["throughput_ratio"] is None
    assert ratios["accuracy_change"] == pytest.approx(10.0)


def test_compression_of_an_int8_copy_is_its_bytes_ratio() -> None:
    # distil quantize: the same net in int8 has as many parameters but a 3.4x smaller file.
    fp32 = ModelMetrics("fp32", 0.9, None, params=50_000, bytes=206_850, macs=10)
    int8 = ModelMetrics("int8", 0.9, 0.99, params=50_000, bytes=60_260, macs=10)
    ratios = compare(fp32, int8)
    assert ratios["compression"] == pytest.approx(206_850 / 60_260)
    assert ratios["params_ratio"] == pytest.approx(1.0)
    from distil.report.tables import metric_rows

    cell = metric_rows([fp32, int8], fp32)[1][8]
    assert cell == "3.4x (params 1.0x)"


# --------------------------------------------------------------------------------------------
# tasks and shapes


def test_sequence_accuracy_and_agreement_count_valid_positions_only() -> None:
    from distil.data.batch import IGNORE_INDEX

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 6, 5, generator=g), torch.randn(4, 6, 5, generator=g)
    y = torch.randint(0, 5, (4, 6), generator=g)
    y[1, 4:] = IGNORE_INDEX
    mask = torch.rand(4, 6, generator=g) > 0.3
    ps, pt = student.argmax(-1), teacher.argmax(-1)
    hits = [
        int(ps[i, j] == y[i, j]) for i in range(4) for j in range(6) if mask[i, j] and y[i, j] != IGNORE_INDEX
    ]
    same = [int(ps[i, j] == pt[i, j]) for i in range(4) for j in range(6) if mask[i, j]]
    assert accuracy(student, y, mask) == pytest.approx(sum(hits) / len(hits))
    assert agreement(student, teacher, mask) == pytest.approx(sum(same) / len(same))
    # (N, K) with a mask of samples equals the metric on the kept samples.
    logits, labels = torch.randn(10, 3, generator=g), torch.randint(0, 3, (10,), generator=g)
    keep = torch.arange(10) % 3 != 0
    assert accuracy(logits, labels, keep) == pytest.approx(accuracy(logits[keep], labels[keep]))
    with pytest.raises(DataError, match="no valid positions"):
        accuracy(logits, labels, torch.zeros(10, dtype=torch.bool))


def test_tasks_are_a_registry_and_measure_model_uses_the_chosen_one(monkeypatch) -> None:
    from distil.errors import ConfigError
    from distil.measure import TASKS, MetricInputs, Task, register_task, task_details, task_metrics

    logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 0, 0])
    inputs = MetricInputs(logits, y, teacher_logits=logits, num_classes=2)
    assert task_metrics("classification", inputs) == {"accuracy": pytest.approx(2 / 3), "agreement": 1.0}
    assert task_details("classification", inputs)["per_class_accuracy"][0] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="Did you mean 'classification'"):
        task_metrics("clasification", inputs)
    with pytest.raises(ValueError, match="needs an 'accuracy' metric"):
        register_task(Task("bad", metrics={}))

    # A later task (e.g. language modelling's perplexity) plugs in without touching measure_model.
    monkeypatch.setitem(
        TASKS._items,
        "toy",
        Task("toy", {"accuracy": lambda m: accuracy(m.logits, m.labels), "mean_logit": lambda m: 0.5}),
    )
    model = nn.Linear(2, 2)
    metrics = measure_model(
        "m",
        model,
        torch.randn(4, 2),
        torch.zeros(4, dtype=torch.long),
        input_shape=(2,),
        latency=False,
        task="toy",
    )
    assert metrics.task == "toy" and metrics.extra == {"mean_logit": 0.5} and metrics.agreement is None
    assert metrics.to_dict()["extra"] == {"mean_logit": 0.5}


def _lm_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, t, v = 3, 5, 7
    logits = torch.randn(n, t, v, generator=g)
    teacher = torch.randn(n, t, v, generator=g)
    labels = torch.randint(0, v, (n, t), generator=g)
    labels[0, :2] = IGNORE_INDEX  # prompt tokens
    labels[2, 4] = IGNORE_INDEX
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[1, 3] = False
    return logits, teacher, labels, mask


def test_perplexity_and_next_token_agreement_match_explicit_loops() -> None:
    from distil.measure import next_token_agreement, perplexity

    logits, teacher, labels, mask = _lm_case()
    for m in (None, mask):
        nll, hits, count = 0.0, 0, 0
        for i in range(labels.shape[0]):
            for j in range(labels.shape[1]):
                if labels[i, j] == IGNORE_INDEX or (m is not None and not m[i, j]):
                    continue
                row = [float(x) for x in logits[i, j]]
                log_z = math.log(sum(math.exp(x) for x in row))
                nll += log_z - row[int(labels[i, j])]
                hits += int(max(range(len(row)), key=row.__getitem__) == int(teacher[i, j].argmax()))
                count += 1
        assert perplexity(logits, labels, m) == pytest.approx(math.exp(nll / count), rel=1e-6)
        assert next_token_agreement(logits, teacher, labels, m) == pytest.approx(hits / count)
    # A model that puts all mass on the right token has perplexity 1.
    sure = torch.full((1, 3, 4), -1e4).scatter(2, torch.tensor([[[1], [2], [3]]]), 0.0)
    assert perplexity(sure, torch.tensor([[1, 2, 3]])) == pytest.approx(1.0)
    # Uniform predictions over V tokens: perplexity V.
    assert perplexity(torch.zeros(2, 3, 9), torch.zeros(2, 3, dtype=torch.long)) == pytest.approx(9.0)


def test_language_modeling_task_is_registered() -> None:
    from distil.measure import MetricInputs, next_token_agreement, perplexity, task_metrics

    logits, teacher, labels, mask = _lm_case(1)
    out = task_metrics("language-modeling", MetricInputs(logits, labels, teacher_logits=teacher, mask=mask))
    assert set(out) == {"accuracy", "agreement", "perplexity"}
    assert out["accuracy"] == pytest.approx(accuracy(logits, labels, mask))
    assert out["perplexity"] == pytest.approx(perplexity(logits, labels, mask))
    assert out["agreement"] == pytest.approx(next_token_agreement(logits, teacher, labels, mask))
    assert task_metrics("language-modeling", MetricInputs(logits, labels))["agreement"] is None


def test_language_modeling_metrics_refuse_bad_shapes_and_empty_positions() -> None:
    from distil.measure import next_token_agreement, perplexity

    logits, teacher, labels, _ = _lm_case()
    with pytest.raises(DataError, match=r"expected \(N, T, V\) logits and \(N, T\) labels"):
        perplexity(logits[:, :, 0], labels)
    with pytest.raises(DataError, match=r"teacher logits \(3, 5, 6\) differ.*same tokenizer"):
        next_token_agreement(logits, teacher[..., :6], labels)
    with pytest.raises(DataError, match="no valid positions"):
        perplexity(logits, torch.full_like(labels, IGNORE_INDEX))
    with pytest.raises(DataError, match="no valid positions"):
        next_token_agreement(logits, teacher, labels, torch.zeros(3, dtype=torch.bool))
