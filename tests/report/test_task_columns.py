"""Issue 26.5: the report and `distil eval` name the quality column by the task's main metric."""

from __future__ import annotations

from distil.measure import ModelMetrics
from distil.report.markdown import data_line
from distil.report.tables import COLUMNS, columns_for, metric_rows, metrics_markdown


def _row(name: str, task: str, accuracy: float, extra: dict[str, float | None]) -> ModelMetrics:
    return ModelMetrics(
        name=name, accuracy=accuracy, agreement=None, params=10, bytes=40, macs=10, task=task, extra=extra
    )


def test_classification_keeps_its_columns() -> None:
    assert columns_for([_row("t", "classification", 0.9, {})]) == COLUMNS


def test_multilabel_shows_map_and_f1() -> None:
    rows = [_row("t", "multilabel", 0.8, {"mAP": 0.8, "micro_f1": 0.7, "macro_f1": 0.6})]
    columns = columns_for(rows)
    assert columns[:5] == ("model", "mAP", "agreement", "micro_f1", "macro_f1") and columns[-1] == "Δ mAP"
    assert metric_rows(rows, rows[0])[0][1:5] == ["80.00%", "—", "70.00%", "60.00%"]


def test_regression_shows_r2_and_errors_as_numbers() -> None:
    rows = [_row("t", "regression", 0.87654, {"r2": 0.87654, "mae": 0.123456, "rmse": 0.2})]
    text = metrics_markdown(rows, rows[0])
    assert "| model | r2 | agreement | mae | rmse |" in text and "| t | 0.8765 | — | 0.1235 | 0.2 |" in text


def test_data_line_names_labels_and_targets() -> None:
    assert "6 labels (multilabel)" in data_line({"name": "npz", "num_classes": 6, "task": "multilabel"})
    assert "2 target columns" in data_line({"name": "npz", "num_classes": 2, "task": "regression"})
    assert "10 classes" in data_line({"name": "digits", "num_classes": 10})


def test_the_change_of_a_regression_metric_is_a_difference_not_points() -> None:
    teacher = _row("t", "regression", 0.9, {"r2": 0.9, "mae": 0.1, "rmse": 0.2})
    student = _row("s", "regression", 0.56, {"r2": 0.56, "mae": 0.3, "rmse": 0.4})
    assert metric_rows([teacher, student], teacher)[1][-1] == "-0.3400"  # R^2 0.90 -> 0.56, not "-34.00 pt"
    shares = [_row("t", "multilabel", 0.8, {"mAP": 0.8}), _row("s", "multilabel", 0.7, {"mAP": 0.7})]
    assert metric_rows(shares, shares[0])[1][-1] == "-10.00 pt"  # a share keeps its points
