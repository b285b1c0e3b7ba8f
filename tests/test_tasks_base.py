"""kaviz.data.base: the metrics a TaskSpec names, checked by hand on toy predictions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from kaviz.data.base import TaskSpec, compute_metrics

BINARY = TaskSpec("t", False, 2, False, ("accuracy", "f1", "matthews"), "accuracy")
REGRESSION = TaskSpec("r", True, 1, True, ("pearson", "spearman"), "pearson")


def test_classification_metrics_by_hand():
    y = np.array([1, 0, 1, 1, 0, 0])
    pred = np.array([1, 0, 0, 1, 1, 0])  # tp 2, fp 1, fn 1, tn 2
    logits = np.stack([1 - pred, pred], axis=1).astype(np.float32)
    out = compute_metrics(BINARY, logits, y)
    assert out == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3, "matthews": (2 * 2 - 1 * 1) / 9})
    assert all(type(v) is float for v in out.values())
    assert compute_metrics(BINARY, pred, y) == out  # class ids are accepted too
    three = TaskSpec("m", True, 3, False, ("accuracy",), "accuracy")
    assert compute_metrics(three, np.eye(3)[[0, 2, 1, 1]], np.array([0, 2, 2, 1])) == {"accuracy": 0.75}


def test_regression_metrics_by_hand():
    pred, y = np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([2.0, 4.0, 5.0, 4.0])
    out = compute_metrics(REGRESSION, pred, y)
    # pearson: sum dxdy 3.5, sum dx^2 5, sum dy^2 4.75; spearman: ranks of y are 1, 2.5, 4, 2.5
    assert out == pytest.approx({"pearson": 3.5 / math.sqrt(5 * 4.75), "spearman": 3 / math.sqrt(5 * 4.5)})
    assert compute_metrics(REGRESSION, pred[:, 0], y) == out


def test_constant_predictions_give_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_metrics(BINARY, np.zeros(4, dtype=int), np.array([0, 1, 0, 1]))["matthews"] == 0.0
        assert compute_metrics(BINARY, np.ones(4, dtype=int), np.array([0, 1, 0, 1]))["f1"] == pytest.approx(2 / 3)
        assert compute_metrics(BINARY, np.zeros(4, dtype=int), np.array([0, 1, 0, 1]))["f1"] == 0.0
        assert compute_metrics(REGRESSION, np.full(4, 2.0), np.arange(4.0)) == {"pearson": 0.0, "spearman": 0.0}
    assert math.isnan(compute_metrics(REGRESSION, np.array([1.0, np.nan]), np.arange(2.0))["pearson"])


def test_metric_shape_errors():
    with pytest.raises(ValueError, match=r"logits have 3 columns but task 't' has 2 labels"):
        compute_metrics(BINARY, np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"predictions \(3,\) and labels \(4,\) do not match"):
        compute_metrics(BINARY, np.zeros(3, dtype=int), np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, 1\), got \(4, 2\)"):
        compute_metrics(REGRESSION, np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics(BINARY, np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['bleu'\]"):
        compute_metrics(TaskSpec("x", False, 2, False, ("bleu",), "bleu"), np.zeros(2, dtype=int), np.zeros(2))
