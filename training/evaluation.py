"""Test-window metrics, the same keys for every run of a model and its baselines, so runs sort
and compare side by side in the MLflow UI."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

# The key each model is ranked and promoted by, and whether larger is better.
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {
    "churn": ("test_auc", True),
    "repurchase": ("test_auc", True),
    "clv": ("test_normalized_gini", True),
    "segments": ("test_silhouette", True),
}


def _top_decile(scores: np.ndarray) -> np.ndarray:
    """The 10% highest scores (ties broken by position, so the decile has exactly n/10 rows)."""
    order = np.argsort(-scores, kind="stable")
    top = np.zeros(len(scores), dtype=bool)
    top[order[: max(1, len(scores) // 10)]] = True
    return top


def classifier_metrics(actual: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """AUC, PR-AUC, log loss, Brier, and the top decile's lift and share of positives captured."""
    y = np.asarray(actual, dtype=float)
    p = np.clip(np.asarray(probability, dtype=float), 1e-6, 1 - 1e-6)
    top = _top_decile(p)
    base_rate = y.mean()
    return {
        "test_auc": float(roc_auc_score(y, p)),
        "test_pr_auc": float(average_precision_score(y, p)),
        "test_log_loss": float(log_loss(y, p, labels=[0.0, 1.0])),
        "test_brier": float(brier_score_loss(y, p)),
        "test_top_decile_lift": float(y[top].mean() / base_rate) if base_rate > 0 else float("nan"),
        "test_top_decile_capture": float(y[top].sum() / y.sum()) if y.sum() > 0 else float("nan"),
        "test_calibration_error": expected_calibration_error(y, p),
        "test_mean_predicted": float(p.mean()),
        "test_positive_rate": float(base_rate),
        "test_rows": float(len(y)),
    }


def equal_count_bins(score: np.ndarray, bins: int = 10) -> list[np.ndarray]:
    """The row positions of `bins` equal-count bins of the score, lowest scores first (ties broken by
    position); empty bins, when there are fewer rows than bins, are left out. The calibration error
    and the calibration figure (training.plots) bin alike, so the figure shows what the metric averages."""
    return [part for part in np.array_split(np.argsort(score, kind="stable"), bins) if len(part)]


def expected_calibration_error(actual: np.ndarray, probability: np.ndarray, bins: int = 10) -> float:
    """Mean |observed share - mean prediction| over equal-count bins of the prediction, weighted by size."""
    error = 0.0
    for part in equal_count_bins(probability, bins):
        error += len(part) * abs(actual[part].mean() - probability[part].mean())
    return float(error / len(actual))


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of the revenue ranking by prediction over the Gini of the perfect ranking (1 is perfect)."""

    def gini(by: np.ndarray) -> float:
        order = np.argsort(-by, kind="stable")
        cumulative = np.cumsum(actual[order]) / actual.sum()
        return float(cumulative.mean() - (len(actual) + 1) / (2 * len(actual)))

    actual = np.asarray(actual, dtype=float)
    if actual.sum() <= 0:
        return float("nan")
    return gini(np.asarray(predicted, dtype=float)) / gini(actual)


def value_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Spearman, normalized Gini, top-decile revenue capture, totals and per-decile error."""
    y = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    top = _top_decile(p)
    metrics = {
        "test_mae": float(np.mean(np.abs(y - p))),
        "test_rmse": float(np.sqrt(np.mean((y - p) ** 2))),
        "test_spearman": float(spearmanr(y, p).statistic),
        "test_normalized_gini": normalized_gini(y, p),
        "test_top_decile_revenue_capture": float(y[top].sum() / y.sum()) if y.sum() > 0 else float("nan"),
        "test_total_actual": float(y.sum()),
        "test_total_predicted": float(p.sum()),
        "test_total_ratio": float(p.sum() / y.sum()) if y.sum() > 0 else float("nan"),
        "test_rows": float(len(y)),
    }
    for decile, error in enumerate(decile_errors(y, p), start=1):
        metrics[f"test_decile_{decile:02d}_mean_error"] = error
    return metrics


def decile_errors(actual: np.ndarray, predicted: np.ndarray) -> list[float]:
    """Mean (predicted - actual) within each decile of prediction, highest decile first."""
    frame = pd.DataFrame({"actual": actual, "predicted": predicted})
    frame["decile"] = pd.qcut(frame["predicted"].rank(method="first", ascending=False), 10, labels=False)
    grouped = frame.groupby("decile")
    return [float(v) for v in (grouped["predicted"].mean() - grouped["actual"].mean()).to_numpy()]
